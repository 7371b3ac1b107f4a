"""S3 events: parsing every delivery format, ordering and duplicates against the real store and
Redis, reading s3:// originals from moto (server mode), the webhook endpoint, and backfills."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import boto3
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from imagesearch.blobs import BlobMissing, BlobUnavailable, LocalBlobStore
from imagesearch.config import IngestSettings, S3Settings, Settings
from imagesearch.errors import TooLarge
from imagesearch.imaging import InvalidImage
from imagesearch.records import source_id
from imagesearch.redis_state import Keyspace
from imagesearch.s3.backfill import Checkpoint, count_done, list_folder, run_backfill
from imagesearch.s3.client import reset_s3_client
from imagesearch.s3.event_log import MemoryEventLog, RedisEventLog
from imagesearch.s3.events import (
    MAX_KEY_BYTES,
    EventFormatError,
    ObjectEvent,
    compare_sequencers,
    normalize_sequencer,
    parse_notification,
)
from imagesearch.s3.ingest import S3Ingestor, object_id
from imagesearch.s3.sources import parse_s3_uri, read_original, s3_uri
from imagesearch.stores.embedded import EmbeddedStore
from imagesearch.taskqueue import MemoryTaskQueue, QueueUnavailable
from imagesearch.vocab import Stage
from tests.support.factories import vector_update
from tests.support.images import jpeg
from tests.support.paths import ROOT
from tests.support.processes import child_env

SEQ = "0055AED6DCD90281E5"


# -- event builders, as S3 / SNS / EventBridge / Lambda send them ----------------------------------

def s3_record(key: str, name: str = "ObjectCreated:Put", bucket: str = "photos", size: int | None = 1234,
              etag: str | None = "0123456789abcdef0123456789abcdef", sequencer: str | None = SEQ,
              version: str | None = None, time: str = "2024-05-01T12:00:00.000Z", encode=quote_plus) -> dict:
    obj: dict = {"key": encode(key)}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    if sequencer is not None:
        obj["sequencer"] = sequencer
    if version is not None:
        obj["versionId"] = version
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": time,
            "eventName": name, "s3": {"s3SchemaVersion": "1.0", "configurationId": "images",
                                      "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}}


def s3_event(*records: dict) -> dict:
    return {"Records": list(records)}


def sns_wrap(message: dict, topic: str = "arn:aws:sns:us-east-1:123456789012:images") -> dict:
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
            "Subject": "Amazon S3 Notification",
            "Message": json.dumps(message), "Timestamp": "2024-05-01T12:00:01.000Z", "SignatureVersion": "1",
            "Signature": "unused", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"}


def lambda_sqs_wrap(body: dict) -> dict:
    return {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(body)}]}


def eventbridge(key: str, detail_type: str = "Object Created", deletion: str | None = None, bucket: str = "photos",
                sequencer: str = SEQ, version: str | None = None) -> dict:
    obj = {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": sequencer}
    if version:
        obj["version-id"] = version
    detail = {"version": "0", "bucket": {"name": bucket}, "object": obj, "request-id": "R", "requester": "1",
              "reason": "PutObject" if detail_type == "Object Created" else "DeleteObject"}
    if deletion:
        detail["deletion-type"] = deletion
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.s3",
            "account": "123456789012", "time": "2024-05-01T12:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"], "detail": detail}


WEIRD_KEYS = [
    "plain.jpg",
    "holiday photos/beach day.jpg",  # spaces arrive as '+'
    "c++/a+b.png",  # a literal '+' arrives as %2B
    "100%/50% off.jpg",  # '%' arrives as %25
    "ünïcødé/日本語の写真.jpg",
    "emoji 📷/🌅.webp",
    "query?versionId=x&y=z#frag.jpg",
    "a/" + "k" * 990 + ".jpg",  # 1,000 bytes
]


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_direct_event_keys_are_url_decoded(key):
    parsed = parse_notification(json.dumps(s3_event(s3_record(key))))
    assert [e.key for e in parsed.events] == [key]
    event = parsed.events[0]
    assert (event.bucket, event.kind, event.size, event.sequencer) == ("photos", "created", 1234, SEQ)
    assert event.etag == "0123456789abcdef0123456789abcdef" and event.version is None
    assert event.event_time == pytest.approx(1714564800.0) and event.configuration_id == "images"


def test_aws_style_encoding_keeps_slashes_and_plus_means_space():
    # S3 leaves '/' alone and writes spaces as '+'; moto encodes '/' too. Both decode the same.
    raw = "holiday+photos/beach+day+%2B+more%25.jpg"
    parsed = parse_notification(s3_event(s3_record(raw, encode=lambda k: k)))
    assert parsed.events[0].key == "holiday photos/beach day + more%.jpg"


def test_a_1000_byte_key_is_accepted_and_a_1025_byte_key_refused():
    key = "x" * 996 + ".jpg"
    assert len(key.encode()) == 1000
    assert parse_notification(s3_event(s3_record(key))).events[0].key == key
    with pytest.raises(EventFormatError, match="longer than"):
        parse_notification(s3_event(s3_record("é" * 511 + "abc")))  # 1,025 bytes in UTF-8


def test_sns_wrapped_event_and_lambda_sqs_trigger_unwrap_to_the_same_event():
    direct = parse_notification(s3_event(s3_record("a b.jpg"))).events
    assert parse_notification(json.dumps(sns_wrap(s3_event(s3_record("a b.jpg"))))).events == direct
    assert parse_notification(lambda_sqs_wrap(sns_wrap(s3_event(s3_record("a b.jpg"))))).events == direct


def test_eventbridge_created_and_deleted_keys_are_not_decoded():
    created = parse_notification(eventbridge("a+b c.jpg")).events[0]
    assert (created.kind, created.key, created.etag, created.size) == ("created", "a+b c.jpg",
                                                                      "b1946ac92492d2347c6235b4d2611184", 5)
    removed = parse_notification(eventbridge("a+b c.jpg", "Object Deleted", "Delete Marker Created", version="v9"))
    event = removed.events[0]
    assert (event.kind, event.delete_marker, event.version) == ("removed", True, "v9")
    assert parse_notification(sns_wrap(eventbridge("k.jpg"))).events[0].key == "k.jpg"
    other = parse_notification(eventbridge("k.jpg", "Object Restore Completed"))
    assert other.events == [] and other.ignored == 1


def test_test_event_is_acknowledged_and_ignored():
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-05-01T12:00:00.000Z", "Bucket": "photos",
            "RequestId": "R", "HostId": "H"}
    parsed = parse_notification(json.dumps(body))
    assert parsed.events == [] and parsed.test_events == 1
    assert parse_notification(sns_wrap(body)).test_events == 1


def test_removed_events_and_other_types():
    parsed = parse_notification(s3_event(
        s3_record("a.jpg", "ObjectRemoved:Delete", size=None, etag=None, sequencer="0055AED6DCD90281E6"),
        s3_record("a.jpg", "ObjectRemoved:DeleteMarkerCreated", version="v2"),
        s3_record("a.jpg", "LifecycleExpiration:Delete"),
        s3_record("a.jpg", "ObjectTagging:Put"),
        s3_record("a.jpg", "ObjectRestore:Completed"),
    ))
    assert [(e.kind, e.delete_marker) for e in parsed.events] == [("removed", False), ("removed", True),
                                                                  ("removed", False)]
    assert parsed.ignored == 2


def test_minio_webhook_format():
    record = s3_record("my folder/x.png", name="s3:ObjectCreated:Put", sequencer="", version="")
    record["eventSource"] = "minio:s3"
    record["s3"]["object"]["contentType"] = "image/png"
    body = {"EventName": "s3:ObjectCreated:Put", "Key": "photos/my folder/x.png", "Records": [record]}
    event = parse_notification(body).events[0]
    assert (event.key, event.kind, event.sequencer, event.version, event.content_type) == \
        ("my folder/x.png", "created", None, None, "image/png")


@pytest.mark.parametrize("body", [
    "", "not json", "[]", "42", json.dumps({"hello": "world"}),
    json.dumps({"Records": "nope"}),
    json.dumps(s3_event({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {}}})),
    json.dumps(s3_event(s3_record("k", sequencer="not-hex"))),
    json.dumps(s3_event(s3_record("k", size=-1))),
    json.dumps(s3_event(s3_record(""))),
    json.dumps({"detail-type": "Object Created", "source": "aws.ec2", "detail": {}}),
    json.dumps({"Type": "Notification", "TopicArn": "t", "Message": "not json"}),
])
def test_malformed_messages_raise_event_format_error(body):
    with pytest.raises(EventFormatError):
        parse_notification(body)


def test_sequencers_compare_as_aws_documents():
    assert compare_sequencers("0055AED6DCD90281E5", "0055AED6DCD90281E6") == -1
    assert compare_sequencers("0055aed6dcd90281e6", "0055AED6DCD90281E5") == 1
    # Different lengths: right-pad the shorter with zeros, then compare as strings.
    assert compare_sequencers("0055AED6DCD90281E5", "0055AED6DCD90281E500") == 0
    assert compare_sequencers("0055AED6DCD90281E6", "0055AED6DCD90281E5FF") == 1
    assert compare_sequencers("0055AED6DCD90281E5", "0055AED6DCD90281E501") == -1
    assert normalize_sequencer("00ab") == "00AB" and normalize_sequencer("") is None


# -- property tests --------------------------------------------------------------------------------

_key_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
keys = st.text(_key_chars, min_size=1, max_size=200).filter(lambda k: len(k.encode()) <= MAX_KEY_BYTES)
hexes = st.text("0123456789ABCDEF", min_size=1, max_size=24)


@hsettings(max_examples=150, deadline=None)
@given(key=keys, wrap=st.sampled_from(["direct", "sns", "lambda", "sns-in-lambda"]),
       encoder=st.sampled_from([quote_plus, lambda k: quote_plus(k, safe="/"), lambda k: quote(k, safe="/")]))
def test_property_any_key_survives_any_envelope(key, wrap, encoder):
    if encoder is not quote_plus and "+" in key and encoder("+") == "+":
        return  # quote() leaves '+' unescaped, which S3's form encoding never does
    body = s3_event(s3_record(key, encode=encoder))
    body = {"direct": body, "sns": sns_wrap(body), "lambda": lambda_sqs_wrap(body),
            "sns-in-lambda": lambda_sqs_wrap(sns_wrap(body))}[wrap]
    (event,) = parse_notification(json.dumps(body)).events
    assert event.key == key and event.bucket == "photos"
    assert parse_s3_uri(s3_uri("photos", key, "v1")) == ("photos", key, "v1")


@hsettings(max_examples=200, deadline=None)
@given(a=hexes, b=hexes, c=hexes)
def test_property_sequencer_order_is_a_total_preorder(a, b, c):
    assert compare_sequencers(a, b) == -compare_sequencers(b, a)
    assert compare_sequencers(a, a + "0") == 0
    if compare_sequencers(a, b) <= 0 and compare_sequencers(b, c) <= 0:
        assert compare_sequencers(a, c) <= 0
    if len(a) == len(b):
        assert compare_sequencers(a, b) == (int(a, 16) > int(b, 16)) - (int(a, 16) < int(b, 16))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.sampled_from(["Records", "s3", "object", "key", "bucket", "name", "eventName",
                                                        "Type", "Message", "TopicArn", "detail", "detail-type",
                                                        "source", "Event", "size", "sequencer", "x"]),
                                       children, max_size=5), max_leaves=20)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json)
def test_property_garbage_never_raises_anything_but_event_format_error(doc):
    try:
        parsed = parse_notification(json.dumps(doc))
    except EventFormatError:
        return
    for event in parsed.events:
        assert isinstance(event, ObjectEvent) and event.key and event.bucket


# -- applying events: real embedded store, real Redis -----------------------------------------------

@pytest.fixture
def event_log(redis_client):
    return RedisEventLog(redis_client, Keyspace(f"test-{uuid.uuid4().hex[:8]}-"))


@pytest.fixture
def ingest_env(tmp_path, event_log):
    settings = Settings(data_dir=tmp_path / "data", ingest=IngestSettings(max_upload_bytes=10_000))
    store = EmbeddedStore(settings.store_path)
    sent: list[str] = []
    ingestor = S3Ingestor(settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir), enqueue=sent.append,
                          event_log=event_log)
    yield ingestor, store, sent
    store.close()


def _event(key="a.jpg", kind="created", sequencer=SEQ, etag="e1", version=None, size=100, time=None,
           bucket="photos", delete_marker=False) -> ObjectEvent:
    return ObjectEvent(bucket=bucket, key=key, kind=kind, version=version, size=size if kind == "created" else None,
                       etag=etag if kind == "created" else None, sequencer=sequencer, event_time=time,
                       delete_marker=delete_marker)


def _mark_indexed(store, image_id: str) -> None:
    record = store.get(image_id)
    vector = np.ones(4, dtype=np.float32) / 2
    assert store.set_image_vectors([vector_update(image_id, vector, content_hash=record.content_hash)])


def test_created_event_writes_a_queued_record_and_enqueues(ingest_env):
    ingestor, store, sent = ingest_env
    result = ingestor.apply(_event("holiday photos/é +.jpg"))
    image_id = source_id("photos", "holiday photos/é +.jpg")
    assert (result.id, result.action) == (image_id, "queued") and sent == [image_id]
    record = store.get(image_id)
    assert record.status == "queued" and record.content_hash == "e1" and record.collection == "default"
    assert record.source == "s3://photos/holiday photos/é +.jpg"
    assert parse_s3_uri(record.blob_key) == ("photos", "holiday photos/é +.jpg", None)


def test_duplicates_converge_and_an_unchanged_etag_is_not_reenqueued(ingest_env):
    ingestor, store, sent = ingest_env
    image_id = object_id("photos", "a.jpg")
    assert ingestor.apply(_event()).action == "queued"
    # A redelivery while still queued is sent again (the first send may have failed; the task is idempotent).
    assert ingestor.apply(_event()).action == "requeued"
    _mark_indexed(store, image_id)
    for _ in range(3):
        assert ingestor.apply(_event()).action == "unchanged"
    assert sent == [image_id, image_id] and store.counts()["indexed"] == 1
    # A new put (new etag, later sequencer) replaces the record and is embedded again.
    assert ingestor.apply(_event(etag="e2", sequencer="0055AED6DCD90281E6")).action == "queued"
    assert store.get(image_id).status == "queued" and store.get(image_id).content_hash == "e2"


def test_an_older_put_never_resurrects_a_deleted_object(ingest_env):
    ingestor, store, _sent = ingest_env
    image_id = object_id("photos", "a.jpg")
    put, delete = _event(sequencer="0055AED6DCD90281E5"), _event(kind="removed", sequencer="0055AED6DCD90281E6")
    assert ingestor.apply(put).action == "queued"
    assert ingestor.apply(delete).action == "removed" and store.get(image_id) is None
    late = ingestor.apply(put)  # redelivered late
    assert late.action == "stale" and store.get(image_id) is None
    # Delete delivered before its put: the put is stale from the start.
    other = object_id("photos", "b.jpg")
    assert ingestor.apply(_event("b.jpg", kind="removed", sequencer="0055AED6DCD90281E6")).action == "absent"
    assert ingestor.apply(_event("b.jpg", sequencer="0055AED6DCD90281E5FF")).action == "stale"
    assert store.get(other) is None
    # A later put after the delete indexes the object again.
    assert ingestor.apply(_event(sequencer="0055AED6DCD90281E7", etag="e3")).action == "queued"
    assert store.get(image_id).content_hash == "e3"


def test_without_sequencers_event_times_order_puts_and_deletes(ingest_env):
    ingestor, store, _ = ingest_env
    image_id = object_id("photos", "a.jpg")
    assert ingestor.apply(_event(kind="removed", sequencer=None, time=200.0)).action == "absent"
    assert ingestor.apply(_event(sequencer=None, time=100.0)).action == "stale"
    assert ingestor.apply(_event(sequencer=None, time=300.0)).action == "queued"
    assert store.get(image_id) is not None
    # Two puts delivered out of order: the older one does not overwrite the newer one.
    assert ingestor.apply(_event(sequencer=None, time=400.5, etag="new")).action == "queued"
    assert ingestor.apply(_event(sequencer=None, time=400.0, etag="old")).action == "stale"
    assert store.get(image_id).content_hash == "new"
    # A listing (LastModified in whole seconds) of the object the last event wrote is not stale.
    listed = ObjectEvent(bucket="photos", key="a.jpg", kind="created", etag="new", size=1, event_time=400.0,
                         from_listing=True)
    assert ingestor.apply(listed, requeue_queued=False).action == "unchanged"


def test_concurrent_deliveries_in_any_order_end_at_the_latest_event(ingest_env):
    ingestor, store, _ = ingest_env
    image_id = object_id("photos", "race.jpg")
    events = []
    for i in range(12):
        kind = "removed" if i % 3 == 2 else "created"
        events.append(_event("race.jpg", kind=kind, sequencer=f"0055AED6DCD9{i:06X}", etag=f"e{i}"))
    last = events[-1]
    for seed in range(3):
        deliveries = events * 2
        random.Random(seed).shuffle(deliveries)
        threads = [threading.Thread(target=ingestor.apply, args=(e,)) for e in deliveries]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        record = store.get(image_id)
        assert (record is None) if last.kind == "removed" else (record.content_hash == last.etag)
        events.append(_event("race.jpg", kind="created", sequencer=f"0055AED6DCD9{20 + seed:06X}", etag=f"n{seed}"))
        last = events[-1]
    ingestor.apply(last)
    assert store.get(image_id).content_hash == last.etag


def test_versioned_objects_deletes_of_other_versions_and_delete_markers(ingest_env):
    ingestor, store, _ = ingest_env
    image_id = object_id("photos", "v.jpg")
    assert ingestor.apply(_event("v.jpg", version="v1", etag="e1")).action == "queued"
    record = store.get(image_id)
    assert record.content_hash == "e1:v1" and parse_s3_uri(record.blob_key) == ("photos", "v.jpg", "v1")
    assert ingestor.apply(_event("v.jpg", version="v2", etag="e2", sequencer="0055AED6DCD90281E6")).action == "queued"
    assert image_id == object_id("photos", "v.jpg")  # the version is not part of the id
    # Permanently deleting the old version leaves the current one indexed.
    old = _event("v.jpg", kind="removed", version="v1", sequencer="0055AED6DCD90281E7")
    assert ingestor.apply(old).action == "ignored" and store.get(image_id) is not None
    marker = _event("v.jpg", kind="removed", version="m1", sequencer="0055AED6DCD90281E8", delete_marker=True)
    assert ingestor.apply(marker).action == "removed" and store.get(image_id) is None


def test_too_large_and_non_images_are_recorded_as_failed_with_the_reason(ingest_env):
    ingestor, store, sent = ingest_env
    big = ingestor.apply(_event("big.jpg", size=10_001))
    text = ingestor.apply(_event("notes.txt"))
    typed = ingestor.apply(ObjectEvent(bucket="photos", key="noext", kind="created", etag="x", size=5,
                                       content_type="text/html"))
    assert [r.action for r in (big, text, typed)] == ["failed"] * 3 and sent == []
    assert "10001 bytes, the limit is 10000" in store.get(big.id).error
    assert ".txt" in store.get(text.id).error and "text/html" in store.get(typed.id).error
    assert {store.get(r.id).status for r in (big, text, typed)} == {"failed"}
    assert ingestor.apply(_event("notes.txt")).action == "unchanged"  # not recorded twice
    assert ingestor.apply(_event("folder/", size=0)).action == "ignored"


def test_bucket_allowlist_and_collection_mapping(tmp_path):
    settings = Settings(data_dir=tmp_path, s3=S3Settings(bucket_allowlist="photos, shop", collection="s3",
                                                         collection_map={"shop": "catalogue"}))
    store = EmbeddedStore(settings.store_path)
    ingestor = S3Ingestor(settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir),
                          enqueue=lambda _id: None, event_log=MemoryEventLog())
    assert ingestor.apply(_event(bucket="elsewhere")).action == "ignored"
    assert store.get(ingestor.apply(_event(bucket="photos")).id).collection == "s3"
    assert store.get(ingestor.apply(_event(bucket="shop")).id).collection == "catalogue"
    store.close()


# -- reading s3:// originals from moto ---------------------------------------------------------------

@pytest.fixture
def bucket(aws_env):
    reset_s3_client()
    name = f"src-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    yield name
    reset_s3_client()


@pytest.mark.parametrize("key", WEIRD_KEYS[:7])
def test_read_original_streams_s3_objects_with_any_key(bucket, key):
    data = jpeg()
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/jpeg")
    assert read_original(s3_uri(bucket, key), LocalBlobStore(Path("/tmp")), len(data)) == data


def test_read_original_limits_and_errors(bucket, monkeypatch, tmp_path):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="x.jpg", Body=b"\xff" * 1000)
    s3.put_object(Bucket=bucket, Key="page.jpg", Body=b"<html>", ContentType="text/html")
    blobs = LocalBlobStore(tmp_path)
    assert len(read_original(s3_uri(bucket, "x.jpg"), blobs, 1000)) == 1000
    with pytest.raises(TooLarge, match="limit is 999"):
        read_original(s3_uri(bucket, "x.jpg"), blobs, 999)
    with pytest.raises(BlobMissing):
        read_original(s3_uri(bucket, "gone.jpg"), blobs, 1000)
    with pytest.raises(InvalidImage, match="text/html"):
        read_original(s3_uri(bucket, "page.jpg"), blobs, 1000)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="v.jpg", Body=b"one")["VersionId"]
    s3.put_object(Bucket=bucket, Key="v.jpg", Body=b"two")
    assert read_original(s3_uri(bucket, "v.jpg", first), blobs, 100) == b"one"
    assert read_original(s3_uri(bucket, "v.jpg"), blobs, 100) == b"two"
    with pytest.raises(BlobMissing):
        read_original(s3_uri(bucket, "v.jpg", "no-such-version"), blobs, 100)
    # Nothing listening: transient.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    reset_s3_client()
    with pytest.raises(BlobUnavailable):
        read_original(s3_uri(bucket, "x.jpg"), blobs, 1000)


# -- the webhook endpoint ----------------------------------------------------------------------------

@pytest.fixture
def webhook_app(make_app, event_log):
    from api import events

    app = make_app(s3=S3Settings(webhook_token="s3cret"))
    sent = app.extensions["imagesearch"].queue.sent[Stage.EMBED]
    events.configure(app, event_log=event_log)
    return app.test_client(), sent


def test_webhook_needs_the_token_and_applies_events(webhook_app):
    client, sent = webhook_app
    body = json.dumps(s3_event(s3_record("up loads/ü+.jpg"), s3_record("readme.txt")))
    assert client.post("/v1/events/s3", data=body).status_code == 401
    wrong = client.post("/v1/events/s3", data=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "unauthorized"
    ok = client.post("/v1/events/s3", data=body, headers={"Authorization": "Bearer s3cret"},
                     content_type="application/json")
    assert ok.status_code == 200, ok.json
    actions = {r["key"]: r["action"] for r in ok.json["results"]}
    assert actions == {"up loads/ü+.jpg": "queued", "readme.txt": "failed"}
    image_id = source_id("photos", "up loads/ü+.jpg")
    assert sent == [image_id]
    status = client.get(f"/v1/images/{image_id}").json
    assert status["status"] == "queued" and status["source"] == "s3://photos/up loads/ü+.jpg"
    failed = client.get(f"/v1/images/{source_id('photos', 'readme.txt')}").json
    assert failed["status"] == "failed" and ".txt" in failed["error"]
    test_event = client.post("/v1/events/s3", json={"Service": "Amazon S3", "Event": "s3:TestEvent"},
                             headers={"Authorization": "s3cret"})
    assert test_event.status_code == 200 and test_event.json["test_events"] == 1
    delete = s3_event(s3_record("up loads/ü+.jpg", "ObjectRemoved:Delete", sequencer="0055AED6DCD90281E6"))
    assert client.post("/v1/events/s3", json=delete, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get(f"/v1/images/{image_id}").status_code == 404


@pytest.mark.parametrize("body", ["", "not json", "{\"Records\": 3}", "[1]"])
def test_webhook_bad_input_is_a_json_4xx(webhook_app, body):
    client, _ = webhook_app
    response = client.post("/v1/events/s3", data=body, headers={"Authorization": "Bearer s3cret"})
    assert 400 <= response.status_code < 500
    assert set(response.json["error"]) >= {"code", "message"}


def test_webhook_is_off_without_a_token(make_app):
    response = make_app().test_client().post("/v1/events/s3", json=s3_event(s3_record("a.jpg")))
    assert response.status_code == 403 and response.json["error"]["code"] == "webhook_disabled"


# -- backfill ----------------------------------------------------------------------------------------

class Interrupt:
    """An enqueue that raises KeyboardInterrupt (Ctrl-C) after ``after`` calls."""

    def __init__(self, after: int | None = None) -> None:
        self.after, self.sent = after, []

    def __call__(self, image_id: str) -> None:
        if self.after is not None and len(self.sent) >= self.after:
            raise KeyboardInterrupt
        self.sent.append(image_id)


def test_s3_backfill_enqueues_what_is_missing_and_resumes_after_ctrl_c(bucket, tmp_path, event_log):
    s3 = boto3.client("s3")
    keys = [f"shop/item {i:02d}.jpg" for i in range(7)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=jpeg(), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key="shop/readme.txt", Body=b"hi")
    s3.put_object(Bucket=bucket, Key="elsewhere/x.jpg", Body=jpeg())
    settings = Settings(data_dir=tmp_path)
    store = EmbeddedStore(settings.store_path)
    common = dict(settings=settings, store=store, blobs=LocalBlobStore(settings.blob_dir), event_log=event_log,
                  save_every=2)

    first = Interrupt(after=3)
    with pytest.raises(KeyboardInterrupt):
        run_backfill(f"s3://{bucket}/shop/", enqueue=first, **common)
    assert len(first.sent) == 3
    checkpoint = Checkpoint(tmp_path, f"s3://{bucket}/shop/\x1f")
    assert checkpoint.load() == keys[2]

    second = Interrupt()
    stats = run_backfill(f"s3://{bucket}/shop/", enqueue=second, **common)
    assert stats.resumed_after == keys[2] and stats.complete and checkpoint.load() is None
    assert (stats.listed, stats.queued, stats.failed) == (5, 4, 1)  # items 3..6 and readme.txt
    assert set(first.sent + second.sent) == {source_id(bucket, k) for k in keys}

    for image_id in first.sent + second.sent:
        _mark_indexed(store, image_id)
    third = Interrupt()
    stats = run_backfill(f"s3://{bucket}/shop/", enqueue=third, **common)
    assert third.sent == [] and (stats.listed, stats.unchanged) == (8, 8)
    done, counts = count_done(store, first.sent + second.sent)
    assert len(done) == 7 and counts["indexed"] == 7

    # A changed object is enqueued again.
    s3.put_object(Bucket=bucket, Key=keys[0], Body=jpeg((1, 2, 3)), ContentType="image/jpeg")
    fourth = Interrupt()
    assert run_backfill(f"s3://{bucket}/shop/", enqueue=fourth, **common).queued == 1
    assert fourth.sent == [source_id(bucket, keys[0])]
    store.close()


def test_folder_backfill_copies_images_and_skips_what_is_indexed(tmp_path, event_log):
    folder = tmp_path / "pictures"
    (folder / "sub dir").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg())
    (folder / "sub dir" / "b é.jpg").write_bytes(jpeg((0, 200, 0)))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(jpeg())
    assert list_folder(folder) == ["a.jpg", "notes.txt", "sub dir/b é.jpg"]
    settings = Settings(data_dir=tmp_path / "data")
    store = EmbeddedStore(settings.store_path)
    blobs = LocalBlobStore(settings.blob_dir)
    first = Interrupt(after=1)
    with pytest.raises(KeyboardInterrupt):
        run_backfill(str(folder), settings=settings, store=store, blobs=blobs, enqueue=first, event_log=event_log)
    second = Interrupt()
    stats = run_backfill(str(folder), settings=settings, store=store, blobs=blobs, enqueue=second,
                         event_log=event_log, collection="pics")
    # Another collection is another source: nothing resumed, all three looked at.
    assert stats.resumed_after is None and (stats.queued, stats.skipped) == (2, 1)
    third = Interrupt()
    stats = run_backfill(str(folder), settings=settings, store=store, blobs=blobs, enqueue=third,
                         event_log=event_log)
    # Resumed after the last item fully handled; the one Ctrl-C hit (record written, task not sent) is sent now.
    assert stats.resumed_after == "notes.txt" and (stats.listed, stats.queued, stats.skipped) == (1, 1, 0)
    record = store.get(third.sent[0])
    assert record.external_id == "sub dir/b é.jpg" and record.blob_key.startswith("originals/")
    assert blobs.get(record.blob_key) == (folder / "sub dir" / "b é.jpg").read_bytes()  # copied
    again = Interrupt()
    stats = run_backfill(str(folder), settings=settings, store=store, blobs=blobs, enqueue=again,
                         event_log=event_log)
    assert again.sent == [] and (stats.unchanged, stats.skipped) == (2, 1)
    store.close()


def test_backfill_cli_reports_progress(bucket, tmp_path, aws_env):
    s3 = boto3.client("s3")
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"cli/{i}.jpg", Body=jpeg(), ContentType="image/jpeg")
    env = child_env(tmp_path / "data", **aws_env)
    command = [sys.executable, "-m", "cli", "backfill", f"s3://{bucket}/cli/", "--no-wait"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "listed 3, enqueued 3" in result.stdout and "enqueued" in result.stderr  # tqdm bars on stderr
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "listed 3, enqueued 0, unchanged 3" in again.stdout
    bad = subprocess.run([sys.executable, "-m", "cli", "backfill", str(tmp_path / "missing")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "neither" in bad.stderr
    assert os.environ.get("IMAGESEARCH_REDIS_NAMESPACE")  # the messages went to this run's own queue


def test_webhook_answers_503_when_the_broker_is_down_and_a_retry_sends_the_task(make_app, event_log):
    from api import events

    broker_up = [False]

    class Queue(MemoryTaskQueue):
        def enqueue(self, stage: Stage, image_id: str) -> None:
            if not broker_up[0]:
                raise QueueUnavailable("broker unreachable")
            super().enqueue(stage, image_id)

    queue = Queue()
    sent = queue.sent[Stage.EMBED]
    app = make_app(queue=queue, s3=S3Settings(webhook_token="t"))
    events.configure(app, event_log=event_log)
    client = app.test_client()
    body = s3_event(s3_record("retry me.jpg"))
    down = client.post("/v1/events/s3", json=body, headers={"Authorization": "Bearer t"})
    assert down.status_code == 503 and down.json["error"]["code"] == "broker_unavailable"
    image_id = source_id("photos", "retry me.jpg")
    assert client.get(f"/v1/images/{image_id}").json["status"] == "queued"  # nothing accepted is lost
    broker_up[0] = True
    again = client.post("/v1/events/s3", json=body, headers={"Authorization": "Bearer t"})  # the sender retries
    assert again.status_code == 200 and again.json["results"][0]["action"] == "requeued" and sent == [image_id]
