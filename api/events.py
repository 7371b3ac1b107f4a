"""S3 events over HTTP: webhooks (MinIO, Lambda) and SNS HTTP(S) subscriptions.

* ``POST /v1/events/s3``: an S3-format event (``{"Records": [...]}``, an EventBridge event, or an
  SNS envelope) from a MinIO webhook target or a Lambda function. Needs
  ``IMAGESEARCH_S3_WEBHOOK_TOKEN`` set and sent back as ``Authorization: Bearer <token>`` (MinIO's
  ``auth_token``); with no token configured the endpoint is off (403).
* ``POST /v1/events/sns``: an SNS HTTP subscription. Every message must carry a valid SNS
  signature (SignatureVersion 1 or 2) made with a certificate served over https from an SNS host,
  for a topic in ``IMAGESEARCH_SNS_TOPIC_ALLOWLIST``. A SubscriptionConfirmation is confirmed (GET
  its SubscribeURL) only after that verification.

Both answer 200 with what each event did, ``{"results": [{"id","action","reason",...}], ...}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from flask import Blueprint, Flask, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.context import services
from api.errors import ApiError
from api.openapi import Resp, spec
from imagesearch.s3.event_log import EventLog, EventLogUnavailable
from imagesearch.s3.events import EventFormatError, ParsedMessage, parse_notification
from imagesearch.s3.ingest import S3Ingestor
from imagesearch.s3.sns import SnsVerificationError, SnsVerifier, check_sns_url
from imagesearch.taskqueue import QueueUnavailable
from schemas.api import ErrorOut

log = logging.getLogger(__name__)
bp = Blueprint("events", __name__, url_prefix="/v1/events")
TAGS = ["events"]


# --- documentation models (the views parse the bodies themselves: see imagesearch.s3.events) -----

class S3EventIn(BaseModel):
    """An S3 event notification (``Records``), an EventBridge S3 event, or an SNS envelope of either."""

    model_config = ConfigDict(extra="allow")

    Records: list[dict[str, Any]] | None = Field(default=None, description="S3 event records (keys URL-encoded).")


class SnsMessageIn(BaseModel):
    """An SNS HTTP(S) delivery: Notification, SubscriptionConfirmation or UnsubscribeConfirmation."""

    model_config = ConfigDict(extra="allow")

    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str
    TopicArn: str = Field(description="Must be in IMAGESEARCH_SNS_TOPIC_ALLOWLIST.")
    Message: str = Field(description="For notifications: an S3 event notification or EventBridge event (JSON).")
    Timestamp: str
    SignatureVersion: Literal["1", "2"]
    Signature: str
    SigningCertURL: str = Field(description="https on sns.<region>.amazonaws.com(.cn).")
    Subject: str | None = None
    SubscribeURL: str | None = None
    Token: str | None = None


class EventResultOut(BaseModel):
    id: str = Field(description="The image id of the object (from bucket and key).")
    action: Literal["queued", "requeued", "unchanged", "failed", "removed", "absent", "stale", "ignored"]
    reason: str
    bucket: str
    key: str


class EventResultsOut(BaseModel):
    results: list[EventResultOut]
    test_events: int = Field(description="s3:TestEvent messages acknowledged.")
    ignored: int = Field(description="Records of event types that neither create nor remove an object.")


class SnsOut(BaseModel):
    confirmed: bool | None = None
    unsubscribed: bool | None = None
    topic: str | None = None
    results: list[EventResultOut] | None = None
    test_events: int | None = None
    ignored: int | None = None

_EXTENSION = "imagesearch.events"
MAX_EVENT_BYTES = 1024 * 1024  # S3 notifications are at most 64 KB, SNS messages 256 KB


def _default_http_get(url: str) -> int:
    import requests

    response = requests.get(url, timeout=10, allow_redirects=False)
    return response.status_code


class EventServices:
    """What the event views need, built once per app. Tests replace ``fetch_cert``/``http_get``."""

    def __init__(self, fetch_cert: Callable[[str], bytes] | None = None, http_get: Callable[[str], int] | None = None,
                 event_log: EventLog | None = None) -> None:
        svc = services()
        self.settings = svc.settings
        self.verifier = SnsVerifier([t.strip() for t in svc.settings.events.sns_topic_allowlist.split(",")], fetch_cert)
        self.http_get = http_get or _default_http_get
        self.ingestor = svc.s3_ingestor if event_log is None else S3Ingestor(
            settings=svc.settings, store=svc.store, blobs=svc.blobs, enqueue=svc.enqueue_embed, event_log=event_log)


_build_lock = threading.Lock()


def configure(app: Flask, *, fetch_cert: Callable[[str], bytes] | None = None,
              http_get: Callable[[str], int] | None = None, event_log: EventLog | None = None) -> None:
    """Choose how certificates are fetched, how subscriptions are confirmed, and the event log."""
    app.extensions[_EXTENSION + ".options"] = {"fetch_cert": fetch_cert, "http_get": http_get, "event_log": event_log}
    app.extensions.pop(_EXTENSION, None)


def event_services() -> EventServices:
    found = current_app.extensions.get(_EXTENSION)
    if found is None:
        with _build_lock:
            found = current_app.extensions.get(_EXTENSION)
            if found is None:
                found = EventServices(**current_app.extensions.get(_EXTENSION + ".options", {}))
                current_app.extensions[_EXTENSION] = found
    return found


def _body() -> bytes:
    if (request.content_length or 0) > MAX_EVENT_BYTES:
        raise ApiError(413, "too_large", f"an event message is at most {MAX_EVENT_BYTES} bytes")
    data = request.get_data(cache=False)
    if len(data) > MAX_EVENT_BYTES:
        raise ApiError(413, "too_large", f"an event message is at most {MAX_EVENT_BYTES} bytes")
    if not data.strip():
        raise ApiError(400, "empty_body", "send the event as a JSON body")
    return data


def _apply(parsed: ParsedMessage) -> dict:
    """Apply the events; 503 (the sender retries) when the event log or the broker is unreachable."""
    try:
        results = event_services().ingestor.apply_all(parsed.events)
    except EventLogUnavailable as exc:
        raise ApiError(503, "event_log_unavailable", str(exc)) from exc
    except (QueueUnavailable, ConnectionError, TimeoutError) as exc:
        raise ApiError(503, "broker_unavailable", f"could not queue the work: {exc}") from exc
    return {"results": [r.as_dict() for r in results], "test_events": parsed.test_events, "ignored": parsed.ignored}


def _parse(data: bytes | str) -> ParsedMessage:
    try:
        return parse_notification(data)
    except EventFormatError as exc:
        raise ApiError(400, "invalid_event", str(exc)) from exc


@bp.post("/s3")
@spec.validate(json=S3EventIn, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=(EventResultsOut, "What each event did."), HTTP_400=(ErrorOut, "Not an S3 event."),
    HTTP_401=(ErrorOut, "Missing or wrong token."), HTTP_403=(ErrorOut, "Webhooks are off (no token configured)."),
    HTTP_413=(ErrorOut, "Larger than 1 MiB."), HTTP_503=(ErrorOut, "Store or event log unavailable.")))
def s3_webhook():
    """Apply S3 events from a webhook (MinIO, Lambda).

    Needs `Authorization: Bearer <IMAGESEARCH_S3_WEBHOOK_TOKEN>`. Created objects are recorded and
    queued for indexing, removed ones leave the index; duplicates and late deliveries converge.
    """
    token = services().settings.s3.webhook_token
    if not token:
        raise ApiError(403, "webhook_disabled", "set IMAGESEARCH_S3_WEBHOOK_TOKEN to accept S3 webhooks")
    sent = request.headers.get("Authorization", "")
    if sent.lower().startswith("bearer "):
        sent = sent[7:]
    if not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong token (Authorization: Bearer <token>)")
    return jsonify(_apply(_parse(_body())))


@bp.post("/sns")
@spec.validate(json=SnsMessageIn, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=(SnsOut, "Confirmed, unsubscribed, or what each event did."),
    HTTP_400=(ErrorOut, "Not an SNS message, or not an S3 event inside."),
    HTTP_403=(ErrorOut, "Bad signature, certificate URL off SNS, or topic not allowed."),
    HTTP_502=(ErrorOut, "SNS did not accept the subscription confirmation."),
    HTTP_503=(ErrorOut, "Store or event log unavailable.")))
def sns():
    """Receive an SNS HTTP(S) subscription delivery.

    Every message must be signed by SNS (SignatureVersion 1 or 2) for a topic in
    `IMAGESEARCH_SNS_TOPIC_ALLOWLIST`; a SubscriptionConfirmation is confirmed only after that.
    """
    data = _body()
    try:
        envelope = json.loads(data)
    except ValueError as exc:
        raise ApiError(400, "invalid_message", f"the body is not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise ApiError(400, "invalid_message", "the body is not an SNS message")
    declared = request.headers.get("x-amz-sns-message-type")
    if declared and declared != envelope.get("Type"):
        raise ApiError(400, "invalid_message", "x-amz-sns-message-type does not match the message Type")
    events = event_services()
    try:
        events.verifier.verify(envelope)
    except SnsVerificationError as exc:
        status = 400 if exc.code == "invalid_message" else 403
        log.warning("refused an SNS message: %s: %s", exc.code, exc)
        raise ApiError(status, exc.code, str(exc)) from exc
    kind = envelope["Type"]
    if kind == "SubscriptionConfirmation":
        try:
            url = check_sns_url(envelope.get("SubscribeURL"))
        except SnsVerificationError as exc:
            raise ApiError(403, "invalid_subscribe_url", str(exc)) from exc
        try:
            status = events.http_get(url)
        except Exception as exc:  # SNS unreachable: it retries the confirmation
            raise ApiError(502, "confirmation_failed", f"could not confirm the subscription: {exc}") from exc
        if not 200 <= status < 300:
            raise ApiError(502, "confirmation_failed", f"SNS answered {status} to the confirmation")
        log.info("confirmed the SNS subscription to %s", envelope["TopicArn"])
        return jsonify({"confirmed": True, "topic": envelope["TopicArn"]})
    if kind == "UnsubscribeConfirmation":
        log.info("unsubscribed from %s", envelope["TopicArn"])
        return jsonify({"unsubscribed": True, "topic": envelope["TopicArn"]})
    return jsonify(_apply(_parse(envelope["Message"])))
