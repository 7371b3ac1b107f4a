"""The one S3 client factory and the one reading of a failed S3 call.

Every S3 call the service makes (its own blob storage, originals it indexes in other buckets,
listings for backfill and reconcile) gets its client from :func:`s3_client` and turns a failure
into a domain error with :func:`classify`.

Endpoints: the service's own blob storage may live elsewhere than the buckets it indexes (MinIO
next to the workers, originals in AWS), so blob storage passes ``IMAGESEARCH_S3_ENDPOINT_URL`` and
source reads and listings use boto3's own chain (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``,
then AWS). Region and credentials come from boto3's chain either way.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from imagesearch.blobs import BlobMissing, BlobUnavailable
from imagesearch.config import get_settings
from imagesearch.errors import ImageSearchError, PermanentError

if TYPE_CHECKING:
    from botocore.client import BaseClient

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"})
# The service's own bucket misconfigured (missing, another region, a bad signature region): an
# operator fixes it, and until then every image would fail, so the work waits instead.
_OWN_BUCKET_UNAVAILABLE = frozenset({"NoSuchBucket", "PermanentRedirect", "301", "AuthorizationHeaderMalformed",
                                     "IllegalLocationConstraintException"})
# Throttling and 5xx pass by themselves; credential and permission problems are an operator's to
# fix, so the work waits for them instead of failing images for good.
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                              "ServiceUnavailable", "RequestTimeTooSkewed", "AccessDenied", "403",
                              "ExpiredToken", "InvalidAccessKeyId", "SignatureDoesNotMatch"})


class S3Refused(PermanentError):
    """S3 refused the call for good (an archived object, an invalid request): retrying cannot help."""


def call_errors() -> tuple[type[BaseException], ...]:
    """What a boto3 S3 call raises when it fails; ``except call_errors()`` then :func:`classify`."""
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, OSError


def classify(exc: BaseException, what: str, *, writing: bool = False, own_bucket: bool = False) -> ImageSearchError:
    """The domain error for a failed S3 call on ``what`` (one of :func:`call_errors`).

    Missing -> BlobMissing (for a write: BlobUnavailable, since only the bucket can be missing and an
    operator can create it); throttling, 5xx, credentials, connection and read errors, and in the
    service's own bucket (``own_bucket``) a missing or misplaced bucket -> BlobUnavailable (retried
    with backoff); any other refusal -> S3Refused.
    """
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return BlobUnavailable(f"{what}: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if own_bucket and (code in _OWN_BUCKET_UNAVAILABLE or status == 301):
        return BlobUnavailable(f"{what}: {code or status}: {error.get('Message', '')}".rstrip(": "))
    missing = code in _MISSING_CODES or (status == 404 and not code)
    if missing and not writing:
        return BlobMissing(f"{what} ({code or status})")
    # A 403 names its reason: AccessDenied waits for an operator, InvalidObjectState (an archived
    # object) is a refusal for good. Only a 403 without a code (a HEAD request) counts as transient.
    if missing or code in _TRANSIENT_CODES or status >= 500 or status == 429 or (status == 403 and not code):
        return BlobUnavailable(f"{what}: {code or status}: {error.get('Message', '')}".rstrip(": "))
    return S3Refused(f"{what}: S3 refused the call: {code or status} {error.get('Message', '')}".rstrip())


# Clients are thread-safe but must not cross a fork (Celery's prefork pool, gunicorn): one per
# process, endpoint and addressing style.
_clients: dict[tuple[int, object], BaseClient] = {}
_clients_lock = threading.Lock()


def s3_client(*, endpoint_url: str | None = None, addressing_style: str | None = None) -> BaseClient:
    """This process's boto3 S3 client for an endpoint (None: boto3's chain decides) and addressing
    style (None: ``IMAGESEARCH_S3_ADDRESSING_STYLE``)."""
    style = addressing_style or get_settings().s3.addressing_style
    key = (os.getpid(), endpoint_url or None, style)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _new_client(endpoint_url or None, style)
                # A client inherited from the parent process is never used again.
                for stale in [k for k in _clients if k[0] != key[0]]:
                    del _clients[stale]
                _clients[key] = client
    return client


def reset_s3_client() -> None:
    """Forget the cached clients (tests that change the AWS environment)."""
    with _clients_lock:
        _clients.clear()


def _new_client(endpoint_url: str | None, addressing_style: str) -> BaseClient:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    max_pool_connections=16, s3={"addressing_style": addressing_style})
    # A session of its own: creating clients from boto3's shared default session is not thread-safe.
    return boto3.session.Session().client("s3", config=config, endpoint_url=endpoint_url)
