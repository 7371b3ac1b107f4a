"""Blob storage for originals and thumbnails: a local folder by default, S3 when configured."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imagesearch.config import Settings
from imagesearch.errors import ConfigurationError, InvalidInput, PermanentError, TooLarge, TransientError

if TYPE_CHECKING:
    from botocore.client import BaseClient


class BlobMissing(PermanentError):
    """The blob does not exist (permanent for the task that wanted it)."""


class BlobUnavailable(TransientError):
    """The blob store cannot be reached right now (transient)."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get(self, key: str, max_bytes: int | None = None) -> bytes: ...
    def delete(self, key: str) -> None: ...


def original_key(image_id: str) -> str:
    return f"originals/{image_id[:2]}/{image_id}"


def thumbnail_key(image_id: str) -> str:
    return f"thumbs/{image_id[:2]}/{image_id}.jpg"


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise InvalidInput(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file, a crash never leaves one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise BlobMissing(key) from exc
        except OSError as exc:
            raise BlobUnavailable(f"{key}: {exc}") from exc
        if max_bytes is not None and len(data) > max_bytes:
            raise TooLarge(f"blob {key} is larger than {max_bytes} bytes")
        return data

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore:
    """Blobs under ``prefix`` in ``bucket``, through the one S3 client (:mod:`imagesearch.s3.client`)."""

    def __init__(self, bucket: str, prefix: str = "", settings: Settings | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings

    # Imported here, not at the top: the S3 client module builds on this module's error types, and
    # a process with local blob storage never loads boto3.
    @property
    def client(self) -> BaseClient:
        """Looked up per call, so a store opened before a fork never uses the parent's client."""
        from imagesearch.s3.client import s3_client

        if self.settings is None:
            return s3_client()
        return s3_client(endpoint_url=self.settings.s3.endpoint_url,
                         addressing_style=self.settings.s3.addressing_style)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        from imagesearch.s3.client import call_errors, classify

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, ContentType=content_type)
        except call_errors() as exc:
            raise classify(exc, f"s3 put {key}", writing=True, own_bucket=True) from exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        from imagesearch.s3.client import call_errors, classify

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except call_errors() as exc:
            raise classify(exc, f"s3 get {key}", own_bucket=True) from exc
        body = response["Body"]
        try:
            data = body.read() if max_bytes is None else body.read(max_bytes + 1)
        except call_errors() as exc:  # the connection broke mid-body
            raise BlobUnavailable(f"s3 get {key}: reading failed: {exc}") from exc
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise TooLarge(f"blob {key} is larger than {max_bytes} bytes")
        return data

    def delete(self, key: str) -> None:
        from imagesearch.s3.client import call_errors, classify

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except call_errors() as exc:
            raise classify(exc, f"s3 delete {key}", writing=True, own_bucket=True) from exc


def open_blobs(settings: Settings) -> BlobStore:
    if settings.blobs.backend == "s3":
        if not settings.s3.bucket:
            raise ConfigurationError("IMAGESEARCH_BLOB_BACKEND=s3 needs IMAGESEARCH_S3_BUCKET")
        return S3BlobStore(settings.s3.bucket, settings.s3.prefix, settings)
    return LocalBlobStore(settings.blob_dir)
