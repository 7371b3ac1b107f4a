"""Reading an image's original bytes, wherever it lives.

``blob_key`` is either a key in the service's own blob storage (uploads, local backfills) or the URI
of an object the service indexes but does not own: ``s3://bucket/key`` with the key percent-encoded
as a URI path (so a key may hold ``?``, ``%``, ``#``, spaces or any Unicode), optionally followed by
``?versionId=...``. S3 objects are read with boto3, whose usual configuration chain supplies the
endpoint (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``: MinIO, R2 and other S3-compatible
stores), the region and the credentials.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import parse_qs, quote, unquote, urlsplit

from imagesearch.blobs import BlobMissing, BlobStore, BlobUnavailable
from imagesearch.errors import InvalidInput, TooLarge
from imagesearch.imaging import InvalidImage

_KEY_SAFE = "/!$&'()*+,;=:@"  # besides letters, digits and -._~: everything else is percent-encoded
_CHUNK = 1024 * 1024
# Content types that may hold an image. Anything else (text/html, application/json...) is refused
# before a byte of the body is read; the decoder has the last word on the rest.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/x-binary"})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"})
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                              "ServiceUnavailable", "RequestTimeTooSkewed", "AccessDenied", "403",
                              "ExpiredToken", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


def s3_uri(bucket: str, key: str, version: str | None = None) -> str:
    uri = f"s3://{bucket}/{quote(key, safe=_KEY_SAFE)}"
    return f"{uri}?versionId={quote(version, safe='')}" if version else uri


def parse_s3_uri(uri: str) -> tuple[str, str, str | None]:
    """(bucket, key, version) of an ``s3://`` URI written by :func:`s3_uri`."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or len(parts.path) < 2:
        raise InvalidInput(f"not an s3://bucket/key URI: {uri!r}")
    version = parse_qs(parts.query).get("versionId", [None])[0] if parts.query else None
    return parts.netloc, unquote(parts.path[1:], errors="strict"), version


def is_image_content_type(content_type: str | None) -> bool:
    value = (content_type or "").split(";")[0].strip().lower()
    return value in _GENERIC_TYPES or value.startswith("image/")


def read_original(blob_key: str, blobs: BlobStore, max_bytes: int) -> bytes:
    """The bytes, at most ``max_bytes`` (ValueError past that). BlobMissing / BlobUnavailable as usual."""
    if blob_key.startswith("s3://"):
        bucket, key, version = parse_s3_uri(blob_key)
        return read_s3_object(bucket, key, version, max_bytes)
    return blobs.get(blob_key, max_bytes=max_bytes)


def read_s3_object(bucket: str, key: str, version: str | None, max_bytes: int) -> bytes:
    """Stream at most ``max_bytes`` (+1 to detect more) of an object.

    NoSuchKey / NoSuchVersion -> BlobMissing (permanent); throttling, 5xx, connection and read
    errors, and credential problems an operator can fix -> BlobUnavailable (retried with backoff);
    too large -> ValueError; other refusals (an archived object...) -> ValueError (permanent).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    what = f"s3://{bucket}/{key}" + (f" (version {version})" if version else "")
    request = {"Bucket": bucket, "Key": key}
    if version:
        request["VersionId"] = version
    try:
        response = s3_client().get_object(**request)
    except ClientError as exc:
        raise _classify(exc, what) from exc
    except (BotoCoreError, OSError) as exc:
        raise BlobUnavailable(f"{what}: {exc}") from exc
    body = response["Body"]
    try:
        length = response.get("ContentLength")
        if length is not None and length > max_bytes:
            raise TooLarge(f"{what} is {length} bytes, the limit is {max_bytes}")
        content_type = response.get("ContentType")
        if not is_image_content_type(content_type):
            raise InvalidImage(f"{what} has content type {content_type!r}, not an image")
        chunks: list[bytes] = []
        received = 0
        while received <= max_bytes:
            chunk = body.read(min(_CHUNK, max_bytes + 1 - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except (BotoCoreError, OSError) as exc:  # the connection broke mid-body
        raise BlobUnavailable(f"{what}: reading failed: {exc}") from exc
    finally:
        body.close()
    if received > max_bytes:
        raise TooLarge(f"{what} is larger than {max_bytes} bytes")
    return b"".join(chunks)


def _classify(exc, what: str) -> Exception:
    error = exc.response.get("Error", {}) if hasattr(exc, "response") else {}
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _MISSING_CODES or (status == 404 and not code):
        return BlobMissing(what)
    if code in _TRANSIENT_CODES or status >= 500 or status in (403, 429):
        return BlobUnavailable(f"{what}: {code or status}: {error.get('Message', '')}")
    return ValueError(f"{what}: S3 refused the read: {code or status} {error.get('Message', '')}".rstrip())


# -- one client per process ----------------------------------------------------------------------

_clients: dict[int, object] = {}
_clients_lock = threading.Lock()


def s3_client():
    """A boto3 S3 client for this process (clients are thread-safe but must not cross a fork)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _clients_lock:
            client = _clients.get(pid)
            if client is None:
                import boto3
                from botocore.config import Config

                from imagesearch.config import get_settings

                config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10,
                                read_timeout=60, max_pool_connections=16,
                                s3={"addressing_style": get_settings().s3_addressing_style})
                # A session of its own: creating clients from the shared default session is not thread-safe.
                client = boto3.session.Session().client("s3", config=config)
                _clients.clear()  # a client inherited from the parent process is never used again
                _clients[pid] = client
    return client


def reset_s3_client() -> None:
    """Forget the cached client (tests that change the AWS environment)."""
    with _clients_lock:
        _clients.clear()
