"""Pieces of scripts/train_demo_models.py that decide what the demo CLIP learns."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from imagesearch.dev import world
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_demo_models", ROOT / "scripts" / "train_demo_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def samples() -> list[world.Sample]:
    return world.generate(80, seed=13)


def _differences(a: world.Description, b: world.Description) -> int:
    out = (a.position != b.position) + (a.relation != b.relation)
    for x, y in zip(a.groups, b.groups):
        out += sum(getattr(x, name) != getattr(y, name) for name in ("shape", "count", "size", "colour"))
    return out


def test_hard_negatives_are_false_and_change_one_thing(train, samples):
    rng = np.random.default_rng(0)
    for sample in samples:
        truth = train.Truth(sample.groups, sample.position, sample.relation)
        for text in sample.captions:
            description = world.describe(text)
            negatives = train.hard_negatives(description, truth, rng, 6)
            assert len(negatives) == 6
            for negative in negatives:
                assert not world.matches(negative, sample), (text, negative)
                swapped = negative.groups == description.groups[::-1] and negative.groups != description.groups
                assert swapped or _differences(description, negative) == 1, (text, negative)
                for language in world.LANGUAGES:  # and they can be written in both languages
                    assert world.describe(world.render(negative, language)) == negative
            # The three other shapes of one group come first, then a count and a colour change.
            assert [_changed(description, n) for n in negatives[:5]] == ["shape"] * 3 + ["count", "colour"]
            shapes = {g.shape for n in negatives[:3] for g in n.groups} | {g.shape for g in description.groups}
            assert shapes >= set(world.SHAPES)


def _changed(a: world.Description, b: world.Description) -> str:
    for x, y in zip(a.groups, b.groups):
        for name in ("shape", "count", "colour", "size"):
            if getattr(x, name) != getattr(y, name):
                return name
    return "place"


def test_meaning_index_pairs_the_languages(train, samples):
    meaning = train.MeaningIndex()
    for sample in samples:
        pairs = meaning.translations(sample.captions, sample.captions_zh)
        assert len(pairs) == len(sample.captions)
        for english, chinese in zip(sample.captions, pairs):
            assert chinese and all(meaning(z) == meaning(english) for z in chinese)
            assert set(chinese) <= set(sample.captions_zh)
    assert meaning("two red circles") == meaning("两个红色圆形") != meaning("两个红色正方形")


def test_contrastive_counts_every_true_pair_and_skips_rows_without_one(train):
    logits = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    # Row 0 scores two texts equally high: with both marked true that is as right as can be.
    both = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    worse = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert train.contrastive(logits, worse) > train.contrastive(logits, both)
    no_positive_row = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.isfinite(train.contrastive(logits, no_positive_row))


def test_tokenizers_english_unchanged_and_bilingual_by_character(train, tmp_path):
    captions = [c for s in world.generate(300, seed=1) for c in s.captions] + [" ".join(world.vocabulary())]
    english = train.build_tokenizer(captions)
    english.save_pretrained(tmp_path / "en")
    # The captioner's tokenizer is the one it was trained with, byte for byte.
    committed = ROOT / "models" / "demo" / "captioner" / "tokenizer.json"
    if committed.is_file():
        assert (tmp_path / "en" / "tokenizer.json").read_bytes() == committed.read_bytes()
    chinese = [c for s in world.generate(300, seed=1) for c in s.captions_zh] + ["".join(world.vocabulary_zh())]
    bilingual = train.build_tokenizer(captions + chinese, chinese=True, context_length=train.CLIP_CONTEXT_LENGTH)
    assert len(bilingual.get_vocab()) == train.CLIP_MODEL_CFG["text_cfg"]["vocab_size"]
    tokens = bilingual.convert_ids_to_tokens(bilingual("Two ＲＥＤ circles, 左边有2个红色圆形！")["input_ids"])
    assert tokens == ["[BOS]", "two", "red", "circles", "左", "边", "有", "两", "个", "红", "色", "圆", "形", "[EOS]"]


def test_encode_text_on_a_prefix_is_open_clips_encode_text(train, tmp_path):
    import open_clip

    captions = [c for s in world.generate(50, seed=1) for c in s.captions + s.captions_zh]
    tokenizer = train.build_tokenizer(captions + [" ".join(world.vocabulary()), "".join(world.vocabulary_zh())],
                                      chinese=True, context_length=train.CLIP_CONTEXT_LENGTH)
    train.write_clip_folder(tmp_path / "clip", tokenizer)
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}")
    tokens = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'clip'}")(["one", captions[1], "两个红色圆形"])
    assert tokens.shape[1] == train.CLIP_CONTEXT_LENGTH
    torch.testing.assert_close(train.encode_text(model, tokens), model.encode_text(tokens), atol=1e-5, rtol=1e-5)
