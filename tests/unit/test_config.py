"""Settings: what the environment means."""

from __future__ import annotations

import warnings

import pytest

from imagesearch.config import IngestSettings, Settings


def test_tests_never_read_a_developers_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("IMAGESEARCH_DECODE_MIN_SIDE=999\n")
    monkeypatch.chdir(tmp_path)
    assert Settings().ingest.decode_min_side == IngestSettings.model_fields["decode_min_side"].default


def test_the_deprecated_queue_prefix_still_names_the_namespace(monkeypatch):
    monkeypatch.delenv("IMAGESEARCH_REDIS_NAMESPACE", raising=False)
    monkeypatch.setenv("IMAGESEARCH_QUEUE_PREFIX", "old-")
    with pytest.warns(FutureWarning, match="REDIS_NAMESPACE"):
        settings = Settings()
    assert settings.redis.namespace == "old-" and settings.keys.queue("embed") == "old-embed"
    assert settings.keys.api_keys == "imagesearch:old-api-keys"  # where existing keys already live


def test_the_namespace_wins_over_the_deprecated_prefix(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_REDIS_NAMESPACE", "new-")
    monkeypatch.setenv("IMAGESEARCH_QUEUE_PREFIX", "old-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert Settings().redis.namespace == "new-"


def test_an_empty_s3_prefix_is_the_bucket_root_and_empty_extensions_filter_nothing(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_S3_PREFIX", "")
    monkeypatch.setenv("IMAGESEARCH_S3_IMAGE_EXTENSIONS", "")
    monkeypatch.setenv("IMAGESEARCH_S3_ENDPOINT_URL", "")
    monkeypatch.setenv("IMAGESEARCH_S3_WEBHOOK_TOKEN", "")
    s3 = Settings().s3
    assert s3.prefix == "" and s3.image_extensions == ""
    assert s3.endpoint_url is None and s3.webhook_token is None  # optional: empty is unset


def test_an_empty_variable_elsewhere_means_unset(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_CLIP_MODEL_DIR", "")
    monkeypatch.setenv("IMAGESEARCH_STORE", "")
    settings = Settings()
    assert settings.models.clip_model_dir is None and settings.storage.backend == "embedded"
