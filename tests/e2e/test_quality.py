"""Search quality through the real service (HTTP upload -> queue -> workers -> store -> HTTP search)
with the trained demo models, on held-out procedural images (world seed 2; training used seed 1).

Thresholds sit below what `imagesearch eval` measured (see the issue note and models/demo/README.md)
and far above chance, which each assertion states.
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
    by_mode = {m.mode: m for m in report.modes}
    print(evaluate.render_table(report))
    assert report.failed_images == 0
    # Chance: ~0.01 at R@1 and ~0.06 at R@5 (100 images, most queries with one relevant image).
    assert report.chance_recall[5] < 0.1
    # Measured (100 held-out images): R@1/R@5 image 0.91/1.00, caption 0.95/1.00, hybrid 0.90/0.99.
    assert by_mode["image"].recall[1] >= 0.75 and by_mode["image"].recall[5] >= 0.95
    assert by_mode["caption"].recall[1] >= 0.8 and by_mode["caption"].recall[5] >= 0.95
    assert by_mode["hybrid"].recall[1] >= 0.75 and by_mode["hybrid"].recall[5] >= 0.95
    assert all(m.ndcg10 > 5 * report.chance_recall[1] for m in report.modes)


def _scores(client: ApiClient, collection: str, text: str, mode: str) -> dict[str, float]:
    body, _ = client.search(text=text, mode=mode, k=N_IMAGES, collection=collection)
    return {hit["external_id"]: hit["score"] for hit in body["hits"]}


def _contrasts(samples: list[world.Sample], attribute: str) -> list[tuple[str, str, str]]:
    """(image id, true caption, a caption that differs only in count or only in position)."""
    out = []
    for sample in samples:
        if len(sample.groups) != 1:
            continue
        (group,) = sample.groups
        if attribute == "count":
            other = dataclasses.replace(group, count=group.count % 4 + 1)  # one->two, ..., four->one
            wrong = f"{other.phrase()} {world.POSITION_PHRASES[sample.position]}"
        else:
            others = [p for p in world.POSITIONS if p != sample.position]
            wrong = f"{group.phrase()} {world.POSITION_PHRASES[others[len(sample.id) % len(others)]]}"
        out.append((sample.id, sample.captions[0], wrong))
    return out


@pytest.mark.parametrize("attribute", ["count", "position"])
def test_queries_that_only_counts_or_positions_separate(service, attribute):
    """"one green star" vs "three green stars": the image must score higher for its own caption than
    for the same words with another count (or another position). Chance: 0.5."""
    client, collection, samples, _ = service
    contrasts = _contrasts(samples, attribute)
    assert len(contrasts) >= 30
    # Measured: count 0.90 (image) / 0.98 (caption); position 1.00 / 0.98.
    thresholds = {"count": {"image": 0.8, "caption": 0.85}, "position": {"image": 0.9, "caption": 0.85}}
    for mode, threshold in thresholds[attribute].items():
        wins = 0
        for image_id, true_caption, wrong_caption in contrasts:
            right = _scores(client, collection, true_caption, mode).get(image_id, -2.0)
            wrong = _scores(client, collection, wrong_caption, mode).get(image_id, -2.0)
            wins += right > wrong
        rate = wins / len(contrasts)
        print(f"{attribute} contrast, {mode} mode: {rate:.3f} over {len(contrasts)} images")
        assert rate >= threshold, (attribute, mode, rate)
