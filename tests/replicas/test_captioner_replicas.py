"""The published captioners, loaded by hub name through the production path
(``IMAGESEARCH_CAPTIONER_MODEL=<repo>``, every other setting default but a short caption length) and
compared with what transformers itself generates from the same files: the model card's classes
(``VisionEncoderDecoderModel`` + ``ViTImageProcessor`` + the tokenizer; ``BlipForConditionalGeneration``
+ ``BlipProcessor``) with greedy ``generate``, and for BLIP the ``image-text-to-text`` pipeline too.

Random weights never emit end-of-text, so every caption is ``MAX_NEW_TOKENS`` long: the length bounds
the time. Run with ``-s`` to see the captions, the pixel differences and the timings.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from PIL import Image, ImageOps

from imagesearch.dev.replicas.captioners import (
    BLIP_BASE,
    SUPPORTED_CAPTIONERS,
    VIT_GPT2,
    install_captioner_replica,
)
from imagesearch.dev.replicas.hub_cache import remove_repo
from imagesearch.text import normalize_text

if TYPE_CHECKING:
    from imagesearch.models.captioner import Captioner

MAX_NEW_TOKENS = 12

# What the published repos hold and say (the replicas must have the real sizes and special ids).
PUBLISHED_FILES = {
    VIT_GPT2: {"config.json", "preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer.json",
               "special_tokens_map.json", "tokenizer_config.json"},
    BLIP_BASE: {"config.json", "preprocessor_config.json", "vocab.txt", "tokenizer.json",
                "special_tokens_map.json", "tokenizer_config.json"},
}
PUBLISHED = {
    VIT_GPT2: {"model_class": "VisionEncoderDecoderModel", "processor_class": "ViTImageProcessor",
               "tokenizer_class": "GPT2Tokenizer", "vocab_size": 50257, "image_size": 224,
               # no generation_config.json: 4.x's defaults, dumped into the sub-configs, become the model's
               "generation": {"max_length": 20, "num_beams": 1, "do_sample": False},
               # pad = eos = decoder start: the source of transformers' attention-mask warning
               "special": {"decoder_start": (50256, "<|endoftext|>"), "eos": (50256, "<|endoftext|>"),
                           "pad": (50256, "<|endoftext|>")}},
    BLIP_BASE: {"model_class": "BlipForConditionalGeneration", "processor_class": "BlipImageProcessor",
                "tokenizer_class": "BertTokenizer", "vocab_size": 30524, "image_size": 384,
                "generation": {"max_length": 20, "num_beams": 1, "do_sample": False},
                # generation starts at [DEC] and stops at [SEP] (BlipForConditionalGeneration.generate)
                "special": {"decoder_start": (30522, "[DEC]"), "eos": (102, "[SEP]"), "pad": (0, "[PAD]")}},
}


def _special_ids(config: Any, repo: str) -> dict[str, int]:
    """The ids generation uses, read from the loaded config the way each model's generate reads them."""
    if repo == VIT_GPT2:
        return {"decoder_start": config.decoder_start_token_id, "eos": config.eos_token_id,
                "pad": config.pad_token_id}
    text = config.text_config
    return {"decoder_start": text.bos_token_id, "eos": text.sep_token_id, "pad": text.pad_token_id}


def _photos() -> list[Image.Image]:
    """Three real photographs in different shapes (each resized differently by the processors)."""
    try:  # scikit-image's photographs, where it is installed
        from skimage import data

        return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]
    except ImportError:  # matplotlib (a project dependency) ships one photograph
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            portrait = Image.open(handle).convert("RGB")
        return [portrait, portrait.crop((0, 150, 512, 400)), ImageOps.mirror(portrait).resize((150, 176))]


def _normalise(text: str) -> str:
    """The production captioner's text rule (NFKC, collapsed whitespace: imagesearch/text.py)."""
    return normalize_text(text)


@dataclass
class Reference:
    captions: list[str]  # transformers' decode, untouched
    ids: list[list[int]]
    pixels: torch.Tensor
    model_class: str
    loading_info: dict[str, Any]
    output_layer_tied: bool
    generation: dict[str, Any]  # the loaded model's generation defaults


def _reference_parts(repo: str) -> tuple[Any, Any, Any]:
    """The model, the image preprocessing and the decoder, as each model card loads them."""
    if repo == VIT_GPT2:
        from transformers import AutoTokenizer, VisionEncoderDecoderModel, ViTImageProcessor

        model, info = VisionEncoderDecoderModel.from_pretrained(repo, output_loading_info=True)
        return (model, info), ViTImageProcessor.from_pretrained(repo), AutoTokenizer.from_pretrained(repo)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model, info = BlipForConditionalGeneration.from_pretrained(repo, output_loading_info=True)
    processor = BlipProcessor.from_pretrained(repo)
    return (model, info), processor, processor


# The output layer and the word embeddings it is tied to (one tensor in the trained checkpoints).
TIED = {
    VIT_GPT2: ("decoder.lm_head.weight", "decoder.transformer.wte.weight"),
    BLIP_BASE: ("text_decoder.cls.predictions.decoder.weight", "text_decoder.bert.embeddings.word_embeddings.weight"),
}


def _output_layer_tied(model: Any, repo: str) -> bool:
    output, embeddings = (model.get_parameter(name) for name in TIED[repo])
    return output.data_ptr() == embeddings.data_ptr()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return _photos()


@pytest.fixture(scope="module", params=SUPPORTED_CAPTIONERS)
def repo(request: pytest.FixtureRequest) -> Iterator[str]:
    started = time.perf_counter()
    install_captioner_replica(request.param)
    print(f"\n[{request.param}] replica built and installed in {time.perf_counter() - started:.1f} s")
    yield request.param
    remove_repo(request.param)


@pytest.fixture(scope="module")
def reference(repo: str, photos: list[Image.Image]) -> Reference:
    started = time.perf_counter()
    (model, info), processor, decoder = _reference_parts(repo)
    model.eval()
    pixels = processor(images=photos, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        ids = model.generate(pixel_values=pixels, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, do_sample=False)
    generation = {key: getattr(model.generation_config, key) for key in ("max_length", "num_beams", "do_sample")}
    result = Reference(decoder.batch_decode(ids, skip_special_tokens=True), ids.tolist(), pixels,
                       type(model).__name__, info, _output_layer_tied(model, repo), generation)
    print(f"[{repo}] reference generate: {time.perf_counter() - started:.1f} s, {result.captions}; "
          f"generation defaults {generation}")
    del model, processor, decoder
    gc.collect()
    return result


def _load_production(repo: str, **env: str) -> Captioner:
    """``load_captioner`` on ``Settings()`` read from the environment: the hub name, the short caption
    length, and ``env``; the session's IMAGESEARCH_CAPTIONER_DIR (tests/conftest.py) would win, so it goes."""
    from imagesearch.config import Settings
    from imagesearch.models.captioner import CaptionerSpec, load_captioner

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IMAGESEARCH_CAPTIONER_DIR", raising=False)
        patch.delenv("IMAGESEARCH_PRECISION", raising=False)
        patch.setenv("IMAGESEARCH_CAPTIONER_MODEL", repo)
        patch.setenv("IMAGESEARCH_CAPTION_MAX_LENGTH", str(MAX_NEW_TOKENS))
        for name, value in env.items():
            patch.setenv(name, value)
        return load_captioner(CaptionerSpec.from_settings(Settings()))


@pytest.fixture(scope="module")
def production(repo: str) -> Iterator[Captioner]:
    captioner = _load_production(repo)
    yield captioner
    del captioner
    gc.collect()


@pytest.fixture(scope="module")
def production_captions(repo: str, production: Captioner, photos: list[Image.Image]) -> list[str]:
    started = time.perf_counter()
    captions = production.caption(photos)
    print(f"[{repo}] production caption (batch of {len(photos)}): {time.perf_counter() - started:.1f} s")
    return captions


def test_replica_has_the_published_layout(repo: str, reference: Reference) -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    from imagesearch.dev.replicas.hub_cache import snapshot_path

    published = PUBLISHED[repo]
    snapshot = snapshot_path(repo)
    assert snapshot is not None
    files = {path.name for path in Path(snapshot).iterdir()}
    assert PUBLISHED_FILES[repo] <= files and {"model.safetensors"} & files, sorted(files)

    config = AutoConfig.from_pretrained(repo)
    text = config.decoder if repo == VIT_GPT2 else config.text_config
    vision = config.encoder if repo == VIT_GPT2 else config.vision_config
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers) == (published["vocab_size"], 768, 12)
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == \
        (published["image_size"], 16, 768, 12)
    # The weights load without a missing or unexpected tensor, with the output layer tied as trained.
    assert reference.model_class == published["model_class"]
    assert not any(reference.loading_info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert reference.output_layer_tied
    assert reference.generation == published["generation"]  # greedy by default, as the pipeline runs it
    assert tuple(reference.pixels.shape[-2:]) == (published["image_size"],) * 2
    assert type(AutoImageProcessor.from_pretrained(repo)).__name__ == published["processor_class"]

    tokenizer = AutoTokenizer.from_pretrained(repo)
    assert type(tokenizer).__name__ == published["tokenizer_class"]
    assert len(tokenizer) == published["vocab_size"]
    ids = _special_ids(config, repo)
    for role, (token_id, token) in published["special"].items():
        assert (ids[role], tokenizer.convert_ids_to_tokens(token_id)) == (token_id, token), role
    # Random weights emit any id: each must be a distinct token and decode to a string.
    tokens = tokenizer.convert_ids_to_tokens(list(range(published["vocab_size"])))
    assert None not in tokens and len(set(tokens)) == len(tokens)
    texts = tokenizer.batch_decode([[i] for i in range(published["vocab_size"])], skip_special_tokens=True)
    assert all(isinstance(text, str) for text in texts)
    assert texts[ids["decoder_start"]] == "" and texts[ids["eos"]] == ""  # special: dropped from captions


def test_production_captions_equal_transformers_generate(
        repo: str, production: Captioner, production_captions: list[str], reference: Reference,
        photos: list[Image.Image]) -> None:
    assert type(production.model).__name__ == reference.model_class
    assert production.model.dtype == torch.float32  # auto on CPU
    pixels = production.image_processor(images=photos, return_tensors="pt")["pixel_values"]
    pixel_difference = (pixels - reference.pixels).abs().max().item()
    print(f"[{repo}] production captions: {production_captions}; largest pixel difference {pixel_difference:.2e}")
    assert pixel_difference <= 1e-6
    # Production collapses whitespace (tabs, newlines, repeats), by design; nothing else may differ.
    raw_differs = [caption != _normalise(caption) for caption in reference.captions]
    print(f"[{repo}] reference captions that differ from production only by whitespace: {sum(raw_differs)}")
    assert production_captions == [_normalise(caption) for caption in reference.captions]
    assert max(len(ids) for ids in reference.ids) == 1 + MAX_NEW_TOKENS  # equal captions: production used it too


def test_production_captions_equal_the_pipeline(repo: str, production_captions: list[str],
                                                photos: list[Image.Image]) -> None:
    if repo == VIT_GPT2:
        pytest.skip("transformers 5 removed the image-to-text task; image-text-to-text needs a ProcessorMixin, "
                    "which vit-gpt2 (image processor + tokenizer, no processor) does not have")
    from transformers import pipeline

    started = time.perf_counter()
    captioner = pipeline("image-text-to-text", model=repo, device="cpu")
    # BLIP's processor takes an empty prompt; generate then starts from [DEC] alone, as without text.
    outputs = captioner(images=photos[:1], text=[""], max_new_tokens=MAX_NEW_TOKENS,
                        generate_kwargs={"do_sample": False, "num_beams": 1})
    print(f"[{repo}] pipeline: {time.perf_counter() - started:.1f} s, {outputs}")
    del captioner
    gc.collect()
    assert [_normalise(output["generated_text"]) for output in outputs] == production_captions[:1]


def test_batched_captions_equal_one_at_a_time(repo: str, production: Captioner, production_captions: list[str],
                                              photos: list[Image.Image]) -> None:
    started = time.perf_counter()
    singles = [production.caption([photo])[0] for photo in photos]
    print(f"[{repo}] one at a time: {time.perf_counter() - started:.1f} s")
    assert len(set(production_captions)) > 1  # the images reach the decoder: a shared caption would hide a mix-up
    assert singles == production_captions


class _EndRowAt:
    """Forces end-of-text in one row after ``step`` generated tokens (random weights never choose it)."""

    def __init__(self, row: int, step: int, eos: int) -> None:
        self.row, self.step, self.eos = row, step, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] == 1 + self.step:
            scores[self.row] = float("-inf")
            scores[self.row, self.eos] = 0.0
        return scores


def test_a_row_that_ends_early_changes_no_other_row(repo: str, production: Captioner, reference: Reference,
                                                    photos: list[Image.Image]) -> None:
    """Why transformers' warning ("attention mask ... cannot be inferred ... pad token is same as eos token")
    does not matter here: the decoder inputs are never padded (every row starts from the one start token, the
    encoder inputs are fixed-size pixels), and a row that ends is filled with pad tokens nobody attends to.
    vit-gpt2's pad is its eos, so the filler is end-of-text itself; BLIP's is [PAD]."""
    from transformers import LogitsProcessorList

    ids = _special_ids(production.model.config, repo)
    step = 3
    pixels = production.image_processor(images=photos[:2], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        output = production.model.generate(
            pixel_values=pixels, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, do_sample=False,
            logits_processor=LogitsProcessorList([_EndRowAt(0, step, ids["eos"])])).tolist()
    ended = reference.ids[0][:1 + step] + [ids["eos"]] + [ids["pad"]] * (MAX_NEW_TOKENS - step - 1)
    print(f"[{repo}] row ended early: {output[0]}")
    assert output[0] == ended
    assert output[1] == reference.ids[1]
    assert production.tokenizer.decode(output[0], skip_special_tokens=True) == \
        production.tokenizer.decode(reference.ids[0][:1 + step], skip_special_tokens=True)


def test_bf16_precision_holds_bf16_weights_and_captions(repo: str, photos: list[Image.Image]) -> None:
    started = time.perf_counter()
    captioner = _load_production(repo, IMAGESEARCH_PRECISION="bf16")
    try:
        assert captioner.model.dtype == torch.bfloat16
        assert {p.dtype for p in captioner.model.parameters() if p.is_floating_point()} == {torch.bfloat16}
        captions = captioner.caption(photos[:1])
    finally:
        del captioner
        gc.collect()
    print(f"[{repo}] bf16: {time.perf_counter() - started:.1f} s, {captions}")
    assert len(captions) == 1 and all(isinstance(caption, str) and caption for caption in captions)
