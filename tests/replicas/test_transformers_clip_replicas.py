"""transformers CLIP-family checkpoints, loaded by hub name through the production path
(``IMAGESEARCH_CLIP_MODEL=transformers:<repo>``, every other setting default) and compared with what
transformers itself computes from the same files: ``AutoModel`` + ``AutoProcessor`` with each family's
published text rules (SigLIP: padded to its 64 positions; CLIP and Chinese-CLIP: padded to the batch's
longest text, with the attention mask), truncated at the text tower's positions.

Run with ``-s`` to see the largest difference per checkpoint.
"""

from __future__ import annotations

import gc
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imagesearch.dev.replicas.hub_cache import remove_repo
from imagesearch.dev.replicas.transformers_clip import (
    CHINESE_CLIP_B16,
    CLIP_B32,
    SIGLIP_B16,
    SUPPORTED_REPOS,
    install_transformers_clip_replica,
)

TOLERANCE = 1e-5

ENGLISH = "a photo of a dog playing in the snow"
CHINESE = "一只猫坐在红色的沙发上"
# Longer than every tower's context (64, 77 and 512 tokens): the tail must be cut, not crash the model.
LONG_ENGLISH = " ".join(["two children running in front of a house with a red door"] * 60)
LONG_CHINESE = "两个孩子在房子前面奔跑。" * 50
# Different lengths in one batch: a missing attention mask (BERT) or a wrong pad rule (SigLIP) shows.
TEXTS = ["dog", ENGLISH, CHINESE, LONG_ENGLISH, "a red bus", LONG_CHINESE]

# What the published config.json files say (the replicas must have the real sizes).
PUBLISHED = {
    CLIP_B32: {"model_type": "clip", "projection_dim": 512,
               "text": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "vocab_size": 49408,
                        "max_position_embeddings": 77, "eos_token_id": 2, "hidden_act": "quick_gelu"},
               "vision": {"hidden_size": 768, "num_hidden_layers": 12, "patch_size": 32, "image_size": 224,
                          "hidden_act": "quick_gelu"}},
    CHINESE_CLIP_B16: {"model_type": "chinese_clip", "projection_dim": 512,
                       "text": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                "vocab_size": 21128, "max_position_embeddings": 512, "hidden_act": "gelu"},
                       "vision": {"hidden_size": 768, "num_hidden_layers": 12, "patch_size": 16, "image_size": 224,
                                  "hidden_act": "quick_gelu"}},
    SIGLIP_B16: {"model_type": "siglip", "projection_dim": None,
                 "text": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "vocab_size": 32000, "max_position_embeddings": 64},
                 "vision": {"hidden_size": 768, "num_hidden_layers": 12, "patch_size": 16, "image_size": 224}},
}
PUBLISHED_FILES = {
    CLIP_B32: {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt",
               "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"},
    CHINESE_CLIP_B16: {"config.json", "pytorch_model.bin", "preprocessor_config.json", "vocab.txt",
                       "special_tokens_map.json", "tokenizer_config.json"},
    SIGLIP_B16: {"config.json", "model.safetensors", "preprocessor_config.json", "spiece.model",
                 "special_tokens_map.json", "tokenizer_config.json"},
}


def _photos() -> list[Image.Image]:
    """Real photographs in several shapes: portrait, landscape, one smaller than the model input."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        portrait = Image.open(handle).convert("RGB")
    photos = [portrait, portrait.crop((0, 120, 512, 376)), portrait.resize((90, 70), Image.Resampling.BILINEAR)]
    try:  # scikit-image's photographs, where it is installed
        from skimage import data

        photos += [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]
    except ImportError:
        pass
    return photos


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns BaseModelOutputWithPooling (projected features in pooler_output).
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@dataclass
class Reference:
    """transformers' own computation from the replica's files."""

    model: Any
    processor: Any

    @property
    def context(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def texts(self, texts: list[str]) -> np.ndarray:
        padding = "max_length" if self.model.config.model_type == "siglip" else True
        inputs = self.processor(text=texts, padding=padding, truncation=True, max_length=self.context,
                                return_tensors="pt")
        with torch.inference_mode():
            return F.normalize(_features(self.model.get_text_features(**inputs)), dim=-1).numpy()

    def images(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1).numpy()


@pytest.fixture(scope="module", params=SUPPORTED_REPOS)
def repo(request: pytest.FixtureRequest) -> Iterator[str]:
    """One replica at a time in the session's private hub cache (each is several hundred MB)."""
    install_transformers_clip_replica(request.param)
    yield request.param
    remove_repo(request.param)


@pytest.fixture(scope="module")
def reference(repo: str) -> Iterator[Reference]:
    from transformers import AutoModel, AutoProcessor

    ref = Reference(AutoModel.from_pretrained(repo).eval(), AutoProcessor.from_pretrained(repo))
    yield ref
    del ref
    gc.collect()


@pytest.fixture(scope="module")
def production(repo: str) -> Iterator[Any]:
    from imagesearch.config import Settings
    from imagesearch.models.clip import ClipSpec, load_clip

    with pytest.MonkeyPatch.context() as mp:
        # tests/conftest.py points CLIP_MODEL_DIR at a tiny model, which would win over the hub name.
        for name in ("IMAGESEARCH_CLIP_MODEL_DIR", "IMAGESEARCH_CLIP_PRETRAINED", "IMAGESEARCH_CLIP_LANGUAGE",
                     "IMAGESEARCH_PRECISION"):
            mp.delenv(name, raising=False)
        mp.setenv("IMAGESEARCH_CLIP_MODEL", f"transformers:{repo}")
        encoder = load_clip(ClipSpec.from_settings(Settings()))
    yield encoder
    del encoder
    gc.collect()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return _photos()


def test_the_texts_are_already_normal() -> None:
    # Production NFKC-normalises texts before tokenising; the reference gets them as written, so the
    # comparison only holds for texts that normalisation leaves unchanged.
    for text in TEXTS:
        assert unicodedata.normalize("NFKC", text) == text and " ".join(text.split()) == text


def test_replica_has_the_published_files_and_sizes(repo: str, reference: Reference) -> None:
    from imagesearch.dev.replicas.hub_cache import snapshot_path

    snapshot = snapshot_path(repo)
    assert snapshot is not None
    assert {p.name for p in snapshot.iterdir()} == PUBLISHED_FILES[repo]
    config, published = reference.model.config, PUBLISHED[repo]
    assert config.model_type == published["model_type"]
    if published["projection_dim"] is not None:
        assert config.projection_dim == published["projection_dim"]
    for tower, fields in (("text", published["text"]), ("vision", published["vision"])):
        sub = getattr(config, f"{tower}_config")
        assert {key: getattr(sub, key) for key in fields} == fields, tower


def test_long_texts_exceed_every_context(reference: Reference) -> None:
    # Otherwise the comparison below would not exercise truncation.
    tokenizer = reference.processor.tokenizer
    for text in (LONG_ENGLISH, LONG_CHINESE):
        assert len(tokenizer(text, truncation=False)["input_ids"]) > reference.context


def test_text_vectors_match_reference(repo: str, production: Any, reference: Reference) -> None:
    ours, theirs = production.encode_texts(TEXTS), reference.texts(TEXTS)
    # One at a time too: in a batch holding a long text, "pad to the longest" already pads to the full
    # context, so only short texts alone tell SigLIP's fixed-length padding from it.
    ours_alone = np.concatenate([production.encode_texts([text]) for text in TEXTS])
    theirs_alone = np.concatenate([reference.texts([text]) for text in TEXTS])
    diff = max(_max_diff(ours, theirs), _max_diff(ours_alone, theirs_alone))
    print(f"\n{repo}: text max |diff| = {diff:.2e} over {len(TEXTS)} texts (batched and alone), dim {ours.shape[1]}")
    assert diff < TOLERANCE
    assert production.dim == ours.shape[1]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_text_vectors_do_not_depend_on_the_batch(repo: str, production: Any) -> None:
    batch = production.encode_texts(TEXTS)
    alone = np.concatenate([production.encode_texts([text]) for text in TEXTS])
    diff = _max_diff(batch, alone)
    print(f"\n{repo}: text batch-vs-alone max |diff| = {diff:.2e}")
    assert diff < TOLERANCE
    # And the texts are told apart at all (random weights still separate different inputs).
    assert _max_diff(batch[:1], batch[1:2]) > 100 * TOLERANCE


def test_image_vectors_match_reference(repo: str, production: Any, reference: Reference,
                                       photos: list[Image.Image]) -> None:
    ours, theirs = production.encode_images(photos), reference.images(photos)
    diff = _max_diff(ours, theirs)
    print(f"\n{repo}: image max |diff| = {diff:.2e} over {len(photos)} photos")
    assert diff < TOLERANCE
    assert ours.shape[1] == production.dim


def test_clip_tokenizer_is_open_clips_bpe(repo: str, reference: Reference) -> None:
    if repo != CLIP_B32:
        pytest.skip("CLIP's BPE only")
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    sot, eot = simple.all_special_ids
    texts = [ENGLISH, "Two children running in front of a house with a red door.", "it's a dog's life, isn't it?",
             "the quick brown fox jumps over 3 lazy dogs", CHINESE, "Café déjà vu — naïve 😀"]
    for text in texts:
        ours = reference.processor.tokenizer(text)["input_ids"]
        assert ours == [sot, *simple.encode(text), eot], text


def test_clip_keeps_the_legacy_eos_pooling(repo: str, reference: Reference) -> None:
    # The published config's eos_token_id is 2, not the tokenizer's 49407: transformers then pools at
    # the highest id (argmax), which is where <|endoftext|> stands.
    if repo != CLIP_B32:
        pytest.skip("CLIP only")
    assert reference.model.config.text_config.eos_token_id == 2
    assert reference.processor.tokenizer.eos_token_id == reference.model.config.text_config.vocab_size - 1


def test_chinese_tokenizes_per_character(repo: str, reference: Reference) -> None:
    if repo != CHINESE_CLIP_B16:
        pytest.skip("Chinese-CLIP only")
    tokenizer = reference.processor.tokenizer
    ids = tokenizer(CHINESE)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id == 101 and ids[-1] == tokenizer.sep_token_id == 102
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == list(CHINESE)
    assert tokenizer.unk_token_id not in ids
