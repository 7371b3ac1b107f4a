"""Upload over HTTP -> real Celery worker -> embedded store -> search over HTTP."""

from __future__ import annotations

import io
import time

import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from imagesearch.dev.procs import wait_until
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg
from tests.support.processes import start_api, start_worker


def _upload(base: str, data: bytes, **fields) -> str:
    response = requests.post(base + "/v1/images", files={"file": ("x.jpg", data, "image/jpeg")}, data=fields,
                             timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def _status(base: str, image_id: str) -> dict:
    return requests.get(f"{base}/v1/images/{image_id}", timeout=30).json()


def _photo_with_exif_date() -> bytes:
    """A camera-style JPEG taken 2021-07-04 21:30 at UTC+9, i.e. 12:30 UTC."""
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0x9003: "2021:07:04 21:30:00", 0x9011: "+09:00"})  # DateTimeOriginal, its offset
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(out, format="JPEG", exif=exif)
    return out.getvalue()


def _since_upload_counts(base: str) -> dict[str, float]:
    """The worker's upload->indexed/captioned histogram counts, as the API's /metrics merges them."""
    text = requests.get(base + "/metrics", timeout=30).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith(("imagesearch_upload_to_indexed_seconds_", "imagesearch_upload_to_captioned_seconds_"))
            and not s.name.endswith("_bucket")}


def test_upload_index_caption_search_delete(redis_client, data_dir):
    api, base = start_api(data_dir)
    worker = start_worker(data_dir, "worker")
    try:
        metrics_before = _since_upload_counts(base)
        started = time.time()
        colours = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (240, 240, 20)]
        ids = [_upload(base, jpeg(c, shape="circle"), collection="fruit" if i % 2 else "default")
               for i, c in enumerate(colours)]
        dated = _upload(base, _photo_with_exif_date(), collection="photos")
        whole = jpeg(size=(640, 480), shape="square")
        broken = _upload(base, whole[: len(whole) // 2])  # a valid header, a truncated body: accepted, then failed

        def all_settled():
            states = [_status(base, i) for i in ids]
            return all(s["status"] == "indexed" and s["caption_status"] == "done" for s in states) and states

        states = wait_until(all_settled, 90, what="indexed and captioned")
        assert all(s["image_model"] and s["caption_model"] and s["caption"] is not None for s in states)
        wait_until(lambda: _status(base, dated)["caption_status"] == "done", 60, what="the dated photo captioned")
        settled = time.time()
        # The embed stage read EXIF DateTimeOriginal with its offset; an image without EXIF has none.
        store = EmbeddedStore(data_dir / "store.sqlite3")
        assert store.get(dated).taken_at == 1625401800.0  # 2021-07-04T12:30:00Z
        assert store.get(ids[0]).taken_at is None
        # Each of the 5 good uploads was timed once per stage (the broken one never), within the wall time.
        metrics = _since_upload_counts(base)
        for name in ("imagesearch_upload_to_indexed_seconds", "imagesearch_upload_to_captioned_seconds"):
            count, total = (metrics[f"{name}_{k}"] - metrics_before.get(f"{name}_{k}", 0) for k in ("count", "sum"))
            assert count == 5 and 0 < total <= 5 * (settled - started), name
        assert requests.delete(f"{base}/v1/images/{dated}", timeout=30).status_code == 204  # out of the searches
        failed = wait_until(lambda: (s := _status(base, broken))["status"] == "failed" and s, 60, what="failed")
        assert "embed:" in failed["error"]

        thumb = requests.get(base + states[0]["thumbnail_url"], timeout=30)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"

        for mode in ("image", "caption", "hybrid"):
            hits = requests.post(base + "/v1/search", json={"text": "a red circle", "mode": mode, "k": 10},
                                 timeout=30).json()["hits"]
            assert {h["id"] for h in hits} == set(ids), mode  # the failed image is never a hit
        only = requests.post(base + "/v1/search", json={"text": "x", "collection": "fruit", "k": 10}, timeout=30)
        assert {h["id"] for h in only.json()["hits"]} == {ids[1], ids[3]}

        # An image query by stored id finds the others, not itself; an uploaded image finds its twin first.
        similar = requests.post(base + "/v1/search", json={"image_id": ids[0], "k": 10}, timeout=30).json()
        assert ids[0] not in {h["id"] for h in similar["hits"]} and len(similar["hits"]) == 3
        by_image = requests.post(base + "/v1/search", files={"file": ("q.jpg", jpeg(colours[2], shape="circle"))},
                                 data={"k": "1"}, timeout=30).json()
        assert by_image["hits"][0]["id"] == ids[2]

        assert requests.delete(f"{base}/v1/images/{ids[0]}", timeout=30).status_code == 204
        assert requests.get(f"{base}/v1/images/{ids[0]}", timeout=30).status_code == 404
        hits = requests.post(base + "/v1/search", json={"text": "circle", "k": 10}, timeout=30).json()["hits"]
        assert ids[0] not in {h["id"] for h in hits} and len(hits) == 3
    finally:
        worker.close()
        api.close()
