"""Reading an image's original bytes, wherever it lives.

``blob_key`` is either a key in the service's own blob storage (uploads) or a URI of an object the
service indexes but does not own (``s3://bucket/key``, optionally ``?versionId=...``).
"""

from __future__ import annotations

from imagesearch.blobs import BlobStore


def read_original(blob_key: str, blobs: BlobStore, max_bytes: int) -> bytes:
    """The bytes, at most ``max_bytes`` (ValueError past that). BlobMissing / BlobUnavailable as usual."""
    if blob_key.startswith("s3://"):
        raise NotImplementedError("s3:// sources arrive with S3 event ingestion")
    return blobs.get(blob_key, max_bytes=max_bytes)
