"""Parts of tiny transformers checkpoints that tests save to a folder in place of the hub's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

SPECIALS = ["[PAD]", "[UNK]", "<s>", "</s>"]


def word_tokenizer(words: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``words`` (ids in order), which must start with
    ``SPECIALS`` so pad, unknown, begin and end are ids 0-3, as the tiny text configs say."""
    if list(words[:len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"words must start with {SPECIALS}")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length)


def tiny_tower(**extra: int) -> dict:
    """A two-layer, 32-wide transformer tower config (text or vision), plus ``extra``."""
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, **extra)


def save_tiny_clip(folder: Path, words: Sequence[str], image_size: int) -> Path:
    """A CLIPModel with random weights and its processor (shorter side to ``image_size``, centre
    crop, CLIP's bicubic) saved to ``folder`` with save_pretrained."""
    config = CLIPConfig(text_config=tiny_tower(vocab_size=len(words), max_position_embeddings=16, pad_token_id=0,
                                               bos_token_id=2, eos_token_id=3),
                        vision_config=tiny_tower(image_size=image_size, patch_size=8), projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=processor, tokenizer=word_tokenizer(words, 16)).save_pretrained(folder)
    return folder


def save_tiny_siglip(folder: Path, words: Sequence[str], image_size: int, **processor: Any) -> Path:
    """A SiglipModel with random weights and its processor (squashed to ``image_size`` square, plus
    ``processor``'s settings) saved to ``folder`` with save_pretrained."""
    SiglipModel(SiglipConfig(text_config=tiny_tower(vocab_size=len(words), max_position_embeddings=12),
                             vision_config=tiny_tower(image_size=image_size, patch_size=8))).save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size}, **processor)
    SiglipProcessor(image_processor=image_processor, tokenizer=word_tokenizer(words, 12)).save_pretrained(folder)
    return folder
