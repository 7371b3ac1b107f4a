"""Reindex on model change: the build-then-swap flow, and the embedded store's rolling re-embed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from imagesearch import ingest, reindex
from imagesearch.blobs import BlobUnavailable, LocalBlobStore
from imagesearch.config import Settings
from imagesearch.dev.tiny_models import build_tiny_clip
from imagesearch.models import get_captioner, get_clip
from imagesearch.models.clip import ClipSpec, load_clip
from imagesearch.pipeline import caption_batch, embed_batch
from imagesearch.records import content_hash
from imagesearch.stores.base import CaptionUpdate, Filters, RecordPatch, StoreUnavailable
from imagesearch.stores.embedded import EmbeddedStore
from imagesearch.stores.opensearch import StoreRejected
from imagesearch.stores.opensearch.mapping import index_name
from tests.fakes.opensearch import FakeOpenSearch, Request, error_body
from tests.support.images import jpeg
from tests.unit.stores import test_opensearch_contract as contract

# The writes a reindex makes into the index it fills (logged by IndexedEmbedded.for_index).
WRITES = ("put", "set_image_vectors", "set_captions", "set_failed", "delete")


class IndexedEmbedded:
    """The aliased-store protocol over one embedded store per physical index: exercises the reindex
    algorithm (copy, catch-up, bulk-load settings, warm-up, swap, the pass after the swap) without a
    cluster, and logs the order of those steps in ``events``. A document's version is the embedded
    store's ``seq`` (renewed by every write), so the conditional writes behave as OpenSearch's
    ``if_seq_no`` ones. OpenSearch's own primitives are covered by the request-contract tests below
    and in tests/unit/stores/test_opensearch_contract.py, and by the live store suite."""

    write_alias = "write"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.indices = {"v1": EmbeddedStore(root / "v1.sqlite3")}
        self.alias = "v1"
        self.swaps: list[str] = []
        self.events: list[tuple] = []
        self.blocked: set[str] = set()
        # Hooks to write through the aliases at the dangerous moments of a reindex.
        self.after_first_chunk = None  # during the first pass
        self.on_warm = None  # after the catch-up scan, before the swap
        self.after_swap = None  # after the swap, before the pass that follows it

    def __getattr__(self, name):  # reads and writes go through the alias
        return getattr(self.indices[self.alias], name)

    def create_index_for_model(self, model_identity, dim, *, bulk_load=False):
        name = f"v{len(self.indices) + 1}"
        self.indices[name] = EmbeddedStore(self.root / f"{name}.sqlite3")
        self.events.append(("create", name, bulk_load))
        return name

    def for_index(self, index):
        store = self.indices[index]
        if getattr(store, "bound", False):
            return store
        store.bound = True
        for method in WRITES:
            setattr(store, method, self._logged(index, method, getattr(store, method)))
        store.put_many = lambda records: [store.put(r) for r in records]

        def versions(ids):
            ids = list(ids)
            rows = store._conn().execute(f"SELECT id, seq FROM images WHERE id IN ({', '.join('?' * len(ids))})", ids)
            return dict(rows.fetchall())

        def put_many_if(records, expected):
            records = [r for r in records if versions([r.id]).get(r.id) == expected.get(r.id)]
            store.put_many(records)
            return [r.id for r in records]

        def delete_many_if(expected):
            current = versions(expected)
            return [i for i, v in expected.items() if current.get(i) == v and store.delete(i) is not None]

        store.versions, store.put_many_if, store.delete_many_if = versions, put_many_if, delete_many_if
        return store

    def _logged(self, index, method, write):
        def logged(*args, **kwargs):
            assert index not in self.blocked, f"{method} into {index} while its writes are blocked"
            self.events.append(("write", index, method))
            return write(*args, **kwargs)
        return logged

    def finish_bulk_load(self, index):
        self.events.append(("finish_bulk_load", index))
        return True

    def warm(self, index):
        self.events.append(("warm", index))
        if self.on_warm:
            self.on_warm()
        return {"total": 2, "successful": 2, "failed": 0}

    def swap_aliases(self, new_index):
        old, self.alias = self.alias, new_index
        self.swaps.append(new_index)
        self.events.append(("swap", new_index))
        if self.after_swap:
            self.after_swap()
        return [{"remove": {"index": old, "alias": "read"}}, {"remove": {"index": old, "alias": "write"}},
                {"add": {"index": new_index, "alias": "read"}},
                {"add": {"index": new_index, "alias": "write", "is_write_index": True}}]

    def block_writes(self, index):
        self.events.append(("block_writes", index))
        self.blocked.add(index)
        return True

    def unblock_writes(self, index):
        self.events.append(("unblock_writes", index))
        self.blocked.discard(index)

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
    # Nothing changed after the catch-up scan, so the pass after the swap writes nothing either.
    assert store.events[last_write + 1:] == [("finish_bulk_load", "v2"), ("warm", "v2"), ("swap", "v2"),
                                             ("block_writes", "v1"), ("unblock_writes", "v1")]
    assert (report.reconciled_after_swap, report.removed_after_swap, report.newer_after_swap) == (0, 0, 0)
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


# -- writes at the dangerous moments: after the catch-up scan, and after the swap -----------------


@dataclass
class World:
    """An aliased store with records embedded and captioned by the old model, and a new model to
    reindex with."""

    settings: Settings
    blobs: LocalBlobStore
    store: IndexedEmbedded
    old_clip: object
    new_clip: object

    def add(self, colour, external_id, *, clip=None, **fields) -> str:
        """Upload (or re-upload: same external id, same record id) through the write alias, then
        embed and caption it as the workers would, with ``clip`` (the old model by default)."""
        upload = ingest.Upload(jpeg(colour, shape="circle"), external_id=external_id, **fields)
        record = ingest.accept(upload, settings=self.settings, store=self.store, blobs=self.blobs,
                               enqueue=lambda _: None)
        clip = clip or self.old_clip
        embed_batch([record.id], settings=self.settings, store=self.store, blobs=self.blobs, clip=clip)
        caption_batch([record.id], settings=self.settings, store=self.store, blobs=self.blobs,
                      captioner=get_captioner(self.settings), clip=clip)
        return record.id

    def reindex(self) -> reindex.ReindexReport:
        return reindex.reindex_aliased(self.store, settings=self.settings, blobs=self.blobs, clip=self.new_clip,
                                       captioner=lambda: get_captioner(self.settings), batch_size=2)


@pytest.fixture
def world(tmp_path) -> World:
    settings = Settings(data_dir=tmp_path)
    new_clip = load_clip(ClipSpec("x", "y", build_tiny_clip(tmp_path / "new-clip", seed=5), "cpu"))
    return World(settings, LocalBlobStore(settings.blob_dir), IndexedEmbedded(tmp_path), get_clip(settings), new_clip)


def test_writes_after_the_catch_up_scan_reach_the_new_index(world):
    """An upload, a re-upload, an edit, a caption and a deletion made through the write alias
    while the new index warms (after the catch-up scan, before the swap) are all in the new index
    after the reindex, embedded with the new model."""
    store, settings = world.store, world.settings
    reuploaded, edited, captioned, deleted, untouched = (world.add((i * 40, 90, 60), f"img-{i}") for i in range(5))
    new_image = jpeg((10, 200, 240), shape="circle")
    late: list[str] = []
    before_swap = {}

    def during_warm_up():
        assert store.alias == "v1"  # the write alias still points at the old index
        before_swap["vector"] = store.indices["v2"].vector(reuploaded, "image")[0]
        late.append(world.add((250, 250, 0), "img-late"))
        assert world.add((10, 200, 240), "img-0") == reuploaded  # new content under the same id
        store.patch(edited, RecordPatch(title="edited during the warm-up"))
        record = store.get(captioned)
        store.set_captions([CaptionUpdate(
            id=captioned, content_hash=record.content_hash, caption="a caption written during the warm-up",
            vector=world.old_clip.encode_texts(["a caption"])[0],
            caption_model=get_captioner(settings).identity, text_model=world.old_clip.identity)])
        assert ingest.remove(deleted, store=store, blobs=world.blobs)

    store.on_warm = during_warm_up
    report = world.reindex()

    assert store.alias == "v2"
    got = store.get_many([reuploaded, edited, captioned, deleted, untouched, *late])  # through the read alias
    assert set(got) == {reuploaded, edited, captioned, untouched, late[0]}
    for record in got.values():
        assert record.status == "indexed" and record.image_model == world.new_clip.identity
        assert record.caption_status == "done" and record.text_model == world.new_clip.identity
    assert got[reuploaded].content_hash == content_hash(new_image)
    vector, model = store.vector(reuploaded, "image")
    assert model == world.new_clip.identity and not (vector == before_swap["vector"]).all()  # the new image's
    assert got[edited].title == "edited during the warm-up"
    assert got[captioned].caption == "a caption written during the warm-up"  # kept: the configured captioner's
    assert store.vector(captioned, "caption")[1] == world.new_clip.identity
    # The new model's vectors answer searches for the late upload; none of the old model's is there.
    query = world.new_clip.encode_texts(["circle"])[0]
    assert late[0] in dict(store.knn("image", query, 10, world.new_clip.identity, Filters()))
    assert store.knn("image", query, 10, world.old_clip.identity, Filters()) == []
    assert (report.reconciled_after_swap, report.removed_after_swap, report.newer_after_swap) == (4, 1, 0)
    assert report.old_writes_blocked is True and not report.failed
    # The old index was frozen while it was read, and given its writes back afterwards (rollback).
    swap = store.events.index(("swap", "v2"))
    assert store.events[swap + 1] == ("block_writes", "v1") and store.events[-1] == ("unblock_writes", "v1")
    assert {e[1] for e in store.events[swap + 1:] if e[0] == "write"} == {"v2"}
    assert store.blocked == set()


def test_writes_after_the_swap_are_never_overwritten_or_deleted_by_the_pass_after_it(world):
    """Records changed in the old index after the catch-up scan and then again through the aliases
    after the swap keep their later version: a re-upload is not overwritten by the older copy, a
    deletion is not undone, a record re-uploaded after its deletion from the old index is not
    deleted, and an upload made after the swap stays."""
    store = world.store
    reuploaded, readded, deleted_later, kept = (world.add((i * 50, 40, 90), f"img-{i}") for i in range(4))
    new_image = jpeg((0, 255, 128), shape="circle")
    fresh: list[str] = []

    def during_warm_up():  # the old index changes after the catch-up scan
        store.patch(reuploaded, RecordPatch(title="old edit"))
        assert ingest.remove(readded, store=store, blobs=world.blobs)
        store.patch(deleted_later, RecordPatch(title="old edit"))
        store.patch(kept, RecordPatch(title="carried over"))

    def after_swap():  # through the aliases, now on the new index, with the new model's workers
        assert store.alias == "v2"
        world.add((0, 255, 128), "img-0", clip=world.new_clip, title="uploaded after the swap")
        world.add((7, 7, 7), "img-1", clip=world.new_clip)
        assert ingest.remove(deleted_later, store=store, blobs=world.blobs)
        fresh.append(world.add((99, 0, 0), "img-fresh", clip=world.new_clip))

    store.on_warm, store.after_swap = during_warm_up, after_swap
    report = world.reindex()

    got = store.get_many([reuploaded, readded, deleted_later, kept, *fresh])
    assert set(got) == {reuploaded, readded, kept, fresh[0]}
    assert got[reuploaded].title == "uploaded after the swap"
    assert got[reuploaded].content_hash == content_hash(new_image)
    assert got[readded].content_hash == content_hash(jpeg((7, 7, 7), shape="circle"))
    assert got[kept].title == "carried over"  # the one change the new index did not also have
    for record in got.values():
        assert record.status == "indexed" and record.image_model == world.new_clip.identity
    assert (report.reconciled_after_swap, report.removed_after_swap, report.newer_after_swap) == (1, 0, 3)



def test_an_original_unreadable_after_the_swap_is_reported_and_the_pass_goes_on(world, monkeypatch):
    """After the swap there is no going back: an image whose original cannot be read right then
    is left queued in the new index and reported, and the rest of the pass is done."""
    store, blobs = world.store, world.blobs
    kept = world.add((30, 60, 90), "img-kept")
    late: list[str] = []

    def during_warm_up():
        late.append(world.add((200, 10, 10), "img-late"))
        late.append(world.add((10, 10, 200), "img-late-2"))
        store.patch(kept, RecordPatch(title="edited"))

    def after_swap():
        unreadable = store.indices["v1"].get(late[0]).blob_key
        get = blobs.get

        def flaky_get(key, max_bytes=None):
            if key == unreadable:
                raise BlobUnavailable("the blob store is not answering")
            return get(key, max_bytes=max_bytes)

        monkeypatch.setattr(blobs, "get", flaky_get)

    store.on_warm, store.after_swap = during_warm_up, after_swap
    report = world.reindex()

    got = store.get_many([kept, *late])
    assert got[late[0]].status == "queued"
    assert "left queued" in report.failed[late[0]] and "not answering" in report.failed[late[0]]
    assert got[late[1]].status == "indexed" and got[kept].title == "edited"
    assert report.reconciled_after_swap == 3 and set(report.failed) == {late[0]}
    assert store.events[-1] == ("unblock_writes", "v1")


def test_a_pass_that_fails_after_the_block_still_lifts_it(world, monkeypatch):
    """The old index stays the rollback target: when the pass fails once the block is on (here the
    refresh that follows it), the reindex raises and the block is lifted."""
    store = world.store
    world.add((30, 60, 90), "img-0")
    block = store.block_writes

    def block_then_fail(index):
        block(index)
        raise StoreUnavailable("the refresh after the block timed out")

    monkeypatch.setattr(store, "block_writes", block_then_fail)
    with pytest.raises(StoreUnavailable, match="refresh after the block"):
        world.reindex()
    assert store.blocked == set() and store.events[-1] == ("unblock_writes", "v1")


# -- the OpenSearch primitives of the pass after the swap, against the spec-checking fake --------
# (the fake fixture checks every request, and every canned answer, against the OpenSearch API
# specification and the store's mapping when the test ends)

fake = contract.fake  # the fake OpenSearch whose requests and answers are checked at the end of each test
make_store, mapping_response = contract.make_store, contract.mapping_response
OLD = contract.PHYSICAL
NEW = index_name("imagesearch", "clip:ViT-L-14/openai", 2)
CONFLICT = (409, {"type": "version_conflict_engine_exception", "reason": "[img] version conflict"})


def bulk_outcomes(outcomes: dict[str, tuple[int, object]]):
    """A bulk response item per action of any type: ``outcomes[_id]`` is (status, result or error)."""
    def respond(request: Request):
        items = []
        for action, _ in request.pairs():
            ((op, meta),) = action.items()
            status, outcome = outcomes[meta["_id"]]
            item = {"_index": NEW, "_id": meta["_id"], "status": status}
            if 200 <= status < 300 or outcome == "not_found":
                item.update(result=outcome, _version=2, _seq_no=8, _primary_term=1,
                            _shards={"total": 1, "successful": 1, "failed": 0})
            else:
                item["error"] = outcome
            items.append({op: item})
        return 200, {"took": 2, "errors": any(not 200 <= next(iter(i.values()))["status"] < 300 for i in items),
                     "items": items}
    return respond


def test_the_old_index_is_blocked_refreshed_then_unblocked(fake: FakeOpenSearch) -> None:
    fake.on("PUT", f"/{OLD}/_block/write",
            (200, {"acknowledged": True, "shards_acknowledged": True, "indices": [{"name": OLD, "blocked": True}]}))
    fake.on("POST", f"/{OLD}/_refresh", (200, {"_shards": {"total": 2, "successful": 2, "failed": 0}}))
    fake.on("PUT", f"/{OLD}/_settings", (200, {"acknowledged": True}))
    store = make_store(fake)
    assert store.block_writes(OLD) is True
    store.unblock_writes(OLD)
    # The block first (it waits for the writes in flight), then the refresh that makes them visible.
    assert [(r.method, r.path) for r in fake.requests] == [
        ("PUT", f"/{OLD}/_block/write"), ("POST", f"/{OLD}/_refresh"), ("PUT", f"/{OLD}/_settings")]
    assert fake.sent("PUT", f"/{OLD}/_settings")[0].body == {"index": {"blocks": {"write": False}}}


@pytest.mark.parametrize("answer", [
    (403, error_body("security_exception", "no permissions for [indices:admin/block/add]", 403)),
    (200, {"acknowledged": True, "shards_acknowledged": False, "indices": [{"name": OLD, "blocked": False}]}),
])
def test_a_write_block_refused_or_unconfirmed_is_reported_and_the_index_still_refreshed(
    fake: FakeOpenSearch, caplog: pytest.LogCaptureFixture, answer
) -> None:
    fake.on("PUT", f"/{OLD}/_block/write", answer)
    fake.on("POST", f"/{OLD}/_refresh", (200, {"_shards": {"total": 2, "successful": 2, "failed": 0}}))
    assert make_store(fake).block_writes(OLD) is False
    assert len(fake.sent("POST", f"/{OLD}/_refresh")) == 1
    assert any("may be missed" in r.getMessage() for r in caplog.records)


def test_versions_are_a_real_time_mget_without_sources(fake: FakeOpenSearch) -> None:
    def mget(request: Request):
        found = {"a": (5, 1), "b": (9, 2)}
        return 200, {"docs": [{"_index": NEW, "_id": i, "_version": 3, "_seq_no": found[i][0],
                               "_primary_term": found[i][1], "found": True} if i in found else
                              {"_index": NEW, "_id": i, "found": False} for i in request.body["ids"]]}

    fake.on("POST", f"/{NEW}/_mget", mget)
    assert make_store(fake).for_index(NEW).versions(["a", "b", "gone", "a"]) == {"a": (5, 1), "b": (9, 2)}
    (request,) = fake.sent("POST", f"/{NEW}/_mget")
    assert request.body == {"ids": ["a", "b", "gone"]} and request.query == {"_source": "false"}


def others_wrote(request: Request):
    """An mget answer: each document as another writer left it (indexed, a later updated_at)."""
    return 200, {"docs": [{"_index": NEW, "_id": i, "_version": 4, "_seq_no": 11, "_primary_term": 1, "found": True,
                           "_source": {"content_hash": "other", "status": "indexed", "updated_at": 1}}
                          for i in request.body["ids"]]}


def test_put_many_if_counts_a_409_that_answers_its_own_resent_write(fake: FakeOpenSearch) -> None:
    """The first bulk is applied but its response lost; the resend gets 409 from that very write.
    The document holds what was sent, so the record counts as written (and gets embedded), not as
    written by someone else after the swap."""
    fake.on("GET", f"/{NEW}/_mapping", mapping_response(name=NEW))
    fake.on("POST", "/_bulk", contract.DROP, bulk_outcomes({"mine": CONFLICT}))

    def as_sent(request: Request):
        (_, source), = fake.sent("POST", "/_bulk")[-1].pairs()
        return 200, {"docs": [{"_index": NEW, "_id": "mine", "_version": 2, "_seq_no": 9, "_primary_term": 1,
                               "found": True, "_source": {k: source[k] for k in ("content_hash", "status",
                                                                                 "updated_at")}}]}

    fake.on("POST", f"/{NEW}/_mget", as_sent)
    store = make_store(fake).for_index(NEW)
    store.retrying.sleep = lambda seconds: None
    assert store.put_many_if([contract.record("mine")], {"mine": (5, 1)}) == ["mine"]


def test_put_many_if_writes_only_over_the_version_expected_or_into_nothing(fake: FakeOpenSearch) -> None:
    fake.on("GET", f"/{NEW}/_mapping", mapping_response(name=NEW))
    fake.on("POST", "/_bulk", bulk_outcomes({"copied": (200, "updated"), "rewritten": CONFLICT,
                                             "absent": (201, "created"), "uploaded": CONFLICT}))
    fake.on("POST", f"/{NEW}/_mget", others_wrote)
    store = make_store(fake).for_index(NEW)
    records = [contract.record(image_id) for image_id in ("copied", "rewritten", "absent", "uploaded")]
    written = store.put_many_if(records, {"copied": (5, 1), "rewritten": (6, 1)})
    assert written == ["copied", "absent"]  # the two 409s: written after the version was read, kept
    (mget,) = fake.sent("POST", f"/{NEW}/_mget")  # the conflicts read back: not this call's documents
    assert mget.body == {"ids": ["rewritten", "uploaded"]}
    assert mget.query == {"_source_includes": "content_hash,status,updated_at"}
    (bulk,) = fake.sent("POST", "/_bulk")
    assert "require_alias" not in bulk.query
    assert [action for action, _ in bulk.pairs()] == [
        {"index": {"_index": NEW, "_id": "copied", "if_seq_no": 5, "if_primary_term": 1}},
        {"index": {"_index": NEW, "_id": "rewritten", "if_seq_no": 6, "if_primary_term": 1}},
        {"create": {"_index": NEW, "_id": "absent"}},
        {"create": {"_index": NEW, "_id": "uploaded"}},
    ]
    assert {source["status"] for _, source in bulk.pairs()} == {"queued"}  # the document put_many writes


def test_put_many_if_refused_for_another_reason_raises(fake: FakeOpenSearch) -> None:
    fake.on("GET", f"/{NEW}/_mapping", mapping_response(name=NEW))
    fake.on("POST", "/_bulk", bulk_outcomes({"img1": (400, {"type": "mapper_parsing_exception", "reason": "bad"})}))
    with pytest.raises(StoreRejected, match="mapper_parsing_exception"):
        make_store(fake).for_index(NEW).put_many_if([contract.record("img1")], {})


def test_delete_many_if_deletes_only_the_version_expected(fake: FakeOpenSearch) -> None:
    fake.on("POST", "/_bulk", bulk_outcomes({"copied": (200, "deleted"), "rewritten": CONFLICT,
                                             "gone": (404, "not_found")}))
    store = make_store(fake).for_index(NEW)
    assert store.delete_many_if({"copied": (5, 1), "rewritten": (6, 2), "gone": (7, 1)}) == ["copied"]
    assert store.delete_many_if({}) == []
    (bulk,) = fake.sent("POST", "/_bulk")
    assert bulk.body == [
        {"delete": {"_index": NEW, "_id": "copied", "if_seq_no": 5, "if_primary_term": 1}},
        {"delete": {"_index": NEW, "_id": "rewritten", "if_seq_no": 6, "if_primary_term": 2}},
        {"delete": {"_index": NEW, "_id": "gone", "if_seq_no": 7, "if_primary_term": 1}},
    ]
