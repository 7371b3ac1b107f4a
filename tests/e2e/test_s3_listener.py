"""A moto bucket sends its notifications to an SQS queue; the listener process and a worker make
what is put searchable and what is deleted disappear, with no other call."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests

from imagesearch.dev.procs import ManagedProcess, wait_until
from imagesearch.records import source_id
from imagesearch.s3.ingest import ApplyResult
from tests.support.images import jpeg
from tests.support.processes import child_env, start_api, start_worker

WAIT = 120


def _queue(sqs, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture
def notifying_bucket(aws_env):
    """A bucket whose object created/removed events go to an SQS queue (with a dead-letter queue)."""
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    suffix = uuid.uuid4().hex[:8]
    bucket = f"photos-{suffix}"
    s3.create_bucket(Bucket=bucket)
    _, dlq_arn = _queue(sqs, f"image-events-dlq-{suffix}")
    url, arn = _queue(sqs, f"image-events-{suffix}",
                      RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}))
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "images", "QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    return s3, sqs, bucket, url


def start_listener(data_dir: Path, **extra: str) -> ManagedProcess:
    proc = ManagedProcess([sys.executable, "-m", "workers.s3_listener"], child_env(data_dir, **extra),
                          data_dir.parent / "s3-listener.log")
    try:
        proc.wait_for_output("s3 listener polling", WAIT)
    except BaseException:
        proc.close()
        raise
    return proc


def _image(base: str, image_id: str) -> dict | None:
    response = requests.get(f"{base}/v1/images/{image_id}", timeout=30)
    return response.json() if response.status_code == 200 else None


def _hits(base: str) -> set[str]:
    response = requests.post(f"{base}/v1/search", json={"text": "a photo", "mode": "image", "k": 100}, timeout=30)
    assert response.status_code == 200, response.text
    return {hit["id"] for hit in response.json()["hits"]}


def test_objects_put_become_searchable_and_deleted_ones_disappear(redis_client, data_dir, notifying_bucket, aws_env):
    s3, sqs, bucket, queue_url = notifying_bucket
    extra = {**aws_env, "IMAGESEARCH_SQS_QUEUE_URL": queue_url, "IMAGESEARCH_SQS_WAIT_SECONDS": "1"}
    api, base = start_api(data_dir, **extra)
    worker = start_worker(data_dir, "worker", **extra)
    listener = start_listener(data_dir, **extra)
    try:
        keys = ["plain.jpg", "holiday photos/beach + sun 100%.jpg", "ünïcødé/日本 🌅.jpg"]
        for i, key in enumerate(keys):
            s3.put_object(Bucket=bucket, Key=key, Body=jpeg((40 * i, 200 - 40 * i, 90), shape="circle"),
                          ContentType="image/jpeg")
        s3.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"not an image", ContentType="text/plain")
        ids = {key: source_id(bucket, key) for key in keys}

        def all_indexed():
            states = [_image(base, i) for i in ids.values()]
            return all(s and s["status"] == "indexed" for s in states) and states

        states = wait_until(all_indexed, WAIT, 0.5, "objects indexed from S3 events")
        assert {s["source"] for s in states} == {f"s3://{bucket}/{k}" for k in keys}
        wait_until(lambda: set(ids.values()) <= _hits(base), WAIT, 0.5, "objects searchable")
        text = _image(base, source_id(bucket, "notes/readme.txt"))
        assert text["status"] == "failed" and ".txt" in text["error"]

        # A redelivered or repeated put of the same bytes converges on the same record.
        s3.copy_object(Bucket=bucket, Key=keys[0], CopySource={"Bucket": bucket, "Key": keys[0]},
                       MetadataDirective="REPLACE", ContentType="image/jpeg")
        listener.wait_for_output(f"unchanged s3://{bucket}/{keys[0]}", WAIT)
        assert _image(base, ids[keys[0]])["status"] == "indexed"

        for key in keys[:2]:
            s3.delete_object(Bucket=bucket, Key=key)
        wait_until(lambda: all(_image(base, ids[k]) is None for k in keys[:2]), WAIT, 0.5, "deleted objects removed")
        assert _hits(base) == {ids[keys[2]]}
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 2  # removing a record never deletes the object

        # Every message was handled and deleted (the s3:TestEvent included).
        def drained() -> bool:
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            return (attributes["ApproximateNumberOfMessages"] == "0"
                    == attributes["ApproximateNumberOfMessagesNotVisible"])

        wait_until(drained, WAIT, 0.5, "queue drained")
        assert "s3:TestEvent acknowledged" in listener.output()
    finally:
        listener.close()
        worker.close()
        api.close()


# -- the listener's delivery rules, in-process against moto's SQS ------------------------------------

class SlowIngestor:
    """Stands in for S3Ingestor: takes ``delay`` seconds per message, or fails."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0

    def apply_all(self, events):
        self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("store unreachable")
        return [ApplyResult(id="x", action="queued", bucket=e.bucket, key=e.key) for e in events]


def _s3_body(key: str = "a.jpg") -> str:
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventSource": "aws:s3", "s3": {
        "bucket": {"name": "b"}, "object": {"key": key, "size": 1, "eTag": "e"}}}]})


def test_visibility_is_extended_while_busy_and_the_message_deleted_after(aws_env):
    from workers.s3_listener import S3Listener

    sqs = boto3.client("sqs")
    url, _ = _queue(sqs, f"slow-{uuid.uuid4().hex[:8]}")
    sqs.send_message(QueueUrl=url, MessageBody=_s3_body())
    ingestor = SlowIngestor(delay=5.0)
    listener = S3Listener(sqs=sqs, queue_url=url, ingestor=ingestor, wait_seconds=1, visibility_timeout=2)
    listener.keeper.start()
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(listener.poll_once()))
    worker.start()
    time.sleep(3.5)  # past the 2 s visibility timeout: without extensions SQS would hand it out again
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert again.get("Messages", []) == []
    worker.join(30)
    listener.keeper.stop()
    assert result == [1] and listener.keeper.extensions >= 1
    time.sleep(2.5)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []  # deleted


def test_failures_are_left_to_the_redrive_policy(aws_env):
    from workers.s3_listener import S3Listener

    sqs = boto3.client("sqs")
    suffix = uuid.uuid4().hex[:8]
    dlq_url, dlq_arn = _queue(sqs, f"dead-{suffix}")
    url, _ = _queue(sqs, f"failing-{suffix}",
                    RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}))
    sqs.send_message(QueueUrl=url, MessageBody=_s3_body())
    sqs.send_message(QueueUrl=url, MessageBody="this is not an S3 event")
    failing = S3Listener(sqs=sqs, queue_url=url, ingestor=SlowIngestor(fail=True), wait_seconds=1,
                         visibility_timeout=1)
    for _ in range(2):
        assert failing.poll_once() == 0  # nothing deleted
        time.sleep(1.5)
    assert failing.failed == 4
    # Past maxReceiveCount SQS moves both to the dead-letter queue; the listener never deleted them.
    assert failing.poll_once() == 0
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert sorted(m["Body"] for m in dead) == sorted([_s3_body(), "this is not an S3 event"])


def test_the_listener_exits_without_a_queue_url(data_dir):
    import subprocess

    env = child_env(data_dir, IMAGESEARCH_SQS_QUEUE_URL="")
    result = subprocess.run([sys.executable, "-m", "workers.s3_listener"], env=env, cwd=Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "IMAGESEARCH_SQS_QUEUE_URL" in result.stderr
