"""The real Flask app (in process) with the real store, blob folder and Redis broker.

Bad input must give a JSON 4xx and leave nothing half-written."""

from __future__ import annotations

import base64
import io

import pytest

from imagesearch.config import IngestSettings, Settings
from tests.support.images import jpeg


@pytest.fixture
def app(make_app, redis_client):
    return make_app(queue="celery", ingest=IngestSettings(max_upload_bytes=200_000))


@pytest.fixture
def settings(app) -> Settings:
    return app.extensions["imagesearch"].settings


@pytest.fixture
def client(app):
    return app.test_client()


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()["error"]
    assert body["code"] and body["message"]
    return body


def _upload(client, data: bytes, **fields):
    return client.post("/v1/images", data={"file": (io.BytesIO(data), "a.jpg"), **fields},
                       content_type="multipart/form-data")


def test_upload_is_stored_recorded_and_enqueued(client, settings, redis_client):
    queue = settings.keys.queue("embed")
    before = redis_client.llen(queue)
    response = _upload(client, jpeg(), collection="shop", tags="a,b", external_id="sku-1")
    assert response.status_code == 202
    image_id = response.get_json()["id"]
    assert redis_client.llen(queue) == before + 1  # a real message on the embed queue
    record = client.get(f"/v1/images/{image_id}").get_json()
    assert record["status"] == "queued" and record["collection"] == "shop" and record["tags"] == ["a", "b"]
    assert record["thumbnail_url"] is None
    # The same external id in the same collection converges to the same record.
    assert _upload(client, jpeg((0, 0, 255)), collection="shop", external_id="sku-1").get_json()["id"] == image_id


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty_file"),
    (b"this is not an image at all", 415, "invalid_image"),
    (b"%PDF-1.4 not an image", 415, "invalid_image"),
])
def test_bad_uploads_are_refused_and_nothing_is_recorded(client, settings, data, status, code):
    assert _error(_upload(client, data), status)["code"] == code
    assert not (settings.blob_dir / "originals").exists() or not any((settings.blob_dir / "originals").rglob("*"))


def test_oversize_upload_is_413(client):
    big = jpeg(size=(64, 64)) + b"\0" * 300_000
    assert _error(_upload(client, big), 413)


def test_upload_without_file_and_bad_fields(client):
    assert _error(client.post("/v1/images", data={}, content_type="multipart/form-data"), 400)["code"] == "missing_file"
    assert _error(_upload(client, jpeg(), collection="../etc"), 422)


@pytest.mark.parametrize("body, status", [
    ({"text": "cat", "mode": "nearest"}, 422),
    ({"text": "cat", "k": 0}, 422),
    ({"text": "cat", "k": 101}, 422),
    ({}, 422),
    ({"text": "   "}, 422),
    ({"text": "cat", "image_id": "x"}, 422),
    ({"text": "cat", "min_score": 3}, 422),
    ({"text": "cat", "unknown": 1}, 422),
    ({"image": "not base64!"}, 422),
    ({"image_id": "does-not-exist"}, 404),
])
def test_bad_search_requests(client, body, status):
    _error(client.post("/v1/search", json=body), status)


def test_malformed_json_and_wrong_content_type(client):
    _error(client.post("/v1/search", data="{not json", content_type="application/json"), 400)
    _error(client.post("/v1/search", data="text=cat", content_type="text/plain"), 400)


def test_search_with_an_image_that_is_not_an_image(client):
    body = {"image": base64.b64encode(b"nope").decode()}
    _error(client.post("/v1/search", json=body), 415)


def test_unknown_ids_and_routes(client):
    _error(client.get("/v1/images/nope"), 404)
    _error(client.delete("/v1/images/nope"), 404)
    _error(client.get("/v1/images/nope/thumbnail"), 404)
    _error(client.get("/v2/elsewhere"), 404)
    _error(client.put("/v1/search", json={}), 405)


def test_queued_image_cannot_be_a_query_yet(client):
    image_id = _upload(client, jpeg()).get_json()["id"]
    assert _error(client.post("/v1/search", json={"image_id": image_id}), 409)["code"] == "bad_query"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.get_json()["checks"]) == {"store", "broker", "models"}
