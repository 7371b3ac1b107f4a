"""Two worker processes and two API processes share one embedded store at the same time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from imagesearch.dev.procs import wait_until
from tests.support.images import jpeg
from tests.support.processes import start_api, start_worker


def test_two_workers_two_apis_one_store(redis_client, data_dir):
    api_a, base_a = start_api(data_dir, "api-a")
    api_b, base_b = start_api(data_dir, "api-b")
    workers = [start_worker(data_dir, "worker-1"), start_worker(data_dir, "worker-2")]
    try:
        def upload(i: int) -> str:
            base = (base_a, base_b)[i % 2]
            r = requests.post(base + "/v1/images", files={"file": (f"{i}.jpg", jpeg((i * 9 % 256, 80, 200 - i)))},
                              data={"external_id": f"item-{i}"}, timeout=60)
            assert r.status_code == 202, r.text
            return r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(upload, range(40)))
        assert len(set(ids)) == 40

        def indexed_count(base: str) -> int:
            hits = requests.post(base + "/v1/search", json={"text": "anything", "k": 100}, timeout=60).json()["hits"]
            return len(hits)

        # Both API processes see every image, whichever process wrote it.
        wait_until(lambda: indexed_count(base_a) == 40 and indexed_count(base_b) == 40, 180, 1.0, "all indexed")
        for image_id in ids:
            record = requests.get(f"{base_b}/v1/images/{image_id}", timeout=30).json()
            assert record["status"] == "indexed", record
        # Each worker took part (batches were shared between them), and none failed.
        logs = [w.output() for w in workers]
        assert all("embed batch:" in log for log in logs), [log[-1500:] for log in logs]
        assert all("Traceback" not in log for log in logs)

        # A delete through one API disappears from the other's results.
        assert requests.delete(f"{base_a}/v1/images/{ids[0]}", timeout=30).status_code == 204
        hits = requests.post(base_b + "/v1/search", json={"text": "anything", "k": 100}, timeout=60).json()["hits"]
        assert ids[0] not in {h["id"] for h in hits} and len(hits) == 39
    finally:
        for proc in (*workers, api_a, api_b):
            proc.close()
