"""The one S3 client factory and error classifier."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from imagesearch.blobs import BlobMissing, BlobUnavailable, S3BlobStore
from imagesearch.config import S3Settings, Settings
from imagesearch.s3.client import S3Refused, classify, reset_s3_client, s3_client


def _error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize(("code", "status", "own", "expected"), [
    ("NoSuchKey", 404, False, BlobMissing),
    ("NoSuchKey", 404, True, BlobMissing),
    ("NoSuchBucket", 404, False, BlobMissing),          # a source bucket that is gone: the image fails,
    ("NoSuchBucket", 404, True, BlobUnavailable),       # but our own bucket waits for an operator
    ("PermanentRedirect", 301, True, BlobUnavailable),  # our bucket in another region
    ("AuthorizationHeaderMalformed", 400, True, BlobUnavailable),
    ("PermanentRedirect", 301, False, S3Refused),
    ("InvalidObjectState", 403, False, S3Refused),      # archived: retrying cannot help
    ("AccessDenied", 403, False, BlobUnavailable),
    ("SlowDown", 503, False, BlobUnavailable),
])
def test_classify(code: str, status: int, own: bool, expected: type) -> None:
    error = classify(_error(code, status), "s3://b/k", own_bucket=own)
    assert type(error) is expected
    assert code in str(error)  # the message names S3's reason


def test_blob_storage_alone_uses_the_endpoint_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # boto3's chain, for sources
    reset_s3_client()
    try:
        blobs = S3BlobStore("bucket", "", Settings(s3=S3Settings(endpoint_url="http://127.0.0.1:2")))
        assert blobs.client.meta.endpoint_url == "http://127.0.0.1:2"
        assert s3_client().meta.endpoint_url == "http://127.0.0.1:1"
        assert s3_client() is s3_client()  # one client per process and configuration
    finally:
        reset_s3_client()
