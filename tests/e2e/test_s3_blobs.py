"""Originals and thumbnails in S3 (moto server mode) instead of the local folder."""

from __future__ import annotations

import uuid

import boto3
import requests

from imagesearch.dev.procs import wait_until
from tests.support.images import jpeg
from tests.support.processes import start_api, start_worker


def test_upload_index_and_delete_with_s3_blob_storage(redis_client, data_dir, aws_env):
    bucket = f"blobs-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    extra = {**aws_env, "IMAGESEARCH_BLOB_BACKEND": "s3", "IMAGESEARCH_S3_BUCKET": bucket,
             "IMAGESEARCH_S3_PREFIX": "is/"}
    api, base = start_api(data_dir, **extra)
    worker = start_worker(data_dir, "worker", **extra)
    try:
        image_id = requests.post(base + "/v1/images", files={"file": ("a.jpg", jpeg(shape="circle"))},
                                 timeout=30).json()["id"]
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert keys == {f"is/originals/{image_id[:2]}/{image_id}"}
        wait_until(lambda: requests.get(f"{base}/v1/images/{image_id}", timeout=30).json()["caption_status"] == "done",
                   60, what="captioned")
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert f"is/thumbs/{image_id[:2]}/{image_id}.jpg" in keys
        thumb = requests.get(f"{base}/v1/images/{image_id}/thumbnail", timeout=30)
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert requests.delete(f"{base}/v1/images/{image_id}", timeout=30).status_code == 204
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    finally:
        worker.close()
        api.close()
