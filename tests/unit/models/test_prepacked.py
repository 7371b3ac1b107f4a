"""The CPU query path's pre-packed text layers: same vectors as torch's stock layers, or not used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from imagesearch.config import Settings
from imagesearch.models import prepacked
from imagesearch.models.clip import ClipSpec, load_clip

TEXTS = ["a", "two red circles left of a blue square", "word " * 100]  # the last one is cut at 77 tokens

pytestmark = pytest.mark.skipif(not prepacked.available(), reason="this torch has no oneDNN packed linear")


@pytest.fixture(scope="module")
def spec() -> ClipSpec:
    return dataclasses.replace(ClipSpec.from_settings(Settings()), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def stock(spec):
    return load_clip(dataclasses.replace(spec, prepack_text=False))


def test_packed_text_layers_give_the_stock_vectors(spec, stock):
    packed = load_clip(spec)
    assert packed.prepacked_text and not stock.prepacked_text
    blocks = packed.model.transformer.resblocks
    assert all(isinstance(b.attn, prepacked.PackedSelfAttention) for b in blocks)
    assert all(isinstance(b.mlp.c_fc, prepacked.PackedLinear) for b in blocks)
    np.testing.assert_allclose(packed.encode_texts(TEXTS), stock.encode_texts(TEXTS), atol=1e-5)
    # The full-context path (what open_clip itself runs) goes through the same packed layers.
    with torch.inference_mode():
        full = packed.model.encode_text(packed.tokenizer(TEXTS), normalize=True).numpy()
    np.testing.assert_allclose(full, stock.encode_texts(TEXTS), atol=1e-5)
    # Only the text tower is packed: image vectors are bit-identical.
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (40, 90), (10, 90, 250))]
    np.testing.assert_array_equal(packed.encode_images(images), stock.encode_images(images))


def test_packed_layers_that_disagree_are_not_used(spec, stock, monkeypatch):
    original = prepacked.PackedLinear.forward
    monkeypatch.setattr(prepacked.PackedLinear, "forward", lambda self, x: original(self, x) * 1.01)
    clip = load_clip(spec)
    assert not clip.prepacked_text
    assert all(isinstance(b.attn, torch.nn.MultiheadAttention) for b in clip.model.transformer.resblocks)
    np.testing.assert_array_equal(clip.encode_texts(TEXTS), stock.encode_texts(TEXTS))


def test_packed_layers_that_fail_are_not_used(spec, stock, monkeypatch):
    def broken(self, x):
        raise RuntimeError("operator changed")

    monkeypatch.setattr(prepacked.PackedLinear, "forward", broken)
    clip = load_clip(spec)
    assert not clip.prepacked_text
    np.testing.assert_array_equal(clip.encode_texts(TEXTS), stock.encode_texts(TEXTS))


def test_bf16_models_keep_their_layers(spec):
    clip = load_clip(dataclasses.replace(spec, precision="bf16"))
    assert not clip.prepacked_text
    assert isinstance(clip.model.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)
