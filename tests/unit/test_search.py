"""Fusion and query routing in the search service, with the real store and the tiny CLIP."""

from __future__ import annotations

import pytest
from PIL import Image

from imagesearch.config import Settings
from imagesearch.models import get_clip
from imagesearch.search import Query, QueryError, SearchService, rrf
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.factories import caption_update, record, vector_update
from tests.support.images import jpeg


def test_rrf_rewards_agreement_between_lists():
    fused = rrf([["a", "b", "c"], ["b", "c", "a"], ["b"]], k=60)
    assert [i for i, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62 + 1 / 61)


@pytest.fixture
def service(tmp_path):
    settings = Settings(data_dir=tmp_path)
    clip = get_clip(settings)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    colours = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
    for name, rgb in colours.items():
        store.put(record(name, collection="c1" if name != "blue" else "c2"))
        vector = clip.encode_images([Image.new("RGB", (64, 64), rgb)])[0]
        store.set_image_vectors([vector_update(name, vector, model=clip.identity, width=64, height=64)])
        caption = f"a {name} picture"
        store.set_captions([caption_update(name, caption, clip.encode_texts([caption])[0], text_model=clip.identity)])
    return SearchService(settings, store, clip)


def test_text_image_and_id_queries_in_each_mode(service):
    for mode in ("image", "caption", "hybrid"):
        result = service.search(Query(text="a green picture", mode=mode, k=3))
        assert {h.record.id for h in result.hits} == {"red", "green", "blue"}
    # The caption scheme with the same words ranks the exact caption first (identical text vectors).
    assert service.search(Query(text="a green picture", mode="caption", k=1)).hits[0].record.id == "green"
    # Keywords pull the matching caption to the top of the fused list.
    assert service.search(Query(text="blue", mode="hybrid", k=3)).hits[0].record.id == "blue"
    by_id = service.search(Query(image_id="red", k=5))
    assert "red" not in {h.record.id for h in by_id.hits} and len(by_id.hits) == 2
    assert [h.record.id for h in service.search(Query(text="x", collection="c2", k=5)).hits] == ["blue"]


def test_unknown_and_foreign_ids_are_query_errors(service):
    with pytest.raises(QueryError, match="unknown"):
        service.search(Query(image_id="nope"))
    with pytest.raises(QueryError, match="unknown"):
        service.search(Query(image_id="red", tenant="someone-else"))


def test_caption_stage_sees_the_whole_thumbnail(tmp_path):
    """The captioner must get the thumbnail at its stored size (a decode with a tiny minimum side
    once shrank it to a sliver, and every caption became noise)."""
    from imagesearch import ingest
    from imagesearch.blobs import LocalBlobStore
    from imagesearch.models import get_captioner
    from imagesearch.pipeline import caption_batch, embed_batch

    settings = Settings(data_dir=tmp_path)
    store, blobs = EmbeddedStore(tmp_path / "s.sqlite3"), LocalBlobStore(settings.blob_dir)
    record = ingest.accept(
        ingest.Upload(jpeg(size=(800, 600))), settings=settings, store=store, blobs=blobs, enqueue=lambda _: None
    )
    embed_batch([record.id], settings=settings, store=store, blobs=blobs, clip=get_clip(settings))
    real = get_captioner(settings)
    seen: list[tuple[int, int]] = []

    class Recording:  # the real captioner, with the image sizes it was given written down
        identity = real.identity

        def caption(self, images):
            seen.extend(image.size for image in images)
            return real.caption(images)

    outcome = caption_batch(
        [record.id], settings=settings, store=store, blobs=blobs, captioner=Recording(), clip=get_clip(settings)
    )
    assert outcome.done == [record.id]
    assert seen == [(settings.ingest.thumbnail_size, settings.ingest.thumbnail_size * 3 // 4)]
