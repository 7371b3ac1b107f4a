"""Re-embedding every image after a model change.

OpenSearch (zero downtime): a new versioned index is built for the new model identity from the
stored originals while the read alias keeps serving the old one; records changed meanwhile are
caught up; then the read and write aliases move in one atomic ``_aliases`` call. The new index
only ever holds vectors of the new model, so the two models' vectors never mix. It is filled with
refresh off and no replicas, and given its live replicas and refresh interval, refreshed and
warmed (its k-NN graphs loaded into memory) before the swap, so the first searches on it are not
the ones that load them.

Embedded store: vectors are kept per model identity and search filters on it, so a model change
is a rolling re-embed: every record whose vector is not from the configured model is queued
again. Until the workers finish, searches with the new model see only re-embedded images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from imagesearch import pipeline
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.models import Captioner, ClipEncoder
from imagesearch.records import ImageRecord
from imagesearch.stores.base import CaptionUpdate, Store

log = logging.getLogger(__name__)


class AliasedStore(Store, Protocol):
    """A store with versioned physical indices behind read/write aliases (OpenSearch)."""

    def create_index_for_model(self, model_identity: str | None, dim: int | None, *,
                               bulk_load: bool = False) -> str: ...
    def finish_bulk_load(self, index: str) -> bool: ...
    def warm(self, index: str) -> dict[str, int]: ...
    def for_index(self, index: str) -> AliasedStore: ...
    def swap_aliases(self, new_index: str) -> list[dict]: ...
    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]: ...
    def put_many(self, records: Iterable[ImageRecord]) -> None: ...


@dataclass
class ReindexReport:
    index: str | None = None
    copied: int = 0
    embedded: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    caught_up: int = 0
    removed: int = 0
    replicas_ready: bool | None = None  # every replica copied before the warm-up
    warmed: dict[str, int] = field(default_factory=dict)  # the warm-up's shard counts
    seconds: float = 0.0


def _chunks(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    chunk: list[ImageRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy(records: list[ImageRecord], target: AliasedStore, *, settings: Settings, blobs: BlobStore,
          clip: ClipEncoder, captioner: Callable[[], Captioner], report: ReindexReport) -> None:
    """Write the records into the new index and embed them there with the new model."""
    target.put_many(records)
    ids = [r.id for r in records]
    outcome = pipeline.embed_batch(ids, settings=settings, store=target, blobs=blobs, clip=clip)
    if outcome.retry:
        raise RuntimeError(f"{len(outcome.retry)} images could not be read right now; run reindex again "
                           f"(first: {next(iter(outcome.retry.values()))})")
    report.failed.update(outcome.failed)
    report.embedded += len(outcome.done)
    done = set(outcome.done)
    # A caption written by the configured captioner is kept and only its text vector is renewed;
    # any other caption is written anew.
    cap = captioner()
    reuse = [r for r in records if r.id in done and r.caption is not None and r.caption_model == cap.identity]
    if reuse:
        vectors = clip.encode_texts([r.caption for r in reuse])
        target.set_captions([CaptionUpdate(id=r.id, content_hash=r.content_hash, caption=r.caption, vector=v,
                                           caption_model=cap.identity, text_model=clip.identity)
                             for r, v in zip(reuse, vectors)])
    fresh = [i for i in outcome.done if i not in {r.id for r in reuse}]
    if fresh:
        pipeline.caption_batch(fresh, settings=settings, store=target, blobs=blobs, captioner=cap, clip=clip)
    report.copied += len(records)


def reindex_aliased(store: AliasedStore, *, settings: Settings, blobs: BlobStore, clip: ClipEncoder,
                    captioner: Callable[[], Captioner], batch_size: int = 64,
                    progress: Callable[[ReindexReport], None] | None = None) -> ReindexReport:
    """Build the new model's index beside the live one, catch up, warm it, then swap the aliases."""
    report = ReindexReport()
    started = time.time()
    # Bulk-load settings from its creation: no replica is ever built twice, no refresh cuts small
    # segments. Nothing below searches the new index; reads by id are real-time without a refresh.
    new_index = store.create_index_for_model(clip.identity, clip.dim, bulk_load=True)
    report.index = new_index
    target = store.for_index(new_index)
    seen: dict[str, float] = {}
    for chunk in _chunks(store.iter_records(), batch_size):
        seen.update({r.id: r.updated_at for r in chunk})
        _copy(chunk, target, settings=settings, blobs=blobs, clip=clip, captioner=captioner, report=report)
        if progress:
            progress(report)
    # Catch up with what changed while the first pass ran: new or re-uploaded records, deletions.
    live = {}
    changed = []
    for record in store.iter_records():
        live[record.id] = record
        if record.id not in seen or record.updated_at > seen[record.id]:
            changed.append(record)
    for chunk in _chunks(changed, batch_size):
        _copy(chunk, target, settings=settings, blobs=blobs, clip=clip, captioner=captioner, report=report)
        report.caught_up += len(chunk)
    for image_id in set(seen) - set(live):
        report.failed.pop(image_id, None)  # deleted mid-copy: its original may be gone too
        if target.delete(image_id) is not None:
            report.removed += 1
    # Last write done: live settings, a refresh, the replicas, then the graphs into memory (the
    # warm-up loads only segments that exist, hence after all of that).
    report.replicas_ready = store.finish_bulk_load(new_index)
    report.warmed = store.warm(new_index)
    store.swap_aliases(new_index)
    report.seconds = time.time() - started
    log.info("reindexed into %s: %s", new_index, report)
    return report


def stale_ids(store: Store, model: str) -> list[str]:
    """Ids of records whose image vector is missing or from another model (embedded store)."""
    from imagesearch.stores.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        raise TypeError("stale_ids reads the embedded store's table directly")
    return store.ids_not_embedded_by(model)
