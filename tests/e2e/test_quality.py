"""Search quality through the real service (HTTP upload -> queue -> workers -> store -> HTTP search)
with the trained demo models, on held-out procedural images (world seed 2; training used seed 1).

Thresholds sit below what `imagesearch eval` measured (see the issue note and models/demo/README.md)
and far above chance, which each assertion states. The labelled set has the same queries in English
and in Chinese; the Chinese ones must hold thresholds at most ZH_MARGIN below the English ones, in
the image mode and in the caption mode (a Chinese query against the English generated captions).
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from imagesearch.dev import evaluate, procs, world
from imagesearch.dev.client import ApiClient
from imagesearch.dev.demo import DEMO_MODELS
from tests.support.processes import child_env

HELDOUT_SEED = 2
N_IMAGES = 100
ZH_MARGIN = 0.05
# English thresholds per mode: (R@1, R@5). Measured (100 held-out images, bilingual CLIP): image
# 0.96/1.00, caption 0.95/1.00, hybrid 0.92/0.99 in English; the same queries in Chinese: image
# 0.96/1.00, caption 0.95/1.00, hybrid 0.97/1.00 (BM25 on the English captions adds nothing there).
THRESHOLDS = {"image": (0.75, 0.95), "caption": (0.8, 0.95), "hybrid": (0.75, 0.95)}

pytestmark = pytest.mark.skipif(
    not ((DEMO_MODELS / "clip" / "open_clip_model.safetensors").is_file()
         and (DEMO_MODELS / "captioner" / "model.safetensors").is_file()),
    reason="models/demo is absent: train it with `python scripts/train_demo_models.py`",
)


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_client):
    root = tmp_path_factory.mktemp("quality")
    samples = world.write_dataset(root / "set", N_IMAGES, HELDOUT_SEED)
    env = child_env(root / "data", IMAGESEARCH_CLIP_MODEL_DIR=str(DEMO_MODELS / "clip"),
                    IMAGESEARCH_CAPTIONER_DIR=str(DEMO_MODELS / "captioner"))
    with procs.local_stack(env, root / "logs") as base:
        client = ApiClient(base)
        collection = f"q-{uuid.uuid4().hex[:6]}"
        report = evaluate.run(client, evaluate.load_labelled_set(root / "set"), collection)
        yield client, collection, samples, report


def test_each_scheme_far_above_chance(service):
    _, _, _, report = service
    print(evaluate.render_table(report))
    assert report.failed_images == 0
    languages = {lang.language: lang for lang in report.by_language}
    assert sorted(languages) == ["en", "zh"] and languages["en"].queries == languages["zh"].queries
    # Chance: ~0.01 at R@1 and ~0.06 at R@5 (100 images, most queries with one relevant image).
    assert report.chance_recall[5] < 0.1
    by_mode = {m.mode: m for m in languages["en"].modes}
    for mode, (r1, r5) in THRESHOLDS.items():
        assert by_mode[mode].recall[1] >= r1 and by_mode[mode].recall[5] >= r5, (mode, by_mode[mode])
    assert all(m.ndcg10 > 5 * report.chance_recall[1] for m in report.modes)


@pytest.mark.parametrize("mode", ["image", "caption"])
def test_chinese_queries_within_a_margin_of_english(service, mode):
    """The same queries in Chinese: the image mode compares them with CLIP image vectors, the caption
    mode with CLIP text vectors of the (English) generated captions."""
    _, _, _, report = service
    languages = {lang.language: {m.mode: m for m in lang.modes} for lang in report.by_language}
    english, chinese = languages["en"][mode], languages["zh"][mode]
    r1, r5 = THRESHOLDS[mode]
    print(f"{mode}: en R@1 {english.recall[1]:.3f} R@5 {english.recall[5]:.3f}, "
          f"zh R@1 {chinese.recall[1]:.3f} R@5 {chinese.recall[5]:.3f}")
    assert chinese.recall[1] >= r1 - ZH_MARGIN and chinese.recall[5] >= r5 - ZH_MARGIN, (mode, chinese)
    assert chinese.ndcg10 > 5 * report.chance_recall[1]


def _scores(client: ApiClient, collection: str, text: str, mode: str) -> dict[str, float]:
    body, _ = client.search(text=text, mode=mode, k=N_IMAGES, collection=collection)
    return {hit["external_id"]: hit["score"] for hit in body["hits"]}


def _contrasts(samples: list[world.Sample], attribute: str, language: str) -> list[tuple[str, str, str]]:
    """(image id, true caption, a caption that differs only in count or only in position)."""
    out = []
    for sample in samples:
        if len(sample.groups) != 1:
            continue
        (group,) = sample.groups
        if attribute == "count":
            other = dataclasses.replace(group, count=group.count % 4 + 1)  # one->two, ..., four->one
            position = sample.position
        else:
            other = group
            others = [p for p in world.POSITIONS if p != sample.position]
            position = others[len(sample.id) % len(others)]
        assert position is not None
        if language == "en":
            wrong = f"{other.phrase()} {world.POSITION_PHRASES[position]}"
            out.append((sample.id, sample.caption, wrong))
        else:
            out.append((sample.id, sample.caption_zh, world.captions_zh_for((other,), position, None)[0]))
    return out


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("attribute", ["count", "position"])
def test_queries_that_only_counts_or_positions_separate(service, attribute, language):
    """"one green star" vs "three green stars" ("一颗绿色星星" vs "三颗绿色星星"): the image must score
    higher for its own caption than for the same words with another count (or another position).
    Chance: 0.5. Chinese thresholds are ZH_MARGIN below the English ones."""
    client, collection, samples, _ = service
    contrasts = _contrasts(samples, attribute, language)
    assert len(contrasts) >= 30
    # Measured, both languages alike: count 1.00 (image) / 1.00 (caption); position 1.00 / 0.98.
    thresholds = {"count": {"image": 0.8, "caption": 0.85}, "position": {"image": 0.9, "caption": 0.85}}
    for mode, threshold in thresholds[attribute].items():
        wins = 0
        for image_id, true_caption, wrong_caption in contrasts:
            right = _scores(client, collection, true_caption, mode).get(image_id, -2.0)
            wrong = _scores(client, collection, wrong_caption, mode).get(image_id, -2.0)
            wins += right > wrong
        rate = wins / len(contrasts)
        print(f"{attribute} contrast, {language}, {mode} mode: {rate:.3f} over {len(contrasts)} images")
        assert rate >= threshold - (ZH_MARGIN if language == "zh" else 0.0), (attribute, language, mode, rate)
