"""S3 object events: parsing every delivery format into one :class:`ObjectEvent`, and SNS verification.

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

Other S3 event types (restore, tagging, ACL, replication...) are counted as ignored.

SNS signatures: :class:`SnsVerifier` checks SignatureVersion 1 (SHA1) and 2 (SHA256) signatures
with the certificate at ``SigningCertURL``, which must be https on an SNS host
(``sns.<region>.amazonaws.com`` or ``.com.cn``), and the topic against an allowlist. Fetching the
certificate is a function the caller may replace (tests serve a local certificate); the URL rule
applies either way.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal
from urllib.parse import unquote_plus, urlsplit

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
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return None


# -- SNS signatures ----------------------------------------------------------------------------

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_MAX_CERT_BYTES = 64 * 1024


class SnsVerificationError(PermanentError):
    """The envelope is not provably from SNS for an allowed topic. ``code`` says which check failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_sns_url(url: Any) -> str:
    """``url`` if it is https on an SNS host (no credentials, default port), else SnsVerificationError."""
    if not isinstance(url, str):
        raise SnsVerificationError("invalid_cert_url", "the URL is missing")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SnsVerificationError("invalid_cert_url", f"malformed URL {url!r}") from exc
    host = parts.hostname or ""
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443) \
            or not SNS_HOST.match(host) or parts.netloc.lower() not in (host, f"{host}:443"):
        raise SnsVerificationError("invalid_cert_url", f"{url!r} is not an https URL on an SNS host")
    return url


def default_fetch_cert(url: str) -> bytes:
    """Download the signing certificate (TLS-verified; the URL was checked first)."""
    import requests

    try:
        with requests.get(url, timeout=10, stream=True, allow_redirects=False) as response:
            response.raise_for_status()
            data = response.raw.read(_MAX_CERT_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise SnsVerificationError("cert_unavailable", f"cannot fetch the signing certificate: {exc}") from exc
    if len(data) > _MAX_CERT_BYTES:
        raise SnsVerificationError("invalid_cert", "the signing certificate is implausibly large")
    return data


def string_to_sign(envelope: dict) -> bytes:
    """The canonical text SNS signs: ``name\\nvalue\\n`` for each signed field present, in order."""
    kind = envelope.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise SnsVerificationError("invalid_message", f"unknown SNS message type {kind!r}")
    lines: list[str] = []
    for name in _SIGNED_FIELDS[kind]:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsVerificationError("invalid_message", f"the SNS message has no {name}")
        lines += [name, value]
    return ("\n".join(lines) + "\n").encode("utf-8")


class SnsVerifier:
    """Verifies SNS envelopes: signature, certificate URL, topic allowlist. Certificates are cached."""

    def __init__(self, topic_allowlist: Iterable[str], fetch_cert: Callable[[str], bytes] | None = None,
                 cache_seconds: float = 3600.0) -> None:
        self.topics = frozenset(t for t in topic_allowlist if t)
        self.fetch_cert = fetch_cert or default_fetch_cert
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def verify(self, envelope: Any) -> dict:
        """The envelope when every check passes; SnsVerificationError naming the first that fails."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        if not isinstance(envelope, dict) or envelope.get("Type") not in SNS_TYPES:
            raise SnsVerificationError("invalid_message", "not an SNS message")
        topic = envelope.get("TopicArn")
        if topic not in self.topics:  # checked before anything is fetched for it
            raise SnsVerificationError("topic_not_allowed", f"topic {topic!r} is not in the allowlist")
        version = envelope.get("SignatureVersion")
        algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}.get(version)
        if algorithm is None:
            raise SnsVerificationError("invalid_signature", f"unsupported SignatureVersion {version!r}")
        try:
            signature = base64.b64decode(_string_or_error(envelope.get("Signature")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsVerificationError("invalid_signature", "the signature is not base64") from exc
        message = string_to_sign(envelope)
        public_key = self._public_key(check_sns_url(envelope.get("SigningCertURL")))
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsVerificationError("invalid_cert", "the signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsVerificationError("invalid_signature", "the signature does not match the message") from None
        return envelope

    def _public_key(self, url: str):
        from cryptography import x509

        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached and now - cached[0] < self.cache_seconds:
            certificate = cached[1]
        else:
            pem = self.fetch_cert(url)
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise SnsVerificationError("invalid_cert", f"the signing certificate cannot be read: {exc}") from exc
            with self._lock:
                self._cache[url] = (now, certificate)
        moment = datetime.now(timezone.utc)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise SnsVerificationError("invalid_cert", "the signing certificate is not valid now")
        return certificate.public_key()


def _string_or_error(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SnsVerificationError("invalid_signature", "the message has no signature")
    return value
