"""Reading an image's original bytes, wherever it lives.

``blob_key`` is either a key in the service's own blob storage (uploads, local backfills) or the URI
of an object the service indexes but does not own: ``s3://bucket/key`` with the key percent-encoded
as a URI path (so a key may hold ``?``, ``%``, ``#``, spaces or any Unicode), optionally followed by
``?versionId=...``. S3 objects are read with the one client of :mod:`imagesearch.s3.client`
(which says where its endpoint comes from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from imagesearch.blobs import BlobMissing, BlobStore, BlobUnavailable
from imagesearch.errors import InvalidInput, TooLarge
from imagesearch.imaging import InvalidImage
from imagesearch.s3.client import call_errors, classify, s3_client

if TYPE_CHECKING:
    from botocore.client import BaseClient

_KEY_SAFE = "/!$&'()*+,;=:@"  # besides letters, digits and -._~: everything else is percent-encoded
_CHUNK = 1024 * 1024
# Content types that may hold an image. Anything else (text/html, application/json...) is refused
# before a byte of the body is read; the decoder has the last word on the rest.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/x-binary"})


def s3_uri(bucket: str, key: str, version: str | None = None) -> str:
    uri = f"s3://{bucket}/{quote(key, safe=_KEY_SAFE)}"
    return f"{uri}?versionId={quote(version, safe='')}" if version else uri


def parse_s3_uri(uri: str) -> tuple[str, str, str | None]:
    """(bucket, key, version) of an ``s3://`` URI written by :func:`s3_uri`."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or len(parts.path) < 2:
        raise InvalidInput(f"not an s3://bucket/key URI: {uri!r}")
    version = parse_qs(parts.query).get("versionId", [None])[0] if parts.query else None
    try:
        key = unquote(parts.path[1:], errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the key in {uri!r} does not decode to UTF-8") from exc
    return parts.netloc, key, version


def is_image_content_type(content_type: str | None) -> bool:
    value = (content_type or "").split(";")[0].strip().lower()
    return value in _GENERIC_TYPES or value.startswith("image/")


def read_original(blob_key: str, blobs: BlobStore, max_bytes: int) -> bytes:
    """The bytes, at most ``max_bytes`` (TooLarge past that). BlobMissing / BlobUnavailable as usual."""
    if blob_key.startswith("s3://"):
        bucket, key, version = parse_s3_uri(blob_key)
        return read_s3_object(bucket, key, version, max_bytes)
    return blobs.get(blob_key, max_bytes=max_bytes)


def read_s3_object(bucket: str, key: str, version: str | None, max_bytes: int) -> bytes:
    """Stream at most ``max_bytes`` (+1 to detect more) of an object.

    Too large -> TooLarge; not an image type -> InvalidImage; a failed call -> as
    :func:`~imagesearch.s3.client.classify` says (BlobMissing, BlobUnavailable or S3Refused).
    """
    what = f"s3://{bucket}/{key}" + (f" (version {version})" if version else "")
    request = {"Bucket": bucket, "Key": key}
    if version:
        request["VersionId"] = version
    try:
        response = s3_client().get_object(**request)
    except call_errors() as exc:
        raise classify(exc, what) from exc
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
    except call_errors() as exc:  # the connection broke mid-body
        raise BlobUnavailable(f"{what}: reading failed: {exc}") from exc
    finally:
        body.close()
    if received > max_bytes:
        raise TooLarge(f"{what} is larger than {max_bytes} bytes")
    return b"".join(chunks)


@dataclass(frozen=True)
class ObjectHead:
    """What HEAD says about an object: its user metadata (``x-amz-meta-*`` without the prefix,
    keys lower-case, values decoded), content type, size and etag."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    size: int | None = None
    etag: str | None = None


def decode_metadata_value(value: str) -> str:
    """S3 hands back a non-ASCII metadata value as RFC 2047 encoded words (``=?UTF-8?B?...?=``),
    since HTTP headers are ASCII: a Chinese title set through the console or the CLI reads so."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return value  # not encoded words after all: taken as written


def head_s3_object(bucket: str, key: str, version: str | None = None,
                   client: BaseClient | None = None) -> ObjectHead | None:
    """HEAD of the object (that version, when given); None when it is gone. A failed call raises
    as :func:`~imagesearch.s3.client.classify` says (BlobUnavailable, S3Refused)."""
    what = f"s3://{bucket}/{key}" + (f" (version {version})" if version else "")
    request = {"Bucket": bucket, "Key": key}
    if version:
        request["VersionId"] = version
    try:
        response = (client or s3_client()).head_object(**request)
    except call_errors() as exc:
        error = classify(exc, what)
        if isinstance(error, BlobMissing):
            return None
        raise error from exc
    metadata = {str(k).lower(): decode_metadata_value(str(v)) for k, v in (response.get("Metadata") or {}).items()}
    return ObjectHead(metadata=metadata, content_type=response.get("ContentType"),
                      size=response.get("ContentLength"), etag=(response.get("ETag") or "").strip('"') or None)
