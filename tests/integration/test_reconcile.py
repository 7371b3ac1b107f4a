"""`reconcile` against a moto bucket (server mode): lost events are repaired in both directions."""

from __future__ import annotations

import uuid

import boto3
import pytest

from imagesearch.blobs import LocalBlobStore
from imagesearch.config import RedisSettings, Settings
from imagesearch.models import get_clip
from imagesearch.pipeline import embed_batch
from imagesearch.records import source_id
from imagesearch.redis_state import Keyspace
from imagesearch.s3 import reconcile
from imagesearch.s3.backfill import run_backfill
from imagesearch.s3.event_log import RedisEventLog
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg


@pytest.fixture
def world(data_dir, aws_env, redis_client):
    bucket = f"rec-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    settings = Settings(data_dir=data_dir, redis=RedisSettings(namespace=f"rec-{uuid.uuid4().hex[:6]}-"))
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    return bucket, s3, settings, store, blobs, RedisEventLog(redis_client, settings.keys)


def test_reconcile_requeues_missing_and_stuck_and_removes_orphans(world):
    bucket, s3, settings, store, blobs, events = world
    for name in ("a.jpg", "b.jpg", "c d.jpg", "other/z.jpg"):
        s3.put_object(Bucket=bucket, Key=f"photos/{name}" if not name.startswith("other") else name, Body=jpeg())
    sent: list[str] = []
    run_backfill(f"s3://{bucket}/photos/", settings=settings, store=store, blobs=blobs, enqueue=sent.append,
                 event_log=events)
    assert len(sent) == 3
    embed_batch(sent, settings=settings, store=store, blobs=blobs, clip=get_clip(settings))
    ids = {key: source_id(bucket, f"photos/{key}") for key in ("a.jpg", "b.jpg", "c d.jpg", "new.jpg")}
    assert all(store.get(ids[k]).status == "indexed" for k in ("a.jpg", "b.jpg", "c d.jpg"))

    # Lost events: an object deleted and one added without notifications; a task lost on the way.
    s3.delete_object(Bucket=bucket, Key="photos/b.jpg")
    s3.put_object(Bucket=bucket, Key="photos/new.jpg", Body=jpeg((1, 2, 3)))
    stuck = store.get(ids["c d.jpg"])
    store.put(stuck)  # back to queued, as if its message had been lost

    dry = reconcile.reconcile(f"s3://{bucket}/photos/", settings=settings, store=store, blobs=blobs,
                              enqueue=sent.append, event_log=events, dry_run=True)
    assert dry.orphans == [ids["b.jpg"]] and store.get(ids["b.jpg"]) is not None

    sent.clear()
    report = reconcile.reconcile(f"s3://{bucket}/photos/", settings=settings, store=store, blobs=blobs,
                                 enqueue=sent.append, event_log=events)
    assert report.removed == 1 and store.get(ids["b.jpg"]) is None
    assert sorted(sent) == sorted([ids["new.jpg"], ids["c d.jpg"]])  # missing and stuck; not the indexed one
    assert store.get(ids["a.jpg"]).status == "indexed"
    assert store.get(source_id(bucket, "other/z.jpg")) is None  # outside the prefix: untouched, not listed


def test_reconcile_a_folder_mirrored_into_a_collection(data_dir, redis_client, tmp_path):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    folder = tmp_path / "pics"
    folder.mkdir()
    for name in ("one.jpg", "two.jpg"):
        (folder / name).write_bytes(jpeg())
    events = RedisEventLog(redis_client, Keyspace("fold-"))
    sent: list[str] = []
    run_backfill(str(folder), settings=settings, store=store, blobs=blobs, enqueue=sent.append, event_log=events,
                 collection="pics")
    (folder / "two.jpg").unlink()
    report = reconcile.reconcile(str(folder), settings=settings, store=store, blobs=blobs, enqueue=sent.append,
                                 event_log=events, collection="pics")
    assert report.removed == 1
    assert [r.external_id for r in store.iter_records()] == ["one.jpg"]
