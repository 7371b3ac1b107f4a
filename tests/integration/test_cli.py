"""The CLI as operators run it: help texts, status."""

from __future__ import annotations

import json
import subprocess
import sys

from imagesearch import ingest
from imagesearch.blobs import LocalBlobStore
from imagesearch.config import Settings
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg
from tests.support.paths import ROOT
from tests.support.processes import child_env


def _cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=child_env(data_dir),
                          capture_output=True, text=True, timeout=120)


def test_every_command_has_help(data_dir):
    top = _cli(data_dir, "--help")
    assert top.returncode == 0
    commands = ["serve", "worker", "search", "status", "demo", "eval", "backfill", "reconcile", "reindex",
                "keys", "dead-letters", "models"]
    for command in commands:
        assert command in top.stdout
        sub = _cli(data_dir, command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, (command, sub.stderr)


def test_status_reports_counts_queues_and_failures(data_dir, redis_client):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    record = ingest.accept(ingest.Upload(jpeg()), settings=settings, store=store, blobs=blobs, enqueue=lambda _: None)
    store.set_failed(record.id, record.content_hash, "embed", "broken on purpose")
    result = _cli(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["store"]["failed"] == 1 and set(report["queues"]) == {"embed", "caption"}
    assert report["latest_failures"][0]["error"] == "embed: broken on purpose"
