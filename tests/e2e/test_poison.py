"""A message that kills its worker every time: the rest of its batch is indexed, it ends as a dead
letter after max_deliveries attempts, the worker stays up, and the CLI lists and re-drives it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from PIL import Image

from imagesearch import ingest
from imagesearch.blobs import LocalBlobStore
from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.crash_hook import MARKER
from tests.support.images import jpeg
from tests.support.paths import ROOT
from tests.support.processes import child_env, start_worker


def _poison_jpeg() -> bytes:
    """A valid JPEG whose comment carries the marker that makes the test worker's decoder crash."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (250, 0, 0)).save(out, format="JPEG", comment=MARKER)
    return out.getvalue()


def _cli(data_dir, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=child_env(data_dir),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_poison_image_is_dead_lettered_and_its_batch_survives(broker, data_dir):
    # Its own Redis and namespace (tests/e2e/conftest.py): the worker it starts, the CLI it runs
    # and the dead letters they share stay out of every other test's way.
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)

    def add(data: bytes) -> str:
        return ingest.accept(ingest.Upload(data), settings=settings, store=store, blobs=blobs,
                             enqueue=lambda _: None).id

    good = [add(jpeg((i * 30, 90, 160))) for i in range(5)]
    poison = add(_poison_jpeg())
    for image_id in good[:2] + [poison] + good[2:]:  # one batch: the poison sits in the middle
        broker.enqueue_embed(image_id)
    worker = start_worker(data_dir, "worker", extra_args=("-I", "tests.support.crash_hook"),
                          IMAGESEARCH_BATCH_FLUSH_SECONDS="1")
    try:
        wait_until(lambda: all(store.get(i).status == "indexed" for i in good), 180, 0.5, "good images indexed")
        wait_until(lambda: store.get(poison).status == "failed", 180, 0.5, "poison failed")
        record = store.get(poison)
        assert "worker died 3 times" in record.error
        assert worker.popen.poll() is None  # the worker (its parent process) is still alive
        assert worker.output().count("WorkerLostError") >= 3
        dead = {(d["stage"], d["id"]) for d in json.loads(_cli(data_dir, "dead-letters", "list", "--json"))}
        assert ("embed", poison) in dead
        assert not {image_id for _, image_id in dead} & set(good)  # no good image was dead-lettered
        # Each good image was written once: one vector each, no duplicate records.
        assert store.counts()["indexed"] == 5

        assert "re-queued 1" in _cli(data_dir, "dead-letters", "redrive", poison)
        assert poison not in {d["id"] for d in json.loads(_cli(data_dir, "dead-letters", "list", "--json"))}
    finally:
        worker.close()
