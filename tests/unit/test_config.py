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
    with pytest.warns(DeprecationWarning, match="REDIS_NAMESPACE"):
        settings = Settings()
    assert settings.redis.namespace == "old-" and settings.keys.queue("embed") == "old-embed"
    assert settings.keys.api_keys == "imagesearch:old-api-keys"  # where existing keys already live


def test_the_namespace_wins_over_the_deprecated_prefix(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_REDIS_NAMESPACE", "new-")
    monkeypatch.setenv("IMAGESEARCH_QUEUE_PREFIX", "old-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert Settings().redis.namespace == "new-"
