"""Uploads with titles and typed attributes, PATCH, listing with filters and cursors, DELETE by
external_id and batch uploads: the real app, the real embedded store and blob folder, real Redis
where keys and the broker are involved."""

from __future__ import annotations

import io
import json
import uuid
from urllib.parse import quote

import numpy as np
import pytest

from imagesearch.apikeys import KeyRing
from imagesearch.config import ApiSettings, IngestSettings, RedisSettings
from imagesearch.records import upload_id
from imagesearch.redis_state import Keyspace, connect
from imagesearch.taskqueue import MemoryTaskQueue, QueueUnavailable
from imagesearch.vocab import Stage
from schemas.api import ErrorOut, ImageListOut, ImageOut
from tests.support.factories import record as make_record
from tests.support.factories import vector_update
from tests.support.images import jpeg

ATTRIBUTES = "brand:keyword,price:number,in_stock:boolean,released:date"


@pytest.fixture
def app(make_app):
    return make_app(ingest=IngestSettings(attributes=ATTRIBUTES, max_upload_bytes=200_000))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def svc(app):
    return app.extensions["imagesearch"]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    ErrorOut.model_validate(response.get_json())
    return response.get_json()["error"]


def _upload(client, data: bytes | None = None, **fields):
    return client.post("/v1/images", data={"file": (io.BytesIO(data or jpeg()), "a.jpg"), **fields},
                       content_type="multipart/form-data")


def _accepted(response) -> str:
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


# -- uploads with metadata ----------------------------------------------------------------------------

def test_upload_keeps_title_description_and_typed_attributes(client, svc):
    attributes = {"brand": "Aurora", "price": "199.5", "in_stock": True, "released": "2024-03-05T00:00:00+08:00"}
    image_id = _accepted(_upload(client, title="  女士红色连衣裙 Summer dress ", description="A light dress",
                                 attributes=json.dumps(attributes), tags="dress, red,dress"))
    body = client.get(f"/v1/images/{image_id}").get_json()
    ImageOut.model_validate(body)
    assert body["title"] == "女士红色连衣裙 Summer dress" and body["description"] == "A light dress"
    assert body["tags"] == ["dress", "red"]  # stripped, duplicates dropped
    # Typed: the number arrives as text and leaves as a number; the date as epoch seconds (offset honoured).
    assert body["attributes"] == {"brand": "Aurora", "price": 199.5, "in_stock": True, "released": 1709568000.0}
    assert body["taken_at"] is None
    assert svc.store.get(image_id).attributes["price"] == 199.5


@pytest.mark.parametrize("attributes, named", [
    ({"colour": "red"}, "colour"),  # not declared
    ({"price": "cheap"}, "price"),  # not a number
    ({"in_stock": "yes"}, "in_stock"),  # not a boolean
    ({"released": "last spring"}, "released"),  # not a date
    ({"brand": 3}, "brand"),  # a keyword is a string
])
def test_an_undeclared_attribute_or_a_wrong_type_is_a_422_naming_it(client, svc, attributes, named):
    error = _error(_upload(client, attributes=json.dumps(attributes)), 422)
    assert error["code"] == "invalid_request" and repr(named) in error["message"]
    assert svc.store.counts().get("queued", 0) == 0 and svc.queue.sent[Stage.EMBED] == []


def test_attributes_that_are_not_a_json_object_and_overlong_titles_are_422(client):
    assert "JSON" in _error(_upload(client, attributes="{brand: x}"), 422)["message"]
    assert _error(_upload(client, attributes="[1, 2]"), 422)
    assert "title" in _error(_upload(client, title="x" * 513), 422)["message"]


def test_without_declared_attributes_any_attribute_is_refused(make_app):
    client = make_app().test_client()
    error = _error(_upload(client, attributes='{"brand": "x"}'), 422)
    assert "'brand' is not declared" in error["message"] and "IMAGESEARCH_ATTRIBUTES" in error["message"]
    assert _upload(client, title="no attributes needed").status_code == 202


# -- PATCH ----------------------------------------------------------------------------------------------

def _indexed(svc, image_id: str) -> np.ndarray:
    """Mark the record indexed with a vector, as the embed stage would."""
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    record = svc.store.get(image_id)
    assert svc.store.set_image_vectors([vector_update(image_id, vector, content_hash=record.content_hash,
                                                      taken_at=1_600_000_000.0)])
    return vector


def test_patch_merges_attributes_clears_texts_and_never_re_embeds(client, svc):
    image_id = _accepted(_upload(client, collection="shop", external_id="sku-1", title="Old", description="Desc",
                                 tags="a,b", attributes=json.dumps({"brand": "Aurora", "price": 10})))
    vector = _indexed(svc, image_id)
    sent_before = list(svc.queue.sent[Stage.EMBED])
    before = svc.store.get(image_id)
    response = client.patch(f"/v1/images/{image_id}", json={
        "attributes": {"price": 12.5, "in_stock": False, "brand": None}, "title": None, "tags": ["c"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["attributes"] == {"price": 12.5, "in_stock": False}  # merged; null removed brand
    assert body["title"] is None and body["description"] == "Desc" and body["tags"] == ["c"]
    assert body["status"] == "indexed" and body["taken_at"] == 1_600_000_000.0
    after = svc.store.get(image_id)
    assert after.content_hash == before.content_hash and after.image_model == before.image_model
    stored, _model = svc.store.vector(image_id, "image")
    assert np.allclose(stored, vector)
    assert svc.queue.sent[Stage.EMBED] == sent_before  # nothing sent to the workers
    assert client.get(f"/v1/images/{image_id}").get_json() == body
    # An empty patch changes nothing; a blank description clears it.
    assert client.patch(f"/v1/images/{image_id}", json={}).get_json()["attributes"] == body["attributes"]
    assert client.patch(f"/v1/images/{image_id}", json={"description": "  "}).get_json()["description"] is None


def test_patch_moves_a_record_to_another_collection_under_the_same_id(client, svc):
    image_id = _accepted(_upload(client, collection="drafts", external_id="sku-9"))
    moved = client.patch(f"/v1/images/{image_id}", json={"collection": "live"}).get_json()
    assert moved["id"] == image_id and moved["collection"] == "live" and moved["external_id"] == "sku-9"
    assert [r["id"] for r in client.get("/v1/images?collection=live").get_json()["records"]] == [image_id]
    assert client.get("/v1/images?collection=drafts").get_json()["records"] == []
    # An upload with that external_id into the new collection is another record...
    other = _accepted(_upload(client, collection="live", external_id="sku-9"))
    assert other != image_id
    # ...and one into the first collection replaces the moved record (same id), as documented.
    assert _accepted(_upload(client, collection="drafts", external_id="sku-9")) == image_id


@pytest.mark.parametrize("body, status, where", [
    ({"attributes": {"colour": "red"}}, 422, "'colour'"),
    ({"attributes": {"price": "a lot"}}, 422, "'price'"),
    ({"collection": "../etc"}, 422, "collection"),
    ({"collection": None}, 422, "collection"),
    ({"tags": None}, 422, "tags"),
    ({"tags": ["x" * 129]}, 422, "tags"),
    ({"caption": "mine"}, 422, "caption"),  # not editable
    ({"title": "x" * 513}, 422, "title"),
])
def test_patch_refuses_bad_values_and_changes_nothing(client, svc, body, status, where):
    image_id = _accepted(_upload(client, title="Kept", attributes='{"price": 1}'))
    before = svc.store.get(image_id)
    assert where in _error(client.patch(f"/v1/images/{image_id}", json=body), status)["message"]
    after = svc.store.get(image_id)
    assert (after.title, after.attributes, after.collection, after.tags) == (before.title, before.attributes,
                                                                           before.collection, before.tags)


def test_patch_of_unknown_or_deleted_images_and_non_json_bodies(client):
    assert _error(client.patch("/v1/images/nope", json={"title": "x"}), 404)["code"] == "not_found"
    image_id = _accepted(_upload(client))
    assert _error(client.patch(f"/v1/images/{image_id}", data="title=x"), 400)["code"] == "malformed_json"
    assert client.delete(f"/v1/images/{image_id}").status_code == 204
    assert _error(client.patch(f"/v1/images/{image_id}", json={"title": "x"}), 404)


# -- tenants ---------------------------------------------------------------------------------------------

@pytest.fixture
def keyed(make_app, redis_client):
    namespace = f"meta-{uuid.uuid4().hex[:8]}-"
    app = make_app(api=ApiSettings(auth="keys", rate_limit_per_minute=10_000), redis=RedisSettings(namespace=namespace),
                   ingest=IngestSettings(attributes=ATTRIBUTES))
    settings = app.extensions["imagesearch"].settings
    ring = KeyRing(connect(settings.redis.url), settings.keys)
    keys = {"alice": ring.create("alice-app", "alice"), "bob": ring.create("bob-app", "bob")}
    yield app.test_client(), {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    found = [key for pattern in Keyspace(namespace).patterns for key in redis_client.scan_iter(match=pattern)]
    if found:
        redis_client.delete(*found)


def test_no_tenant_lists_patches_or_deletes_another_tenants_images(keyed):
    client, auth = keyed
    response = client.post("/v1/images", data={"file": (io.BytesIO(jpeg()), "a.jpg"), "external_id": "p1",
                                               "collection": "shop"},
                           content_type="multipart/form-data", headers=auth["alice"])
    image_id = _accepted(response)
    assert image_id == upload_id("alice", "shop", "p1")
    assert client.get("/v1/images", headers=auth["bob"]).get_json()["records"] == []
    assert [r["id"] for r in client.get("/v1/images", headers=auth["alice"]).get_json()["records"]] == [image_id]
    assert _error(client.patch(f"/v1/images/{image_id}", json={"title": "mine"}, headers=auth["bob"]), 404)
    assert _error(client.delete("/v1/images?collection=shop&external_id=p1", headers=auth["bob"]), 404)
    alice_view = client.get(f"/v1/images/{image_id}", headers=auth["alice"]).get_json()
    assert alice_view["title"] is None
    assert client.delete("/v1/images?collection=shop&external_id=p1", headers=auth["alice"]).status_code == 204


# -- DELETE by external_id ----------------------------------------------------------------------------------

def test_delete_by_external_id_removes_the_record_the_upload_made(client, svc):
    image_id = _accepted(_upload(client, collection="shop", external_id="sku-7"))
    kept = _accepted(_upload(client, collection="other", external_id="sku-7"))
    blob = svc.store.get(image_id).blob_key
    assert _error(client.delete("/v1/images?collection=nope&external_id=sku-7"), 404)
    assert client.delete("/v1/images?collection=shop&external_id=sku-7").status_code == 204
    assert client.get(f"/v1/images/{image_id}").status_code == 404 and not (svc.settings.blob_dir / blob).exists()
    assert client.get(f"/v1/images/{kept}").status_code == 200  # same external_id, another collection
    assert _error(client.delete("/v1/images?collection=shop&external_id=sku-7"), 404)
    # Without a collection: the default one, as for uploads.
    default = _accepted(_upload(client, external_id="sku-8"))
    assert client.delete("/v1/images?external_id=sku-8").status_code == 204
    assert svc.store.get(default) is None


@pytest.mark.parametrize("query", ["", "?collection=shop", "?external_id=", "?external_id=a%0Ab",
                                   "?external_id=a%00", f"?external_id={'x' * 1025}", "?external_id=a&colour=red"])
def test_delete_by_external_id_needs_a_valid_external_id(client, query):
    assert _error(client.delete(f"/v1/images{query}"), 422)["code"] == "invalid_request"


# A folder backfill's ids are relative paths, an S3 key runs to 1,024 characters, and an album's file
# names are often Chinese: each must work for upload, batch upload and delete, not only SKU-like ids.
PATH_LIKE_IDS = ["photos/2024/春节 合影.jpg", "../x", "shop:sku 42 (red)", "k" * 1024]


@pytest.mark.parametrize("external_id", PATH_LIKE_IDS)
def test_path_like_external_ids_upload_and_delete(client, svc, external_id):
    image_id = _accepted(_upload(client, collection="shop", external_id=external_id))
    assert svc.store.get(image_id).external_id == external_id
    assert client.get(f"/v1/images/{image_id}").get_json()["external_id"] == external_id
    # The same id again replaces the record rather than adding one.
    assert _accepted(_upload(client, collection="shop", external_id=external_id)) == image_id
    assert client.delete(f"/v1/images?collection=shop&external_id={quote(external_id)}").status_code == 204
    assert svc.store.get(image_id) is None


@pytest.mark.parametrize("external_id", ["", "line\nbreak", "nul\x00", "x" * 1025])
def test_upload_refuses_control_characters_and_overlong_external_ids(client, svc, external_id):
    before = svc.store.counts()
    assert _error(_upload(client, external_id=external_id), 422)["code"] == "invalid_request"
    assert svc.store.counts() == before


# -- listing -----------------------------------------------------------------------------------------------

@pytest.fixture
def catalogue(svc):
    """Twelve records with known created_at, taken_at, tags and attributes, written to the store."""
    ids = []
    for i in range(12):
        image_id = f"rec{i:02d}"
        svc.store.put(make_record(image_id, collection="shop" if i % 3 else "misc", tags=["even" if i % 2 == 0
                                                                                          else "odd", f"n{i}"],
                                  attributes={"brand": "Aurora" if i < 6 else "Zephyr", "price": float(i * 10),
                                              **({"in_stock": True} if i % 4 == 0 else {})},
                                  created_at=1_700_000_000.0 + i * 60, title=f"item {i}"))
        if i % 2 == 0:
            svc.store.set_image_vectors([vector_update(image_id, np.ones(4, dtype=np.float32) / 2,
                                                       taken_at=1_600_000_000.0 + i * 3600)])
        ids.append(image_id)
    return ids


def _list(client, query: str = "") -> dict:
    response = client.get(f"/v1/images{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    ImageListOut.model_validate(response.get_json())
    return response.get_json()


def _ids(client, query: str = "") -> list[str]:
    return [r["id"] for r in _list(client, query)["records"]]


def test_listing_filters_by_collection_status_tags_dates_and_attributes(client, catalogue):
    assert _ids(client) == catalogue  # oldest first
    assert _ids(client, "?collection=misc") == ["rec00", "rec03", "rec06", "rec09"]
    assert _ids(client, "?status=indexed") == catalogue[::2]
    assert _ids(client, "?status=queued&collection=shop") == ["rec01", "rec05", "rec07", "rec11"]
    assert _ids(client, "?tag=n1&tag=n4&tag=nothing") == ["rec01", "rec04"]  # any of them
    assert _ids(client, "?created_after=1700000120&created_before=1700000300") == ["rec02", "rec03", "rec04"]
    assert _ids(client, "?created_after=2023-11-14T22:15:20Z&limit=2") == ["rec02", "rec03"]  # ISO, inclusive
    assert _ids(client, "?taken_after=1600007200&taken_before=1600021600") == ["rec02", "rec04"]
    assert _ids(client, "?taken_before=2100-01-01") == catalogue[::2]  # no taken_at, no match
    where = {"attributes": {"price": {"range": {"gte": 30, "lt": 90}}, "brand": {"eq": "Zephyr"}}}
    assert _ids(client, "?filter=" + quote(json.dumps(where))) == ["rec06", "rec07", "rec08"]
    where = {"attributes": {"in_stock": {"exists": True}}, "tags": {"all": ["even"]}}
    assert _ids(client, "?collection=shop&filter=" + quote(json.dumps(where))) == ["rec04", "rec08"]
    record = _list(client, "?tag=n4")["records"][0]
    assert record["attributes"] == {"brand": "Aurora", "price": 40.0, "in_stock": True}
    assert record["title"] == "item 4" and record["taken_at"] == 1_600_014_400.0


def test_cursor_pages_concatenate_to_the_whole_listing(client, svc, catalogue):
    for limit in (1, 5, 12, 13):
        seen, cursor, pages = [], None, 0
        while True:
            page = _list(client, f"?collection=shop&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
            seen += [r["id"] for r in page["records"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [i for i in catalogue if int(i[3:]) % 3], limit
        assert pages == max(1, -(-8 // limit)), limit  # no empty last page
    # Records created meanwhile with the same created_at as the last one seen come after it, by id.
    first = _list(client, "?limit=3")
    svc.store.put(make_record("rec02b", created_at=1_700_000_120.0))
    assert _ids(client, f"?limit=2&cursor={first['next_cursor']}") == ["rec02b", "rec03"]
    page = _list(client, "?limit=2")
    assert _ids(client, f"?limit=2&cursor={page['next_cursor']}") == ["rec02", "rec02b"]


@pytest.mark.parametrize("query, where", [
    ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?cursor=bm90LWEtY3Vyc29y", "cursor"),
    ("?cursor=%25%25%25", "cursor"), ("?status=sleeping", "status"), ("?filter={bad", "filter"),
    ("?filter=[1]", "filter"), ('?filter={"attributes":{"colour":{"eq":"red"}}}', "colour"),
    ('?filter={"attributes":{"brand":{"range":{"gte":1}}}}', "range"),
    ('?tag=a&filter={"tags":{"any":["b"]}}', "filter.tags"), ("?created_after=yesterday", "created_at"),
    ("?colour=red", "colour"),
])
def test_listing_refuses_bad_parameters_with_422(client, catalogue, query, where):
    error = _error(client.get(f"/v1/images{query}"), 422)
    assert where in error["message"] or where in json.dumps(error.get("details")), error


# -- batch uploads ------------------------------------------------------------------------------------------

def _batch(client, files: list[tuple[bytes, str]], **fields):
    data = {"file": [(io.BytesIO(content), name) for content, name in files], **fields}
    return client.post("/v1/images/batch", data=data, content_type="multipart/form-data")


def test_batch_upload_gives_each_file_its_own_result(client, svc):
    files = [(jpeg((200, 0, 0)), "red.jpg"), (b"not an image", "notes.txt"), (jpeg((0, 200, 0)), "green.jpg"),
             (b"", "empty.jpg"), (jpeg(size=(64, 64)) + b"\0" * 200_001, "huge.jpg"), (jpeg((0, 0, 200)), "blue.jpg")]
    items = [{"external_id": "red", "title": "红色 Red", "attributes": {"price": 5}},
             {}, {"tags": ["green"], "attributes": {"in_stock": "true"}}, {},
             {}, {"external_id": "blue", "attributes": {"colour": "blue"}}]
    response = _batch(client, files, collection="shop", tags="batch", items=json.dumps(items))
    assert response.status_code == 200, response.get_data(as_text=True)
    results = response.get_json()["results"]
    assert [(r["index"], r["filename"], r["status"]) for r in results] == [
        (0, "red.jpg", 202), (1, "notes.txt", 415), (2, "green.jpg", 202), (3, "empty.jpg", 400),
        (4, "huge.jpg", 413), (5, "blue.jpg", 422)]
    assert "'colour'" in results[5]["error"]["message"] and results[5]["id"] is None
    accepted = [results[0]["id"], results[2]["id"]]
    assert accepted[0] == upload_id("default", "shop", "red")
    assert svc.queue.sent[Stage.EMBED] == accepted
    red, green = (client.get(f"/v1/images/{i}").get_json() for i in accepted)
    assert red["title"] == "红色 Red" and red["attributes"] == {"price": 5.0} and red["tags"] == ["batch"]
    assert green["tags"] == ["batch", "green"] and green["attributes"] == {"in_stock": True}
    assert {red["collection"], green["collection"]} == {"shop"}
    assert svc.store.counts()["queued"] == 2  # the refused files left nothing behind


def test_batch_without_items_and_request_level_errors(client):
    ok = _batch(client, [(jpeg(), "a.jpg"), (jpeg((1, 2, 3)), "b.jpg")])
    assert [r["status"] for r in ok.get_json()["results"]] == [202, 202]
    assert _error(client.post("/v1/images/batch", data={"collection": "x"}, content_type="multipart/form-data"),
                  400)["code"] == "missing_file"
    assert "2 objects" in _error(_batch(client, [(jpeg(), "a"), (jpeg(), "b")], items="[{}]"), 422)["message"]
    assert _error(_batch(client, [(jpeg(), "a")], items="{not json"), 422)
    assert _error(_batch(client, [(jpeg(), "a")], collection="../x"), 422)
    tiny = jpeg(size=(8, 8))
    assert _error(_batch(client, [(tiny, f"{i}.jpg") for i in range(101)]), 413)["code"] == "too_many_files"


def test_a_batch_larger_than_one_upload_is_read(make_app):
    # The app-wide body limit is one upload; a batch may carry up to 100 of them.
    app = make_app(ingest=IngestSettings(max_upload_bytes=20_000))
    picture = jpeg(size=(64, 64)) + b"\0" * 15_000
    files = [(picture, f"{i}.jpg") for i in range(8)]
    assert sum(len(f[0]) for f in files) > 20_000 + 64 * 1024
    response = _batch(app.test_client(), files)
    assert response.status_code == 200 and [r["status"] for r in response.get_json()["results"]] == [202] * 8


def test_a_broker_failure_mid_batch_loses_nothing(make_app):
    class Flaky(MemoryTaskQueue):
        calls = 0

        def enqueue(self, stage: Stage, image_id: str) -> None:
            Flaky.calls += 1
            if Flaky.calls > 1:
                raise QueueUnavailable("broker unreachable")
            super().enqueue(stage, image_id)

    queue = Flaky()
    app = make_app(queue=queue)
    store = app.extensions["imagesearch"].store
    response = _batch(app.test_client(), [(jpeg((i * 40, 0, 0)), f"{i}.jpg") for i in range(4)])
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [202, 503, 503, 503]
    assert {r["error"]["code"] for r in results[1:]} == {"broker_unavailable"}
    assert Flaky.calls == 2  # after the broker failed once, the batch stopped trying it
    # Every file is stored and recorded queued: the sweeper sends the rest once the broker is back.
    assert all(store.get(r["id"]).status == "queued" for r in results)
    assert queue.sent[Stage.EMBED] == [results[0]["id"]]


# -- the document --------------------------------------------------------------------------------------------

def test_the_document_describes_the_new_fields_parameters_and_bodies(client):
    document = client.get("/openapi.json").get_json()
    schemas, paths = document["components"]["schemas"], document["paths"]
    upload = paths["/v1/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert {"title", "description", "attributes"} <= set(schemas[upload.rsplit("/", 1)[1]]["properties"])
    assert {"title", "description", "attributes", "taken_at"} <= set(schemas["ImageOut"]["properties"])
    listing = paths["/v1/images"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "collection", "status", "tag", "created_after", "created_before", "taken_after", "taken_before", "filter",
        "limit", "cursor"}
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ImageListOut")
    patch = paths["/v1/images/{image_id}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ImagePatchIn")
    assert "null" not in json.dumps(schemas["ImagePatchIn"]["properties"]["collection"])  # null is refused
    assert {p["name"] for p in paths["/v1/images"]["delete"]["parameters"]} == {"collection", "external_id"}
    batch = paths["/v1/images/batch"]["post"]
    form = batch["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[form]["properties"]["file"]["type"] == "array"
    assert batch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BatchOut")
