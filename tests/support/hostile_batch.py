"""test_hostile_images*.py's batch: the hostile corpus mixed with good images, staged for an embed
worker as objects from a bucket would arrive (past the API's checks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagesearch.blobs import LocalBlobStore, original_key
from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.records import ImageRecord, content_hash
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.broker import enqueue_embed
from tests.support.hostile import corpus
from tests.support.images import jpeg


@dataclass(frozen=True)
class HostileBatch:
    settings: Settings
    store: EmbeddedStore
    blobs: LocalBlobStore
    expected: dict[str, str]  # image id -> the status it must end in

    def settled(self, timeout: float = 120) -> dict[str, ImageRecord]:
        """Every record of the batch once none is ``queued`` any more."""
        wait_until(lambda: all(r.status != "queued" for r in self.store.get_many(self.expected).values()), timeout,
                   0.5, what="every file settled")
        return self.store.get_many(self.expected)


def stage_batch(data_dir: Path, prefix: str, good_size: tuple[int, int] = (96, 64)) -> HostileBatch:
    """Four good JPEGs of ``good_size`` and the :func:`corpus`, ids ``<prefix>000`` on, in the
    store and blob storage of ``data_dir`` with one embed message each on this run's broker."""
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    files = {f"good-{i}.jpg": (jpeg((i * 40, 120, 30), size=good_size), "indexed") for i in range(4)} | corpus()
    expected: dict[str, str] = {}
    for n, (name, (data, outcome)) in enumerate(files.items()):
        image_id = f"{prefix}{n:03d}"
        # Written past the API's header check, as an object from a bucket would arrive.
        blobs.put(original_key(image_id), data)
        store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash=content_hash(data),
                              source=name))
        expected[image_id] = outcome
    for image_id in expected:
        enqueue_embed(image_id)
    return HostileBatch(settings, store, blobs, expected)
