"""Small, untrained CLIP and captioner saved in the exact formats production loads.

They exist so that tests and the offline demo run the real loading and inference code without
network access. Their vectors carry no meaning: anything built on them says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

UNTRAINED_NOTE = "UNTRAINED demo model: random weights, search results carry no meaning"

# Words the untrained captioner's tokenizer knows; enough for plausible-looking output.
_VOCAB_WORDS = (
    "a an the one two three four of and with on in left right above below top bottom centre "
    "red green blue yellow orange purple white black grey small large circle circles square "
    "squares triangle triangles star stars photo picture image of dog cat person people house"
).split()


def build_tiny_clip(directory: Path, seed: int = 0, embed_dim: int = 64) -> Path:
    """Write an open_clip ``local-dir`` folder: open_clip_config.json + open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        # CLIP's own BPE tokenizer ships with open_clip, so queries tokenize like the real model's.
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    model = open_clip.CLIP(**model_cfg)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
        "note": UNTRAINED_NOTE,
    }
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def build_tiny_captioner(directory: Path, seed: int = 0) -> Path:
    """Write a transformers VisionEncoderDecoder folder (ViT encoder, GPT-2 decoder, word tokenizer)."""
    return build_captioner(directory, sorted(set(_VOCAB_WORDS)), seed=seed)


def build_captioner(directory: Path, words: list[str], *, seed: int = 0, image_size: int = 64, width: int = 64,
                    layers: int = 2, heads: int = 2, intermediate: int = 128, positions: int = 64,
                    note: str = UNTRAINED_NOTE, min_new_tokens: int | None = None) -> Path:
    """A VisionEncoderDecoder with random weights, saved with save_pretrained: ViT encoder (16 px
    patches) and GPT-2 decoder with cross-attention, both ``layers`` deep and ``width`` wide, and a
    word-level tokenizer over ``words`` plus [PAD] [UNK] [BOS] [EOS]. ``min_new_tokens`` makes every
    caption that long (random weights would otherwise stop at an arbitrary step)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {token: i for i, token in enumerate(specials + list(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )

    encoder = ViTModel(
        ViTConfig(image_size=image_size, patch_size=16, hidden_size=width, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=intermediate)
    )
    decoder = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                   add_cross_attention=True, bos_token_id=vocab["[BOS]"], eos_token_id=vocab["[EOS]"],
                   pad_token_id=vocab["[PAD]"])
    )
    model = encoder_decoder(encoder, decoder, vocab)
    if min_new_tokens is not None:
        model.generation_config.min_new_tokens = min_new_tokens
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    (directory / "NOTE.txt").write_text(note + "\n")
    return directory


def build_tiny_models(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Both models under ``root`` (``clip/`` and ``captioner/``); returns their folders."""
    return build_tiny_clip(root / "clip", seed), build_tiny_captioner(root / "captioner", seed)


def encoder_decoder(encoder: Any, decoder: Any, vocab: dict[str, int]) -> Any:
    """A VisionEncoderDecoder captioner whose special tokens are the word-level vocabulary's."""
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
    model = VisionEncoderDecoderModel(config=config, encoder=encoder, decoder=decoder)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = vocab["[BOS]"]
        cfg.bos_token_id = vocab["[BOS]"]
        cfg.eos_token_id = vocab["[EOS]"]
        cfg.pad_token_id = vocab["[PAD]"]
    model.generation_config.max_length = None  # callers pass max_new_tokens
    return model
