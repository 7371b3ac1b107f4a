"""Reindex on model change: the build-then-swap flow, and the embedded store's rolling re-embed."""

from __future__ import annotations

from pathlib import Path

from imagesearch import ingest, reindex
from imagesearch.blobs import LocalBlobStore
from imagesearch.config import Settings
from imagesearch.dev.tiny_models import build_tiny_clip
from imagesearch.models import get_captioner, get_clip
from imagesearch.models.clip import ClipSpec, load_clip
from imagesearch.pipeline import caption_batch, embed_batch
from imagesearch.stores.base import Filters
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg

# The writes a reindex makes into the index it fills (logged by IndexedEmbedded.for_index).
WRITES = ("put", "set_image_vectors", "set_captions", "set_failed", "delete")


class IndexedEmbedded:
    """The aliased-store protocol over one embedded store per physical index: exercises the reindex
    algorithm (copy, catch-up, bulk-load settings, warm-up, swap) without a cluster, and logs the
    order of those steps in ``events``. OpenSearch's own primitives are covered by the
    request-contract tests and the live store suite."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.indices = {"v1": EmbeddedStore(root / "v1.sqlite3")}
        self.alias = "v1"
        self.swaps: list[str] = []
        self.events: list[tuple] = []
        self.after_first_chunk = None  # a hook to change the live index mid-reindex

    def __getattr__(self, name):  # reads and writes go through the alias
        return getattr(self.indices[self.alias], name)

    def create_index_for_model(self, model_identity, dim, *, bulk_load=False):
        name = f"v{len(self.indices) + 1}"
        self.indices[name] = EmbeddedStore(self.root / f"{name}.sqlite3")
        self.events.append(("create", name, bulk_load))
        return name

    def for_index(self, index):
        store = self.indices[index]
        for method in WRITES:
            setattr(store, method, self._logged(index, method, getattr(store, method)))
        store.put_many = lambda records: [store.put(r) for r in records]
        return store

    def _logged(self, index, method, write):
        def logged(*args, **kwargs):
            self.events.append(("write", index, method))
            return write(*args, **kwargs)
        return logged

    def finish_bulk_load(self, index):
        self.events.append(("finish_bulk_load", index))
        return True

    def warm(self, index):
        self.events.append(("warm", index))
        return {"total": 2, "successful": 2, "failed": 0}

    def swap_aliases(self, new_index):
        self.swaps.append(new_index)
        self.events.append(("swap", new_index))
        self.alias = new_index
        return []

    def iter_records(self, batch_size=500):
        live = self.indices[self.alias]
        ids = [row[0] for row in live._conn().execute("SELECT id FROM images ORDER BY created_at")]
        for n, record in enumerate(live.get_many(ids).values()):
            yield record
            if n == 0 and self.after_first_chunk:
                hook, self.after_first_chunk = self.after_first_chunk, None
                hook()


def test_build_then_swap_never_mixes_models_and_catches_up(tmp_path):
    settings = Settings(data_dir=tmp_path)
    blobs = LocalBlobStore(settings.blob_dir)
    store = IndexedEmbedded(tmp_path)
    old_clip = get_clip(settings)
    new_clip = load_clip(ClipSpec("x", "y", build_tiny_clip(tmp_path / "new-clip", seed=5), "cpu"))
    assert old_clip.identity != new_clip.identity

    def add(colour) -> str:
        record = ingest.accept(ingest.Upload(jpeg(colour, shape="circle")), settings=settings, store=store,
                               blobs=blobs, enqueue=lambda _: None)
        embed_batch([record.id], settings=settings, store=store, blobs=blobs, clip=old_clip)
        caption_batch([record.id], settings=settings, store=store, blobs=blobs, captioner=get_captioner(settings),
                      clip=old_clip)
        return record.id

    ids = [add((i * 60, 100, 50)) for i in range(3)]
    late: list[str] = []
    # While the first pass runs, one image is deleted and one is added on the live index.
    store.after_first_chunk = lambda: (ingest.remove(ids[2], store=store, blobs=blobs), late.append(add((1, 2, 3))))

    report = reindex.reindex_aliased(store, settings=settings, blobs=blobs, clip=new_clip,
                                     captioner=lambda: get_captioner(settings), batch_size=1)
    assert store.swaps == ["v2"] and store.alias == "v2"
    # Filled under bulk-load settings from its creation; after its last write it gets the live
    # settings, then is warmed, then goes live: nothing is written to it between warm-up and swap.
    assert store.events[0] == ("create", "v2", True)
    last_write = max(i for i, event in enumerate(store.events) if event[0] == "write")
    assert {event[1] for event in store.events[:last_write + 1]} == {"v2"}
    assert store.events[last_write + 1:] == [("finish_bulk_load", "v2"), ("warm", "v2"), ("swap", "v2")]
    assert report.replicas_ready is True and report.warmed == {"total": 2, "successful": 2, "failed": 0}
    new = store.indices["v2"]
    assert set(new.get_many(ids + late)) == {ids[0], ids[1], late[0]}  # deletion and late upload caught up
    assert report.removed == 1 and report.caught_up >= 1 and not report.failed
    for record in new.get_many(ids[:2] + late).values():
        assert record.status == "indexed" and record.image_model == new_clip.identity
        assert record.caption_status == "done" and record.text_model == new_clip.identity
    query = new_clip.encode_texts(["circle"])[0]
    assert len(new.knn("image", query, 10, new_clip.identity, Filters())) == 3
    assert new.knn("image", query, 10, old_clip.identity, Filters()) == []  # no old-model vector in v2
    # The old index kept serving the old model throughout, untouched.
    assert len(store.indices["v1"].knn("image", old_clip.encode_texts(["x"])[0], 10, old_clip.identity,
                                       Filters())) == 3


def test_embedded_store_lists_images_to_re_embed(tmp_path):
    settings = Settings(data_dir=tmp_path)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    clip = get_clip(settings)
    done = ingest.accept(ingest.Upload(jpeg()), settings=settings, store=store, blobs=blobs, enqueue=lambda _: None)
    queued = ingest.accept(ingest.Upload(jpeg((0, 0, 9))), settings=settings, store=store, blobs=blobs,
                           enqueue=lambda _: None)
    embed_batch([done.id], settings=settings, store=store, blobs=blobs, clip=clip)
    assert reindex.stale_ids(store, clip.identity) == [queued.id]
    assert reindex.stale_ids(store, "clip:another-model") == [done.id, queued.id]
