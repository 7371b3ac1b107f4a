"""Upload over HTTP -> real Celery worker -> embedded store -> search over HTTP."""

from __future__ import annotations

import requests

from imagesearch.dev.procs import wait_until
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


def test_upload_index_caption_search_delete(redis_client, data_dir):
    api, base = start_api(data_dir)
    worker = start_worker(data_dir, "worker")
    try:
        colours = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (240, 240, 20)]
        ids = [_upload(base, jpeg(c, shape="circle"), collection="fruit" if i % 2 else "default")
               for i, c in enumerate(colours)]
        whole = jpeg(size=(640, 480), shape="square")
        broken = _upload(base, whole[: len(whole) // 2])  # a valid header, a truncated body: accepted, then failed

        def all_settled():
            states = [_status(base, i) for i in ids]
            return all(s["status"] == "indexed" and s["caption_status"] == "done" for s in states) and states

        states = wait_until(all_settled, 90, what="indexed and captioned")
        assert all(s["image_model"] and s["caption_model"] and s["caption"] is not None for s in states)
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
