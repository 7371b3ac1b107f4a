"""The S3 event listener: long-polls an SQS queue and turns S3 notifications into embed tasks.

``python -m workers.s3_listener`` (the Procfile's ``s3-listener``). Messages may hold S3
notifications sent directly, wrapped by SNS, or EventBridge "Object Created"/"Object Deleted"
events (see :mod:`imagesearch.s3.events`); each is applied by :class:`imagesearch.s3.ingest.S3Ingestor`.

Delivery: a message is deleted only after its work was done (records written, tasks sent). While a
batch is being handled a background thread keeps extending the messages' visibility
(ChangeMessageVisibility), so a slow store never lets SQS hand them to another listener. A message
that fails (store, broker or event log unreachable, or a message no parser understands) is left
alone: SQS makes it visible again after the visibility timeout and, after the queue's
``maxReceiveCount``, its redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagesearch.backoff import equal_jitter
from imagesearch.config import Settings, get_settings
from imagesearch.s3.events import EventFormatError, parse_notification
from imagesearch.s3.ingest import S3Ingestor

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger("imagesearch.s3_listener")


class VisibilityKeeper(threading.Thread):
    """Extends the visibility of in-flight messages every ``timeout / 3`` seconds until released."""

    def __init__(self, sqs: BaseClient, queue_url: str, timeout: int) -> None:
        super().__init__(name="sqs-visibility", daemon=True)
        self.sqs, self.queue_url, self.timeout = sqs, queue_url, timeout
        self._handles: dict[str, str] = {}  # message id -> receipt handle
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.extensions = 0

    def hold(self, messages: list[dict]) -> None:
        with self._lock:
            self._handles.update({m["MessageId"]: m["ReceiptHandle"] for m in messages})

    def release(self, message_id: str) -> None:
        with self._lock:
            self._handles.pop(message_id, None)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        interval = max(1.0, self.timeout / 3)
        while not self._stop.wait(interval):
            with self._lock:
                entries = [{"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": self.timeout}
                           for i, handle in enumerate(self._handles.values())]
            for start in range(0, len(entries), 10):
                try:
                    response = self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                                        Entries=entries[start:start + 10])
                    self.extensions += len(response.get("Successful", []))
                    for failure in response.get("Failed", []):
                        log.warning("could not extend visibility: %s", failure.get("Message"))
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("could not extend visibility: %s", exc)


@dataclass(kw_only=True)
class S3Listener:
    sqs: BaseClient
    queue_url: str
    ingestor: S3Ingestor
    batch_size: int = 10
    wait_seconds: int = 20
    visibility_timeout: int = 60
    handled: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.keeper = VisibilityKeeper(self.sqs, self.queue_url, self.visibility_timeout)
        self._stopping = threading.Event()

    def stop(self, *_args: object) -> None:
        if not self._stopping.is_set():
            log.info("stopping after the current batch")
        self._stopping.set()

    def run(self, should_stop: Callable[[], bool] | None = None) -> None:
        self.keeper.start()
        log.info("s3 listener polling %s (batch %d, wait %d s, visibility %d s)", self.queue_url, self.batch_size,
                 self.wait_seconds, self.visibility_timeout)
        errors = 0
        try:
            while not self._stopping.is_set() and not (should_stop and should_stop()):
                try:
                    self.poll_once()
                    errors = 0
                except Exception as exc:  # noqa: BLE001 - SQS unreachable: back off, keep running
                    errors += 1
                    delay = equal_jitter(errors - 1, base=2.0, cap=60.0)
                    log.warning("receiving from SQS failed (%s); retrying in %.0f s", exc, delay)
                    self._stopping.wait(delay)
        finally:
            self.keeper.stop()

    def poll_once(self) -> int:
        """Receive one batch and handle it; returns the number of messages deleted."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout, MessageSystemAttributeNames=["ApproximateReceiveCount"])
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.keeper.hold(messages)
        done: list[dict] = []
        try:
            for message in messages:
                if self.handle(message):
                    done.append(message)
                else:
                    self.keeper.release(message["MessageId"])
            return self._delete(done)
        finally:
            for message in messages:
                self.keeper.release(message["MessageId"])

    def handle(self, message: dict) -> bool:
        """Apply one message's events; True when it may be deleted."""
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        try:
            parsed = parse_notification(message.get("Body", ""))
        except EventFormatError as exc:
            self.failed += 1
            log.error("message %s (receive %s) is not an S3 event, left to the redrive policy: %s",
                      message["MessageId"], receives, exc)
            return False
        try:
            results = self.ingestor.apply_all(parsed.events)
        except Exception as exc:  # noqa: BLE001 - store/broker/log unreachable: SQS redelivers
            self.failed += 1
            log.warning("message %s (receive %s) failed, it will be redelivered: %s: %s", message["MessageId"],
                        receives, type(exc).__name__, exc)
            return False
        self.handled += 1
        if parsed.test_events:
            log.info("s3:TestEvent acknowledged")
        for result in results:
            log.info("%s s3://%s/%s -> %s %s", result.action, result.bucket, result.key, result.id, result.reason)
        return True

    def _delete(self, messages: list[dict]) -> int:
        deleted = 0
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)])
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):  # the work is idempotent: a redelivery is harmless
                log.warning("could not delete a handled message: %s", failure.get("Message"))
        return deleted


def build(settings: Settings) -> S3Listener:
    import boto3

    from wiring import build_services

    sqs = boto3.client("sqs")
    return S3Listener(sqs=sqs, queue_url=settings.events.sqs_queue_url, ingestor=build_services(settings).s3_ingestor,
                      batch_size=settings.events.sqs_batch_size, wait_seconds=settings.events.sqs_wait_seconds,
                      visibility_timeout=settings.events.sqs_visibility_timeout_seconds)


def main() -> int:
    from imagesearch import logging_setup

    settings = get_settings()
    logging_setup.configure()
    if not settings.events.sqs_queue_url:
        print("IMAGESEARCH_SQS_QUEUE_URL is not set: nothing to listen to", file=sys.stderr)
        return 2
    listener = build(settings)
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    listener.run()
    log.info("stopped: %d messages handled, %d failed", listener.handled, listener.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
