"""Re-embedding every image after a model change.

OpenSearch (zero downtime, no write lost): a new versioned index is built for the new model
identity from the stored originals while the read and write aliases stay on the old one; records
changed meanwhile are caught up by a second scan; then the read and write aliases move in one
atomic ``_aliases`` call. The new index only ever holds vectors of the new model, so the two
models' vectors never mix. It is filled with refresh off and no replicas, and given its live
replicas and refresh interval, refreshed and warmed (its k-NN graphs loaded into memory) before
the swap, so the first searches on it are not the ones that load them.

Writes keep going to the old index until the swap, and the replica wait and warm-up can take
minutes, so a last pass after the swap carries over what they changed there (uploads, re-uploads,
edits, captions, deletions). No writer reaches the old index any more: it gets a write block,
which returns once the writes still in flight on its shards are done, and a refresh, so one scan
sees all it took. Every record whose ``updated_at`` differs from the version the reindex copied
(or that it never copied) is copied again, and every record the reindex copied that the old index
no longer holds is deleted. The new index is live by then, so each of those writes is conditional
on its document still being the one the reindex left there, or still absent (OpenSearch's
``if_seq_no``/``if_primary_term`` and ``create``): a document written through the aliases
after the swap (a re-upload, an edit, a deletion, a worker's caption) is left as that write made
it, even where the write was a partial update of the stale copy (ARCHITECTURE.md, Known limits).
Versions, not clocks, decide, because ``updated_at`` comes from each writer's own clock. The old
index then gets its writes back (also when the pass fails) and stays for rollback.

Embedded store: vectors are kept per model identity and search filters on it, so a model change
is a rolling re-embed: every record whose vector is not from the configured model is queued
again. Until the workers finish, searches with the new model see only re-embedded images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagesearch import pipeline
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.models import Captioner, ClipEncoder
from imagesearch.records import ImageRecord
from imagesearch.stores.base import CaptionUpdate, Store

log = logging.getLogger(__name__)

# A document's version in one index, changed by every write to it (OpenSearch: seq_no, primary term).
Version = Hashable


class AliasedStore(Store, Protocol):
    """A store with versioned physical indices behind read/write aliases (OpenSearch)."""

    write_alias: str

    def create_index_for_model(self, model_identity: str | None, dim: int | None, *,
                               bulk_load: bool = False) -> str: ...
    def finish_bulk_load(self, index: str) -> bool: ...
    def warm(self, index: str) -> dict[str, int]: ...
    def for_index(self, index: str) -> AliasedStore: ...
    def swap_aliases(self, new_index: str) -> list[dict[str, Any]]: ...
    def block_writes(self, index: str) -> bool: ...
    def unblock_writes(self, index: str) -> None: ...
    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]: ...
    def put_many(self, records: Iterable[ImageRecord]) -> None: ...
    def versions(self, ids: Iterable[str]) -> dict[str, Version]: ...
    def put_many_if(self, records: Iterable[ImageRecord], expected: Mapping[str, Version]) -> list[str]: ...
    def delete_many_if(self, expected: Mapping[str, Version]) -> list[str]: ...


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
    # The pass after the swap: records changed in the old index after their copy (or never
    # copied) copied again; records deleted there after their copy deleted; records the new index
    # changed after the swap as well, left as it has them; whether the old index's write block
    # held (None: there was no old index).
    reconciled_after_swap: int = 0
    removed_after_swap: int = 0
    newer_after_swap: int = 0
    old_writes_blocked: bool | None = None
    seconds: float = 0.0


@dataclass
class _Copies:
    """What the reindex put into the new index, per id: the old index's ``updated_at`` of the
    version copied, and the new index's version of the document the copy left."""

    source: dict[str, float] = field(default_factory=dict)
    written: dict[str, Version] = field(default_factory=dict)

    def add(self, records: list[ImageRecord], target: AliasedStore) -> None:
        self.source.update({r.id: r.updated_at for r in records})
        self.written.update(target.versions([r.id for r in records]))

    def forget(self, image_id: str) -> None:
        self.source.pop(image_id, None)
        self.written.pop(image_id, None)

    def changed(self, record: ImageRecord) -> bool:
        """Written in the old index since it was copied, or never copied."""
        return self.source.get(record.id) != record.updated_at


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
          clip: ClipEncoder, captioner: Callable[[], Captioner], report: ReindexReport,
          expected: Mapping[str, Version] | None = None) -> tuple[list[ImageRecord], dict[str, str]]:
    """Write the records into the new index and embed them there with the new model. With
    ``expected`` (after the swap), a record is written only where the new index still holds that
    version of it, or nothing if it has no entry. Returns the records written, and those of their
    ids whose originals could not be read right now, with the reason."""
    if expected is None:
        target.put_many(records)
    else:
        written = set(target.put_many_if(records, expected))
        records = [r for r in records if r.id in written]
        if not records:
            return records, {}
    ids = [r.id for r in records]
    for image_id in ids:  # a version copied earlier may have failed; this one has not yet
        report.failed.pop(image_id, None)
    outcome = pipeline.embed_batch(ids, settings=settings, store=target, blobs=blobs, clip=clip)
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
    return records, outcome.retry


def _unreadable(retry: dict[str, str]) -> RuntimeError:
    return RuntimeError(f"{len(retry)} images could not be read right now; run reindex again "
                        f"(first: {next(iter(retry.values()))})")


def reindex_aliased(store: AliasedStore, *, settings: Settings, blobs: BlobStore, clip: ClipEncoder,
                    captioner: Callable[[], Captioner], batch_size: int = 64,
                    progress: Callable[[ReindexReport], None] | None = None) -> ReindexReport:
    """Build the new model's index beside the live one, catch up, warm it, swap the aliases, then
    carry over what was written to the old index since the catch-up scan began."""
    report = ReindexReport()
    started = time.time()

    def copy(chunk: list[ImageRecord], **kwargs: Any) -> tuple[list[ImageRecord], dict[str, str]]:
        return _copy(chunk, target, settings=settings, blobs=blobs, clip=clip, captioner=captioner, report=report,
                     **kwargs)

    # Bulk-load settings from its creation: no replica is ever built twice, no refresh cuts small
    # segments. Nothing below searches the new index; reads by id are real-time without a refresh.
    new_index = store.create_index_for_model(clip.identity, clip.dim, bulk_load=True)
    report.index = new_index
    target = store.for_index(new_index)
    copies = _Copies()
    for chunk in _chunks(store.iter_records(), batch_size):
        _, retry = copy(chunk)
        if retry:
            raise _unreadable(retry)
        copies.add(chunk, target)
        if progress:
            progress(report)
    # Catch up with what changed while the first pass ran: new or re-uploaded records, deletions.
    live: set[str] = set()
    changed = []
    for record in store.iter_records():
        live.add(record.id)
        if copies.changed(record):
            changed.append(record)
    for chunk in _chunks(changed, batch_size):
        _, retry = copy(chunk)
        if retry:
            raise _unreadable(retry)
        copies.add(chunk, target)
        report.caught_up += len(chunk)
    for image_id in set(copies.source) - live:
        report.failed.pop(image_id, None)  # deleted mid-copy: its original may be gone too
        copies.forget(image_id)
        if target.delete(image_id) is not None:
            report.removed += 1
    # Last write before the swap: live settings, a refresh, the replicas, then the graphs into
    # memory (the warm-up loads only segments that exist, hence after all of that).
    report.replicas_ready = store.finish_bulk_load(new_index)
    report.warmed = store.warm(new_index)
    old_index = _previous_write_index(store.swap_aliases(new_index), store.write_alias)
    if old_index is not None:
        try:
            _carry_over(store, old_index, target, copies, copy, batch_size, report, progress)
        except BaseException:
            log.exception("the aliases point at %s now, but carrying over the writes made to %s since the catch-up "
                          "scan failed: they are missing from %s", new_index, old_index, new_index)
            raise
    report.seconds = time.time() - started
    log.info("reindexed into %s: %s", new_index, report)
    return report


def _previous_write_index(actions: list[dict[str, Any]], write_alias: str) -> str | None:
    """The index the swap took the write alias from: where the writes the new index missed went."""
    for action in actions:
        remove = action.get("remove") or {}
        if remove.get("alias") == write_alias:
            return remove["index"]
    return None


def _carry_over(store: AliasedStore, old_index: str, target: AliasedStore, copies: _Copies,
                copy: Callable[..., tuple[list[ImageRecord], dict[str, str]]], batch_size: int,
                report: ReindexReport, progress: Callable[[ReindexReport], None] | None) -> None:
    """The pass after the swap (module docstring): from the old index, frozen, into the live new one."""
    try:
        report.old_writes_blocked = store.block_writes(old_index)
        live: set[str] = set()
        changed = []
        for record in store.for_index(old_index).iter_records():
            live.add(record.id)
            if copies.changed(record):
                changed.append(record)
        for chunk in _chunks(changed, batch_size):
            # No entry for a record never copied: it is written only if the new index still lacks it.
            expected = {r.id: copies.written[r.id] for r in chunk if r.id in copies.written}
            written, retry = copy(chunk, expected=expected)
            report.reconciled_after_swap += len(written)
            report.newer_after_swap += len(chunk) - len(written)
            for image_id, reason in retry.items():  # the swap is done: report them rather than stop
                report.failed[image_id] = f"left queued in {report.index} after the alias swap: {reason}"
            if progress:
                progress(report)
        gone = {image_id: version for image_id, version in copies.written.items() if image_id not in live}
        removed = target.delete_many_if(gone)
        report.removed_after_swap += len(removed)
        report.newer_after_swap += len(gone) - len(removed)
        for image_id in removed:
            report.failed.pop(image_id, None)
        log.info("after the swap to %s: %d records copied again from %s, %d deleted, %d left as the new index has "
                 "them (written there after the swap)", report.index, report.reconciled_after_swap, old_index,
                 report.removed_after_swap, report.newer_after_swap)
    finally:
        # Also when block_writes itself failed midway (None): the block may be on, and the old index
        # must take writes again to stay a rollback target.
        if report.old_writes_blocked is not False:
            try:
                store.unblock_writes(old_index)
            except Exception:  # the pass's own error, if any, is the one to raise
                log.exception("could not lift the write block of %s: lift it with PUT %s/_settings "
                              '{"index.blocks.write": false}', old_index, old_index)


def stale_ids(store: Store, model: str) -> list[str]:
    """Ids of records whose image vector is missing or from another model (embedded store)."""
    from imagesearch.stores.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        raise TypeError("stale_ids reads the embedded store's table directly")
    return store.ids_not_embedded_by(model)
