"""The search service on every store (embedded always, OpenSearch with ``OPENSEARCH_URL``) with the
tiny CLIP: routing per mode, fusion, queries by several examples, relevance, cutoffs,
de-duplication and near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imagesearch.config import SearchSettings, Settings
from imagesearch.fusion import FusionConfig
from imagesearch.models import get_clip
from imagesearch.profiles import SearchProfile
from imagesearch.relevance import Calibration
from imagesearch.search import (
    CancelledOut,
    Example,
    NotCalibrated,
    Query,
    QueryError,
    SearchService,
    UnsupportedInMode,
    rrf,
)
from imagesearch.vocab import Cutoff, FusionMethod, RankedList
from tests.support.factories import caption_update, record, vector_update


def test_rrf_rewards_agreement_between_lists():
    fused = rrf([["a", "b", "c"], ["b", "c", "a"], ["b"]], k=60)
    assert [i for i, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62 + 1 / 61)


@pytest.fixture
def service(tmp_path, store):
    settings = Settings(data_dir=tmp_path)
    clip = get_clip(settings)
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
    by_id = service.search(Query(image_id="red", k=5))
    assert "red" not in {h.record.id for h in by_id.hits} and len(by_id.hits) == 2
    assert [h.record.id for h in service.search(Query(text="x", collection="c2", k=5)).hits] == ["blue"]


def test_unknown_and_foreign_ids_are_query_errors(service):
    with pytest.raises(QueryError, match="unknown"):
        service.search(Query(image_id="nope"))
    with pytest.raises(QueryError, match="unknown"):
        service.search(Query(image_id="red", tenant="someone-else"))


def _with(service: SearchService, profile: SearchProfile | None = None, **search: object) -> SearchService:
    settings = service.settings.model_copy(update={"search": SearchSettings(**search)})
    return SearchService(settings, service.store, service.clip, lambda: profile)


def test_keyword_weight_pulls_the_matching_caption_to_the_top(service):
    keyword_only = _with(service, fusion_weight_image=0.0, fusion_weight_caption=0.0, fusion_weight_keyword=1.0)
    result = keyword_only.search(Query(text="blue", mode="hybrid", k=3))
    assert result.hits[0].record.id == "blue"
    assert result.fusion is not None and result.fusion.active() == [RankedList.KEYWORD] and not result.tuned


def test_explain_gives_each_hits_place_in_every_list(service):
    result = service.search(Query(text="a blue picture", mode="hybrid", k=3, explain=True))
    keyword = [e.score for h in result.hits if (e := h.parts.get(RankedList.KEYWORD))]
    for hit in result.hits:
        assert set(hit.parts) >= {RankedList.IMAGE, RankedList.CAPTION}
        image, caption = hit.parts[RankedList.IMAGE], hit.parts[RankedList.CAPTION]
        # The default fusion is linear (0.45 image, 0.45 caption, 0.1 keyword): the score is recomputable.
        entry = hit.parts.get(RankedList.KEYWORD)
        bm25 = 0.0 if entry is None else (1.0 if len(keyword) == 1 else
                                          (entry.score - min(keyword)) / (max(keyword) - min(keyword)))
        assert hit.score == pytest.approx(0.45 * max(0, image.score) + 0.45 * max(0, caption.score) + 0.1 * bm25)
    assert result.hits[0].parts[RankedList.KEYWORD].rank == 1  # "blue" matches one caption only
    single = service.search(Query(text="a blue picture", mode="image", k=2, explain=True))
    assert [h.parts[RankedList.IMAGE].rank for h in single.hits] == [1, 2]


def test_positive_and_negative_examples_combine_in_the_encoders_space(service):
    clip = service.clip
    red, blue = (service.store.vector(i, "image")[0] for i in ("red", "blue"))
    text = clip.encode_texts(["a picture"])[0]
    query = Query(positive=(Example(text="a picture", weight=2.0), Example(image_id="red")),
                  negative=(Example(image_id="blue", weight=0.5),), k=3)
    expected = 2.0 * text + red - 0.5 * blue
    expected /= np.linalg.norm(expected)
    assert service.query_vector(query) == pytest.approx(expected, abs=1e-5)
    result = service.search(query)
    assert [h.record.id for h in result.hits] == ["green"]  # both examples' ids are left out
    assert result.hits[0].score == pytest.approx(float(service.store.vector("green", "image")[0] @ expected), abs=1e-5)


def test_examples_that_cancel_out_are_refused(service):
    with pytest.raises(CancelledOut):
        service.search(Query(text="a red picture", negative=(Example(text="a red picture"),)))


def test_min_score_is_refused_in_hybrid_and_min_relevance_needs_a_calibration(service):
    with pytest.raises(UnsupportedInMode, match="min_relevance"):
        service.search(Query(text="x", mode="hybrid", min_score=0.1))
    with pytest.raises(NotCalibrated):
        service.search(Query(text="x", mode="image", min_relevance=0.5))
    result = service.search(Query(text="x", mode="image"))
    assert not result.calibrated and all(h.relevance is None for h in result.hits)


def test_a_profile_for_these_models_sets_fusion_and_relevance(service):
    calibration = Calibration((4.0, -2.0, 1.0), -1.0)
    fusion = FusionConfig(FusionMethod.RRF, {RankedList.IMAGE: 1.0}, depth=10, rrf_k=5)
    profile = SearchProfile(service.clip.identity, "captioner:x", fusion,
                            {"image": calibration, "hybrid": Calibration((1.0, 0.0, 0.0), 0.0)})
    tuned = _with(service, profile)
    result = tuned.search(Query(text="a green picture", mode="image", k=3))
    assert result.calibrated
    assert [h.relevance for h in result.hits] == pytest.approx(calibration.many([h.score for h in result.hits]))
    threshold = sorted(h.relevance for h in result.hits)[1]
    kept = tuned.search(Query(text="a green picture", mode="image", k=3, min_relevance=threshold)).hits
    assert [h.record.id for h in kept] == [h.record.id for h in result.hits if h.relevance >= threshold]
    hybrid = tuned.search(Query(text="a green picture", mode="hybrid", k=3))
    assert hybrid.tuned and hybrid.fusion == fusion
    assert hybrid.hits[0].score == pytest.approx(1 / 6)  # rank 1 in the only weighted list
    untuned = _with(service, profile, use_profiles=False)
    assert untuned.search(Query(text="a green picture", mode="hybrid")).tuned is False


def test_auto_cutoff_reports_what_it_kept(service):
    result = service.search(Query(text="a green picture", mode="caption", k=3, cutoff=Cutoff.AUTO))
    assert result.cutoff is not None and result.cutoff.of == 3 and result.cutoff.kept == len(result.hits) >= 1


def test_dedup_collapses_near_duplicates_onto_the_best_hit(service):
    store, clip = service.store, service.clip
    red = store.vector("red", "image")[0]
    noise = np.random.default_rng(0).normal(size=red.shape).astype(np.float32)
    twin = red + 0.05 * noise / np.linalg.norm(noise)
    twin /= np.linalg.norm(twin)
    store.put(record("red-twin", collection="c1"))
    store.set_image_vectors([vector_update("red-twin", twin, model=clip.identity)])
    assert float(twin @ red) >= service.settings.search.duplicate_threshold
    query = Query(image_id="green", k=3)
    plain = [h.record.id for h in service.search(query).hits]
    assert set(plain) == {"red", "red-twin", "blue"}
    deduped = service.search(Query(image_id="green", k=3, dedup=True)).hits
    first_red = next(i for i in plain if i.startswith("red"))
    other_red = "red-twin" if first_red == "red" else "red"
    assert [h.record.id for h in deduped] == [i for i in plain if i != other_red]
    assert next(h for h in deduped if h.record.id == first_red).duplicates == (other_red,)
    similar = service.similar("red", None, k=5)
    assert [(h.record.id, round(h.score, 4)) for h in similar] == [("red-twin", round(float(twin @ red), 4))]
    assert service.similar("red", None, k=5, threshold=-1.0)[0].record.id == "red-twin"
    with pytest.raises(QueryError, match="unknown"):
        service.similar("red", "someone-else", k=5)
