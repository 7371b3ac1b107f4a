"""The search contract over HTTP (the real app, store, Redis and tiny CLIP): queries by several
examples, explain, dedup, the auto cutoff, relevance from a profile saved in Redis, near-duplicates,
and the errors each option can give."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from imagesearch.fusion import FusionConfig
from imagesearch.models.captioner import configured_captioner
from imagesearch.profiles import SearchProfile
from imagesearch.relevance import Calibration
from imagesearch.vocab import FusionMethod, RankedList
from tests.support.images import jpeg
from tests.support.search_api import put_indexed, search

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "grey": (128, 128, 128)}


@pytest.fixture
def app(make_app, redis_client):
    app = make_app(search={"profile_refresh_s": 0})
    svc = app.extensions["imagesearch"]
    clip, store = svc.clip, svc.store
    svc.profiles.delete(clip.identity, configured_captioner(svc.settings))  # whatever an earlier test left
    for name, rgb in COLOURS.items():
        caption = f"a {name} square"
        put_indexed(store, clip.identity, name, clip.encode_images([Image.new("RGB", (64, 64), rgb)])[0],
                    caption=caption, caption_vector=clip.encode_texts([caption])[0])
    red = store.vector("red", "image")[0]
    twin = red + 0.02 * np.ones_like(red) / np.sqrt(red.size)
    put_indexed(store, clip.identity, "red-twin", twin / np.linalg.norm(twin))
    yield app
    svc.profiles.delete(clip.identity, configured_captioner(svc.settings))


def _ids(body) -> list[str]:
    return [h["id"] for h in body["hits"]]


def test_plain_search_has_no_relevance_and_no_fusion_outside_hybrid(client):
    body = search(client, text="a red square", k=3)
    assert body["calibrated"] is False and body["fusion"] is None and body["cutoff"] is None
    assert all(h["relevance"] is None and h["duplicates"] == [] and h["explain"] is None for h in body["hits"])
    hybrid = search(client, text="a red square", mode="hybrid", k=3)
    assert hybrid["fusion"] == {"method": "linear", "weights": {"image": 0.45, "caption": 0.45, "keyword": 0.1},
                                "depth": 100, "rrf_k": 60, "tuned": False}


def test_positive_and_negative_examples(client):
    body = search(client, positive=[{"image_id": "red"}, {"text": "a square", "weight": 0.5}],
                   negative=[{"image_id": "grey", "weight": 2}], k=5)
    assert "red" not in _ids(body) and "grey" not in _ids(body)  # examples are never their own hits
    assert _ids(body)[0] == "red-twin"
    image = base64.b64encode(jpeg(color=(20, 230, 20))).decode()
    assert _ids(search(client, positive=[{"image": image}], k=1)) == ["green"]
    with_text = search(client, text="a blue square", negative=[{"text": "a blue square"}], status=422)
    assert with_text["error"]["code"] == "examples_cancel_out"


@pytest.mark.parametrize("body, where", [
    ({"positive": []}, "positive"),
    ({"positive": [{"text": "a", "image_id": "red"}]}, "positive.0"),
    ({"positive": [{"text": "a", "weight": 0}]}, "positive.0.weight"),
    ({"positive": [{"text": "a"}] * 9}, "positive"),
    ({"negative": [{"text": "a"}]}, "request"),
    ({"text": "a", "positive": [{"text": "b"}]}, "request"),
    ({"positive": [{"image": "not base64!"}]}, "positive[0].image"),
    ({"positive": [{"image_id": ""}]}, "positive.0.image_id"),  # OpenSearch's client refuses an empty id
    ({"image_id": ""}, "image_id"),
    ({"text": "a", "cutoff": "sometimes"}, "cutoff"),
    ({"text": "a", "min_relevance": 1.5}, "min_relevance"),
])
def test_malformed_examples_and_options_are_422_naming_the_field(client, body, where):
    error = search(client, status=422, **body)["error"]
    assert error["message"].startswith(where), error


def test_min_score_in_hybrid_and_min_relevance_without_calibration(client):
    error = search(client, status=422, text="a", mode="hybrid", min_score=0.2)["error"]
    assert error["code"] == "unsupported_in_mode" and "min_relevance" in error["message"]
    assert search(client, status=409, text="a", min_relevance=0.5)["error"]["code"] == "not_calibrated"


def test_explain_dedup_and_cutoff(client):
    body = search(client, image_id="green", k=4, explain=True)
    assert _ids(body)[:2] in (["red", "red-twin"], ["red-twin", "red"]) or "red" in _ids(body)
    for rank, hit in enumerate(body["hits"], start=1):
        assert hit["explain"] == {"fused": hit["score"], "lists": {"image": {"rank": rank, "score": hit["score"]}}}
    plain = _ids(search(client, image_id="green", k=4))
    deduped = search(client, image_id="green", k=4, dedup=True)
    first = next(i for i in plain if i.startswith("red"))
    other = "red-twin" if first == "red" else "red"
    assert _ids(deduped) == [i for i in plain if i != other]
    assert next(h for h in deduped["hits"] if h["id"] == first)["duplicates"] == [other]
    hybrid = search(client, text="a blue square", mode="hybrid", k=4, explain=True)
    for hit in hybrid["hits"]:
        assert set(hit["explain"]["lists"]) == {"image", "caption", "keyword"}
    cut = search(client, text="a blue square", mode="caption", k=4, cutoff="auto")
    assert cut["cutoff"]["method"] == "auto" and cut["cutoff"]["of"] == 4 and cut["cutoff"]["kept"] == len(cut["hits"])


def test_a_saved_profile_reaches_the_api_and_readyz(app, client):
    svc = app.extensions["imagesearch"]
    calibration = Calibration((1.0, 0.0, 0.0), 0.0)  # relevance = sigmoid(score)
    fusion = FusionConfig(FusionMethod.RRF, {RankedList.IMAGE: 0.3, RankedList.CAPTION: 0.7}, depth=20, rrf_k=10)
    svc.profiles.save(SearchProfile(svc.clip.identity, configured_captioner(svc.settings), fusion,
                                    {"image": calibration, "caption": calibration, "hybrid": calibration},
                                    {"dataset": "unit", "fitted_at": "2026-12-01T00:00:00+00:00"}))
    body = search(client, text="a red square", k=4)
    assert body["calibrated"] is True
    for hit in body["hits"]:
        assert hit["relevance"] == pytest.approx(1 / (1 + np.exp(-hit["score"])))
    kept = search(client, text="a red square", k=4, min_relevance=body["hits"][1]["relevance"])
    assert _ids(kept) == _ids(body)[:2]
    hybrid = search(client, text="a red square", mode="hybrid", k=4)
    assert hybrid["fusion"] == {**fusion.to_json(), "tuned": True}
    ready = client.get("/readyz").get_json()
    assert ready["profile"]["fusion"] == fusion.to_json() and ready["profile"]["dataset"] == "unit"


def test_similar_gives_near_duplicates_above_the_threshold(client):
    body = client.get("/v1/images/red/similar").get_json()
    assert body["id"] == "red" and body["threshold"] == 0.95 and _ids(body) == ["red-twin"]
    loose = client.get("/v1/images/red/similar?threshold=-1&k=3").get_json()
    assert len(loose["hits"]) == 3 and "red" not in _ids(loose)
    assert client.get("/v1/images/nope/similar").status_code == 404
    assert client.get("/v1/images/red/similar?k=0").status_code == 422
    assert client.get("/v1/images/red/similar?threshold=x").status_code == 422
