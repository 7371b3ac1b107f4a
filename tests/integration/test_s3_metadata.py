"""S3 object metadata and backfill sidecars into records: moto in server mode for the bucket, the
real embedded store, Redis for the event log."""

from __future__ import annotations

import json
import uuid
from email.header import Header

import boto3
import pytest

from imagesearch.blobs import LocalBlobStore
from imagesearch.config import IngestSettings, S3Settings, Settings
from imagesearch.records import source_id, upload_id
from imagesearch.redis_state import Keyspace
from imagesearch.s3.backfill import run_backfill
from imagesearch.s3.client import reset_s3_client
from imagesearch.s3.event_log import MemoryEventLog, RedisEventLog
from imagesearch.s3.events import ObjectEvent
from imagesearch.s3.ingest import S3Ingestor
from imagesearch.s3.sources import head_s3_object
from imagesearch.stores.base import RecordPatch
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg

ATTRIBUTES = "brand:keyword,price:number,in_stock:boolean,released:date"
TITLE = "女士红色连衣裙 Summer dress"


def _encoded(text: str) -> str:
    """How a non-ASCII metadata value travels: RFC 2047 encoded words (boto3 refuses raw non-ASCII)."""
    return Header(text, "utf-8").encode()


@pytest.fixture
def bucket(aws_env):
    reset_s3_client()
    name = f"meta-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    yield name
    reset_s3_client()


@pytest.fixture
def env(tmp_path, redis_client):
    settings = Settings(data_dir=tmp_path / "data",
                        ingest=IngestSettings(attributes=ATTRIBUTES, max_upload_bytes=100_000),
                        s3=S3Settings(metadata_map={"Product-Name": "title", "cost": "price"}))
    store = EmbeddedStore(settings.store_path)
    sent: list[str] = []
    ingestor = S3Ingestor(settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir),
                          enqueue=sent.append, head=head_s3_object,
                          event_log=RedisEventLog(redis_client, Keyspace(f"test-{uuid.uuid4().hex[:8]}-")))
    yield settings, store, ingestor, sent
    store.close()


def _put(bucket: str, key: str, metadata: dict[str, str], body: bytes | None = None,
         content_type: str = "image/jpeg") -> str:
    response = boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body or jpeg(), ContentType=content_type,
                                             Metadata=metadata)
    return response["ETag"].strip('"')


def _event(bucket: str, key: str, etag: str | None, sequencer: str = "0055AED6DCD90281E5") -> ObjectEvent:
    # As S3 notifications carry it: no content type, no metadata.
    return ObjectEvent(bucket=bucket, key=key, kind="created", etag=etag, size=100, sequencer=sequencer)


def test_object_metadata_becomes_title_description_tags_and_typed_attributes(bucket, env):
    _settings, store, ingestor, sent = env
    etag = _put(bucket, "shop/dress.jpg", {"product-name": _encoded(TITLE), "description": "Light, for summer",
                                           "tags": "dress, red", "brand": "Aurora", "cost": "199.5",
                                           "in_stock": "true", "released": "2024-03-05", "owner": "team-a"})
    result = ingestor.apply(_event(bucket, "shop/dress.jpg", etag))
    assert result.action == "queued" and sent == [result.id]
    record = store.get(source_id(bucket, "shop/dress.jpg"))
    assert record.title == TITLE  # renamed through the map, and decoded
    assert record.description == "Light, for summer" and record.tags == ["dress", "red"]
    # "owner" is neither mapped nor declared: other readers' metadata is ignored.
    assert record.attributes == {"brand": "Aurora", "price": 199.5, "in_stock": True, "released": 1709596800.0}


def test_a_bad_metadata_value_records_the_object_failed_until_the_metadata_is_fixed(bucket, env):
    _settings, store, ingestor, sent = env
    etag = _put(bucket, "bad.jpg", {"brand": "Aurora", "price": "cheap"})
    result = ingestor.apply(_event(bucket, "bad.jpg", etag))
    assert result.action == "failed" and "'price'" in result.reason and sent == []
    record = store.get(result.id)
    assert record.status == "failed" and "'price'" in record.error and "metadata" in record.error
    # The same content, redelivered: looked at again, still bad.
    assert ingestor.apply(_event(bucket, "bad.jpg", etag)).action == "failed"
    # Replacing the metadata in place keeps the etag (same bytes); S3 sends ObjectCreated:Copy.
    s3 = boto3.client("s3")
    s3.copy_object(Bucket=bucket, Key="bad.jpg", CopySource={"Bucket": bucket, "Key": "bad.jpg"},
                   Metadata={"brand": "Aurora", "price": "12"}, MetadataDirective="REPLACE", ContentType="image/jpeg")
    assert s3.head_object(Bucket=bucket, Key="bad.jpg")["ETag"].strip('"') == etag
    fixed = ingestor.apply(_event(bucket, "bad.jpg", etag, sequencer="0055AED6DCD90281E6"))
    assert fixed.action == "queued" and sent == [result.id]
    record = store.get(result.id)
    assert record.status == "queued" and record.error is None and record.attributes == {"brand": "Aurora",
                                                                                         "price": 12.0}


def test_a_metadata_only_change_updates_the_fields_it_names_without_re_embedding(bucket, env):
    _settings, store, ingestor, sent = env
    etag = _put(bucket, "a.jpg", {"title": "First", "price": "10"})
    image_id = ingestor.apply(_event(bucket, "a.jpg", etag)).id
    store.patch(image_id, RecordPatch(description="set through the API", attributes={"price": 10.0, "brand": "X"}))
    s3 = boto3.client("s3")
    s3.copy_object(Bucket=bucket, Key="a.jpg", CopySource={"Bucket": bucket, "Key": "a.jpg"},
                   Metadata={"title": "Second", "price": "11"}, MetadataDirective="REPLACE", ContentType="image/jpeg")
    result = ingestor.apply(_event(bucket, "a.jpg", etag, sequencer="0055AED6DCD90281E6"), requeue_queued=False)
    assert result.action == "unchanged" and "metadata updated" in result.reason and sent == [image_id]
    record = store.get(image_id)
    assert record.title == "Second" and record.attributes == {"price": 11.0, "brand": "X"}
    assert record.description == "set through the API"  # the metadata does not name it: kept
    # Nothing new: nothing written.
    again = ingestor.apply(_event(bucket, "a.jpg", etag, sequencer="0055AED6DCD90281E7"), requeue_queued=False)
    assert "metadata" not in again.reason and store.get(image_id).updated_at == record.updated_at


def test_head_gives_the_content_type_and_size_notifications_leave_out(bucket, env):
    settings, store, ingestor, sent = env
    etag = _put(bucket, "page.jpg", {}, body=b"<html></html>", content_type="text/html")
    result = ingestor.apply(_event(bucket, "page.jpg", etag))
    assert result.action == "failed" and "text/html" in store.get(result.id).error
    big = _put(bucket, "big.jpg", {}, body=jpeg() + b"\0" * settings.ingest.max_upload_bytes)
    event = ObjectEvent(bucket=bucket, key="big.jpg", kind="created", etag=big, sequencer="0055AED6DCD90281E5")
    assert ingestor.apply(event).action == "failed"
    # Deleted before the event was applied: nothing is recorded (its removal event follows).
    gone = ingestor.apply(_event(bucket, "never-there.jpg", "e1"))
    assert gone.action == "absent" and store.get(gone.id) is None and sent == []


def test_s3_backfill_reads_each_new_objects_metadata(bucket, env, tmp_path):
    settings, store, _ingestor, _ = env
    for i in range(3):
        _put(bucket, f"cat/{i}.jpg", {"title": _encoded(f"商品 {i}"), "price": str(i)}, body=jpeg((i * 50, 0, 0)))
    _put(bucket, "cat/broken.jpg", {"in_stock": "maybe"})
    sent: list[str] = []
    stats = run_backfill(f"s3://{bucket}/cat/", settings=settings, store=store, blobs=LocalBlobStore(tmp_path),
                         enqueue=sent.append, event_log=MemoryEventLog())
    assert (stats.listed, stats.queued, stats.failed) == (4, 3, 1)
    assert [store.get(source_id(bucket, f"cat/{i}.jpg")).title for i in range(3)] == ["商品 0", "商品 1", "商品 2"]
    assert store.get(source_id(bucket, "cat/1.jpg")).attributes == {"price": 1.0}
    assert "'in_stock'" in store.get(source_id(bucket, "cat/broken.jpg")).error


# -- local folders: sidecars ----------------------------------------------------------------------------

def _sidecar(folder, name: str, **fields) -> None:
    (folder / f"{name}.json").write_text(json.dumps(fields, ensure_ascii=False), encoding="utf-8")


def test_folder_backfill_reads_sidecars_and_applies_changes_to_them(tmp_path):
    folder = tmp_path / "products"
    folder.mkdir()
    (folder / "shoe.jpg").write_bytes(jpeg((10, 10, 200)))
    (folder / "bag.jpg").write_bytes(jpeg((200, 10, 10)))
    (folder / "plain.jpg").write_bytes(jpeg((10, 200, 10)))
    _sidecar(folder, "shoe.jpg", title="跑步鞋 Running shoe", tags=["shoes"],
             attributes={"brand": "Zephyr", "price": 89, "released": "2023-09-01T00:00:00Z"})
    _sidecar(folder, "bag.jpg", attributes={"colour": "red"})
    (folder / "orphan.json").write_text("{}")  # no image of that name: an item, and not an image
    settings = Settings(data_dir=tmp_path / "data", ingest=IngestSettings(attributes=ATTRIBUTES))
    store = EmbeddedStore(settings.store_path)
    common = dict(settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir), event_log=MemoryEventLog(),
                  collection="shop")
    sent: list[str] = []
    stats = run_backfill(str(folder), enqueue=sent.append, **common)
    assert (stats.listed, stats.queued, stats.failed, stats.skipped) == (4, 2, 1, 1)  # sidecars are not items
    shoe = store.get(upload_id("default", "shop", "shoe.jpg"))
    assert shoe.title == "跑步鞋 Running shoe" and shoe.tags == ["shoes"]
    assert shoe.attributes == {"brand": "Zephyr", "price": 89.0, "released": 1693526400.0}
    bag_id = upload_id("default", "shop", "bag.jpg")
    bag = store.get(bag_id)
    assert bag.status == "failed" and "bag.jpg.json" in bag.error and "'colour'" in bag.error
    assert bag_id not in sent and store.get(upload_id("default", "shop", "plain.jpg")).title is None

    # Fixed sidecar: the refused image is accepted; a changed sidecar updates its image in place.
    _sidecar(folder, "bag.jpg", title="Tote", attributes={"in_stock": False})
    _sidecar(folder, "shoe.jpg", title="跑步鞋 Trail shoe", attributes={"price": 79.5})
    store.patch(upload_id("default", "shop", "plain.jpg"), RecordPatch(title="set through the API"))
    again: list[str] = []
    stats = run_backfill(str(folder), enqueue=again.append, **common)
    assert again == [bag_id] and (stats.queued, stats.updated, stats.unchanged) == (1, 1, 1)
    assert store.get(bag_id).status == "queued" and store.get(bag_id).attributes == {"in_stock": False}
    shoe = store.get(shoe.id)
    assert shoe.title == "跑步鞋 Trail shoe" and shoe.tags == ["shoes"]  # tags not named: kept
    assert shoe.attributes == {"brand": "Zephyr", "price": 79.5, "released": 1693526400.0}
    assert store.get(upload_id("default", "shop", "plain.jpg")).title == "set through the API"  # no sidecar
    store.close()


@pytest.mark.parametrize("text, named", [("{not json", "not JSON"), ("[1]", "JSON object"),
                                         ('{"price": 3}', "unknown fields"), ('{"title": 7}', "title")])
def test_a_sidecar_that_does_not_parse_fails_its_image_with_the_reason(tmp_path, text, named):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(jpeg())
    (folder / "x.jpg.json").write_text(text)
    settings = Settings(data_dir=tmp_path / "data", ingest=IngestSettings(attributes=ATTRIBUTES))
    store = EmbeddedStore(settings.store_path)
    sent: list[str] = []
    stats = run_backfill(str(folder), settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir),
                         enqueue=sent.append, event_log=MemoryEventLog())
    record = store.get(upload_id("default", "default", "x.jpg"))
    assert stats.failed == 1 and sent == [] and named in record.error and "x.jpg.json" in record.error
    store.close()
