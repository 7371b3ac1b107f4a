"""S3 object events: parsing every delivery format into one :class:`ObjectEvent`.

Formats understood (nested in any order, up to a few levels):

* S3 event notifications (``{"Records": [...]}``) as S3 sends them to SQS, SNS, Lambda or a MinIO
  webhook. Keys in these are URL-encoded form-style (``+`` is a space): decoded with
  :func:`urllib.parse.unquote_plus`.
* ``s3:TestEvent`` (sent when a notification configuration is saved): acknowledged, ignored.
* SNS envelopes (``{"Type": "Notification", "Message": "<json>"}``), as SQS receives them from an
  SNS subscription without raw delivery, or as an HTTP subscription receives them.
* EventBridge events (``"source": "aws.s3"``, ``"detail-type": "Object Created" | "Object Deleted"``).
  EventBridge carries the key as it is (not URL-encoded), so it is not decoded.
* Lambda's SQS and SNS trigger events (records with ``eventSource: aws:sqs`` / ``aws:sns``).

Other S3 event types (restore, tagging, ACL, replication...) are counted as ignored. Whether an
SNS envelope really comes from SNS is :mod:`imagesearch.s3.sns`'s business, not this parser's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from imagesearch.errors import PermanentError

Kind = Literal["created", "removed"]

MAX_KEY_BYTES = 1024  # S3's limit for an object key (UTF-8)
_MAX_DEPTH = 4
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


class EventFormatError(PermanentError):
    """The message is not an S3 event in any format this service understands."""


@dataclass(frozen=True)
class ObjectEvent:
    """One change to one object, whatever format it arrived in."""

    bucket: str
    key: str  # decoded: the key exactly as S3 stores it
    kind: Kind
    version: str | None = None
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None  # upper-case hex, None when the source gives none
    event_name: str = ""
    event_time: float | None = None  # epoch seconds
    delete_marker: bool = False
    content_type: str | None = None  # MinIO includes it; S3 does not
    configuration_id: str | None = None
    # From a bucket listing (backfill), not a notification: event_time is LastModified, whole seconds.
    from_listing: bool = False


@dataclass
class ParsedMessage:
    events: list[ObjectEvent] = field(default_factory=list)
    test_events: int = 0
    ignored: int = 0  # records of event types that neither create nor remove an object


# -- sequencers --------------------------------------------------------------------------------

def normalize_sequencer(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _HEX.match(value):
        raise EventFormatError(f"sequencer must be a hexadecimal string, got {value!r}")
    return value.upper()


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as event ``a`` happened before, with, or after event ``b`` (same object key).

    As AWS documents it: sequencers may differ in length; pad the shorter one on the right with
    zeros, then compare lexicographically (the greater value is the later event).
    """
    a, b = a.upper(), b.upper()
    width = max(len(a), len(b))
    a, b = a.ljust(width, "0"), b.ljust(width, "0")
    return (a > b) - (a < b)


# -- parsing -----------------------------------------------------------------------------------

def parse_notification(body: str | bytes | dict | list) -> ParsedMessage:
    """Every object event in one delivered message (an SQS body, an HTTP request body)."""
    out = ParsedMessage()
    _parse(_load(body), out, 0)
    return out


def _load(body: str | bytes | dict | list) -> Any:
    if isinstance(body, (dict, list)):
        return body
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventFormatError("the message is not UTF-8") from exc
    try:
        return json.loads(body)
    except (TypeError, ValueError) as exc:
        raise EventFormatError(f"the message is not JSON: {exc}") from exc


def _parse(doc: Any, out: ParsedMessage, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise EventFormatError("the message nests envelopes too deeply")
    if not isinstance(doc, dict):
        raise EventFormatError("the message is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        out.test_events += 1
    elif "Records" in doc:
        records = doc["Records"]
        if not isinstance(records, list):
            raise EventFormatError("Records must be a list")
        for record in records:
            _parse_record(record, out, depth)
    elif doc.get("Type") in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation") \
            and "TopicArn" in doc:
        if doc["Type"] != "Notification":
            out.ignored += 1  # only HTTP endpoints act on these (see api/events.py)
            return
        message = doc.get("Message")
        if not isinstance(message, str):
            raise EventFormatError("SNS Message must be a string")
        _parse(_load(message), out, depth + 1)
    elif "detail-type" in doc and "detail" in doc:
        _parse_eventbridge(doc, out)
    else:
        raise EventFormatError("not an S3 event notification, SNS envelope or EventBridge event")


def _parse_record(record: Any, out: ParsedMessage, depth: int) -> None:
    if not isinstance(record, dict):
        raise EventFormatError("each record must be an object")
    source = record.get("eventSource") or record.get("EventSource")
    if source == "aws:sqs":  # Lambda's SQS trigger: the body is the delivered message
        _parse(_load(_string(record.get("body"), "body")), out, depth + 1)
        return
    if source == "aws:sns":  # Lambda's SNS trigger
        sns = record.get("Sns")
        if not isinstance(sns, dict):
            raise EventFormatError("Sns must be an object")
        _parse(_load(_string(sns.get("Message"), "Sns.Message")), out, depth + 1)
        return
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise EventFormatError("an S3 event record needs an s3 object")
    name = _string(record.get("eventName"), "eventName")
    if name.startswith("s3:"):  # MinIO spells event names with the prefix
        name = name[3:]
    kind = _kind_of(name)
    if kind is None:
        out.ignored += 1
        return
    bucket = _bucket_name(s3.get("bucket"))
    obj = s3.get("object")
    if not isinstance(obj, dict):
        raise EventFormatError("s3.object must be an object")
    raw_key = _string(obj.get("key"), "s3.object.key")
    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError as exc:
        raise EventFormatError("the object key does not decode to UTF-8") from exc
    out.events.append(ObjectEvent(
        bucket=bucket, key=_check_key(key), kind=kind, version=_version(obj.get("versionId")),
        size=_size(obj.get("size")), etag=_etag(obj.get("eTag", obj.get("etag"))),
        sequencer=normalize_sequencer(obj.get("sequencer")), event_name=name,
        event_time=_time(record.get("eventTime")), delete_marker=name.endswith("DeleteMarkerCreated"),
        content_type=_optional_string(obj.get("contentType")),
        configuration_id=_optional_string(s3.get("configurationId")),
    ))


def _kind_of(event_name: str) -> Kind | None:
    if event_name.startswith("ObjectCreated:"):
        return "created"
    if event_name.startswith(("ObjectRemoved:", "LifecycleExpiration:Delete")):
        return "removed"
    return None


def _parse_eventbridge(doc: dict, out: ParsedMessage) -> None:
    if doc.get("source") != "aws.s3":
        raise EventFormatError(f"EventBridge events from {doc.get('source')!r} are not S3 events")
    detail_type = doc.get("detail-type")
    kind: Kind | None = {"Object Created": "created", "Object Deleted": "removed"}.get(detail_type)
    if kind is None:
        out.ignored += 1
        return
    detail = doc["detail"]
    if not isinstance(detail, dict) or not isinstance(detail.get("object"), dict):
        raise EventFormatError("detail.object must be an object")
    obj = detail["object"]
    reason = _optional_string(detail.get("reason")) or ""
    deletion = _optional_string(detail.get("deletion-type")) or ""
    out.events.append(ObjectEvent(
        bucket=_bucket_name(detail.get("bucket")), key=_check_key(_string(obj.get("key"), "detail.object.key")),
        kind=kind, version=_version(obj.get("version-id")), size=_size(obj.get("size")),
        etag=_etag(obj.get("etag", obj.get("eTag"))), sequencer=normalize_sequencer(obj.get("sequencer")),
        event_name=f"{detail_type}:{reason or deletion}".rstrip(":"), event_time=_time(doc.get("time")),
        delete_marker=deletion == "Delete Marker Created",
    ))


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise EventFormatError(f"{what} must be a string")
    return value


def _optional_string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _bucket_name(bucket: Any) -> str:
    if not isinstance(bucket, dict):
        raise EventFormatError("bucket must be an object")
    name = _string(bucket.get("name"), "bucket.name")
    if not name or len(name) > 255 or "/" in name:
        raise EventFormatError(f"invalid bucket name {name!r}")
    return name


def _check_key(key: str) -> str:
    if not key:
        raise EventFormatError("the object key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise EventFormatError(f"the object key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _version(value: Any) -> str | None:
    if value in (None, "", "null"):  # "null" is S3's id for objects written while unversioned
        return None
    return _string(value, "versionId")


def _size(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EventFormatError("size must be a number")
    try:
        size = int(value)
    except (TypeError, ValueError) as exc:
        raise EventFormatError(f"size must be a number, got {value!r}") from exc
    if size < 0:
        raise EventFormatError("size must not be negative")
    return size


def _etag(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _string(value, "eTag").strip('"') or None


def _time(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None  # a time is a hint for ordering, never a reason to refuse an event
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None
