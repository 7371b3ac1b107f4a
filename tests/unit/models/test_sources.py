"""The three CLIP sources, folder detection, the tag-driven activation and query text normalisation.

Fast: tiny transformers models saved to a folder stand in for the hub; tests/replicas/ loads the
published architectures by hub name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import (
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2Processor,
)

from imagesearch.errors import ConfigurationError
from imagesearch.models import ModelMisconfigured
from imagesearch.models.clip import ClipSpec, load_clip
from imagesearch.models.open_clip_backend import needs_quick_gelu
from imagesearch.models.sources import parse_clip_source
from imagesearch.text import normalize_text
from imagesearch.vocab import Library, SourceKind
from tests.support.tiny_transformers import SPECIALS, save_tiny_clip, save_tiny_siglip, tiny_tower, word_tokenizer

WORDS = [*SPECIALS, "a", "red", "dog", "two", "children", "running", "house"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-transformers-clip"), WORDS, 32)


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), WORDS, 32)


@pytest.fixture(scope="module")
def siglip2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-siglip2")
    config = Siglip2Config(text_config=tiny_tower(vocab_size=len(WORDS), max_position_embeddings=12),
                           vision_config=tiny_tower(patch_size=8, num_patches=16))
    Siglip2Model(config).save_pretrained(folder)
    processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    Siglip2Processor(image_processor=processor, tokenizer=word_tokenizer(WORDS, 12)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("model", "kind", "name"), [
    ("ViT-B-32", SourceKind.REGISTRY, "ViT-B-32"),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", SourceKind.HF_HUB, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("transformers:openai/clip-vit-base-patch32", SourceKind.TRANSFORMERS, "openai/clip-vit-base-patch32"),
])
def test_one_setting_names_three_sources(model, kind, name):
    source = parse_clip_source(model, "laion2b_s34b_b79k", None)
    assert (source.kind, source.name) == (kind, name)
    assert source.label.startswith(f"{kind}:")


@pytest.mark.parametrize("model", ["hf-hub:", "transformers:just-a-name", "transformers:a/b/c", ""])
def test_malformed_sources_are_configuration_errors(model):
    with pytest.raises(ConfigurationError):
        parse_clip_source(model, "tag", None)


def test_a_registry_name_needs_a_tag():
    with pytest.raises(ConfigurationError, match="CLIP_PRETRAINED"):
        parse_clip_source("ViT-B-32", "", None)


def test_folders_are_told_apart_by_their_config(tmp_path, clip_folder):
    assert parse_clip_source("x", None, clip_folder).library is Library.TRANSFORMERS
    (tmp_path / "open_clip_config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")  # an HF text tower's config beside open_clip's
    assert parse_clip_source("x", None, tmp_path).library is Library.OPEN_CLIP


def test_the_activation_follows_the_tag():
    assert needs_quick_gelu("ViT-B-32", "openai")
    assert not needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not needs_quick_gelu("ViT-B-32-quickgelu", "openai")  # the architecture already has it


def test_transformers_folder_encodes_normalised_vectors(clip_folder):
    clip = load_clip(ClipSpec("unused", None, clip_folder, "cpu"))
    texts = clip.encode_texts(["a red dog", "two children running in front of a house"])
    images = clip.encode_images([Image.new("RGB", (50, 40), "red"), Image.new("RGB", (40, 50), "blue")])
    assert texts.shape == (2, clip.dim) and images.shape == (2, clip.dim) and clip.dim == 16
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    # The attention mask goes with padded ids: a text's vector does not depend on its batch.
    alone = clip.encode_texts(["a red dog"])[0]
    assert np.abs(alone - texts[0]).max() < 1e-5
    assert clip.identity.startswith(f"clip:{clip_folder.name}@")


def test_siglip_pads_every_text_to_its_full_context(siglip_folder):
    clip = load_clip(ClipSpec("unused", None, siglip_folder, "cpu"))
    assert clip.padding == "max_length" and clip.max_length == 12
    tokens = clip.tokenizer(["a dog"], padding=clip.padding, truncation=True, max_length=clip.max_length)
    assert len(tokens["input_ids"][0]) == 12


def test_a_language_code_is_refused_where_the_model_has_none(clip_folder):
    # Misconfigured models are transient for the messages waiting on them: retried, never failed.
    with pytest.raises(ModelMisconfigured, match="CLIP_LANGUAGE"):
        load_clip(ClipSpec("unused", None, clip_folder, "cpu", language="zho_Hans"))


def test_full_width_and_spacing_normalise_to_one_form(clip_folder):
    assert normalize_text("ＴＷＯ　ｒｅｄ  circles\u3000２") == "TWO red circles 2"
    assert normalize_text("两个红色圆形") == "两个红色圆形"
    clip = load_clip(ClipSpec("unused", None, clip_folder, "cpu"))
    assert np.abs(clip.encode_texts(["ａ　ｒｅｄ　ｄｏｇ"]) - clip.encode_texts(["a red dog"])).max() == 0


def test_siglip2_patch_inputs_pass_through_the_pipeline_interface(siglip2_folder):
    """SigLIP 2's processor emits patches, a patch mask and shapes per image: preprocess() keeps
    them together and collate() stacks them, as the embed stage calls it."""
    import torch
    from transformers import AutoModel

    clip = load_clip(ClipSpec("unused", None, siglip2_folder, "cpu"))
    images = [Image.new("RGB", (50, 40), "red"), Image.new("RGB", (30, 90), "blue")]
    item = clip.preprocess(images[0])
    assert isinstance(item, dict) and {"pixel_values", "pixel_attention_mask", "spatial_shapes"} <= set(item)
    ours = clip.encode_pixels(clip.collate([clip.preprocess(image) for image in images]))
    model = AutoModel.from_pretrained(siglip2_folder).eval()
    with torch.inference_mode():
        output = model.get_image_features(**clip.image_processor(images=images, return_tensors="pt"))
    reference = torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).numpy()
    assert np.abs(ours - reference).max() < 1e-5
    assert clip.padding == "max_length"


@pytest.fixture(scope="module")
def nllb_tokenizer_folder(tmp_path_factory):
    """A tiny open_clip local-dir CLIP whose tokenizer is an NllbTokenizer (200 language codes)."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file
    from transformers import NllbTokenizer

    folder = tmp_path_factory.mktemp("tiny-nllb-tokenizer")
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁dog", "▁red", "a", "d", "o", "g", "r", "e", "▁"]
    tokenizer = NllbTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], src_lang="eng_Latn")
    tokenizer.save_pretrained(folder)
    text_cfg = {"context_length": 12, "vocab_size": len(tokenizer), "width": 32, "heads": 2, "layers": 2,
                "hf_tokenizer_name": "./", "pool_type": "eos", "eos_id": tokenizer.eos_token_id,
                "pad_id": tokenizer.pad_token_id}
    vision_cfg = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
    model_cfg = {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def test_a_language_code_goes_before_every_text(nllb_tokenizer_folder):
    chinese = load_clip(ClipSpec("unused", None, nllb_tokenizer_folder, "cpu", language="zho_Hans"))
    english = load_clip(ClipSpec("unused", None, nllb_tokenizer_folder, "cpu", language="eng_Latn"))
    code = chinese.tokenizer.tokenizer.convert_tokens_to_ids("zho_Hans")
    # Every call, not only the first: transformers 5 resets open_clip's set_language on the next call.
    for _ in range(2):
        assert chinese.tokenizer(["a red dog"])[0, 0].item() == code
    assert np.abs(chinese.encode_texts(["a red dog"]) - english.encode_texts(["a red dog"])).max() > 1e-4


def test_an_unknown_language_code_is_refused(nllb_tokenizer_folder):
    with pytest.raises(ModelMisconfigured, match="not a language code"):
        load_clip(ClipSpec("unused", None, nllb_tokenizer_folder, "cpu", language="klingon"))
