"""Model loading through the production path, and the exact short-text encoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imagesearch.config import ModelSettings, Settings
from imagesearch.models import ModelUnavailable, get_captioner, get_clip
from imagesearch.models.captioner import CaptionerSpec, load_captioner
from imagesearch.models.clip import ClipSpec, load_clip


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()  # the tiny models conftest saved and pointed the environment at


def test_clip_vectors_are_normalised_and_deterministic(settings):
    clip = get_clip(settings)
    assert get_clip(settings) is clip  # loaded once per process
    images = [Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (80, 120), (0, 0, 255))]
    first, second = clip.encode_images(images), clip.encode_images(images)
    assert first.shape == (2, clip.dim) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[1])


def test_short_text_encoding_equals_the_full_context(settings):
    """Tokens after end-of-text cannot change a causal transformer's pooled output."""
    clip = get_clip(settings)
    texts = ["a", "two red circles left of a blue square", "word " * 100]  # the last one is truncated at 77
    fast = clip.encode_texts(texts)
    tokens = clip.tokenizer(texts)
    full = clip.model.encode_text(tokens, normalize=True).detach().numpy()
    np.testing.assert_allclose(fast, full, atol=1e-5)


def test_identity_changes_with_the_weights(tmp_path):
    from imagesearch.dev.tiny_models import build_tiny_clip

    a = load_clip(ClipSpec("x", "y", build_tiny_clip(tmp_path / "a", seed=1), "cpu"))
    b = load_clip(ClipSpec("x", "y", build_tiny_clip(tmp_path / "b", seed=2), "cpu"))
    assert a.identity != b.identity and a.identity.startswith("clip:a@")


def test_captioner_writes_one_caption_per_image(settings):
    captioner = get_captioner(settings)
    captions = captioner.caption([Image.new("RGB", (64, 64), (0, 255, 0))] * 3)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captioner.caption([]) == []


def test_missing_files_are_named(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match=r"open_clip_model\.safetensors"):
        load_clip(ClipSpec("ViT-B-32", "openai", tmp_path / "clip", "cpu"))
    with pytest.raises(ModelUnavailable, match="is not a directory"):
        load_captioner(CaptionerSpec("x", tmp_path / "nothing-here", "cpu", 8, 1))
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / "config.json").write_text("{}")
    missing = r"lacks: model\.safetensors.*preprocessor_config\.json.*tokenizer\.json"
    with pytest.raises(ModelUnavailable, match=missing):
        load_captioner(CaptionerSpec("x", tmp_path / "cap", "cpu", 8, 1))


def test_offline_hub_failure_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="IMAGESEARCH_CLIP_MODEL_DIR"):
        load_clip(ClipSpec("ViT-B-32", "openai", None, "cpu"))
    with pytest.raises(ModelUnavailable, match="IMAGESEARCH_CAPTIONER_DIR"):
        load_captioner(CaptionerSpec("nlpconnect/vit-gpt2-image-captioning", None, "cpu", 8, 1))


def test_cpu_bf16_precision_stays_close_to_fp32():
    fp32 = get_clip(Settings(models=ModelSettings(precision="fp32")))
    bf16 = load_clip(ClipSpec.from_settings(Settings(models=ModelSettings(precision="bf16"))))
    images = [Image.new("RGB", (64, 64), (i * 50, 100, 200)) for i in range(4)]
    similarity = (fp32.encode_images(images) * bf16.encode_images(images)).sum(axis=1)
    assert bf16.dtype.is_floating_point and str(bf16.dtype) == "torch.bfloat16"
    assert (similarity > 0.99).all()
