"""Replicas of the transformers CLIP-family checkpoints, loaded as ``IMAGESEARCH_CLIP_MODEL=transformers:<repo>``.

Each replica has the published file names, the published config fields (real sizes, so dimensions and
costs are real), the published tokenizer class and preprocessor config, and small random weights:

- ``openai/clip-vit-base-patch32``: CLIPModel. The config is the 2022 one, whose text ``eos_token_id``
  is the legacy ``2`` (transformers then pools at the highest token id, see CLIPTextTransformer). The
  tokenizer is CLIP's real 49408-token byte-level BPE, rebuilt from open_clip's bundled merges.
- ``OFA-Sys/chinese-clip-vit-base-patch16``: ChineseCLIPModel (RoBERTa-wwm-ext base text tower), a
  BertTokenizer ``vocab.txt`` of 21128 entries laid out as BERT-Chinese's (special ids, ASCII, CJK
  characters, so Chinese tokenizes per character), weights as ``pytorch_model.bin`` as published.
- ``google/siglip-base-patch16-224``: SiglipModel, a SiglipTokenizer over a small ``spiece.model``
  trained here (the model's vocab stays 32000), text padded to 64 tokens as it was trained.

Nothing here is trained; the vectors only show that a loader computes what transformers computes.

Provenance (no hub access offline): the CLIP config and Chinese-CLIP's text config were checked
against public copies; Chinese-CLIP's preprocessor config (224x224, no crop) and SigLIP's tokenizer
config (``model_input_names: ["input_ids"]``: no attention mask) are written from memory.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from imagesearch.dev.replicas.hub_cache import install_snapshot
from imagesearch.dev.replicas.weights import randomize_

CLIP_B32 = "openai/clip-vit-base-patch32"
CHINESE_CLIP_B16 = "OFA-Sys/chinese-clip-vit-base-patch16"
SIGLIP_B16 = "google/siglip-base-patch16-224"

SUPPORTED_REPOS: tuple[str, ...] = (CLIP_B32, CHINESE_CLIP_B16, SIGLIP_B16)

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
BICUBIC = 3  # PIL.Image.BICUBIC, as the published preprocessor configs spell it


# --- configs, as published (field values of the hub's config.json files) ------------------------------

def _clip_b32_config() -> dict[str, Any]:
    # The 2022 file: sub-configs written by transformers 4.16, ``text_config_dict``/``vision_config_dict``
    # null, and the text tower's legacy token ids (bos 0, pad 1, eos 2) that do not match the tokenizer.
    text = {
        "_name_or_path": "", "architectures": None, "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
        "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 512, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
        "model_type": "clip_text_model", "num_attention_heads": 8, "num_hidden_layers": 12, "pad_token_id": 1,
        "projection_dim": 512, "tie_word_embeddings": True, "torch_dtype": None,
        "transformers_version": "4.16.0.dev0", "vocab_size": 49408,
    }
    vision = {
        "_name_or_path": "", "architectures": None, "attention_dropout": 0.0, "dropout": 0.0,
        "hidden_act": "quick_gelu", "hidden_size": 768, "image_size": 224, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model", "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 32,
        "projection_dim": 512, "torch_dtype": None, "transformers_version": "4.16.0.dev0",
    }
    return {
        "_name_or_path": CLIP_B32, "architectures": ["CLIPModel"], "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": 512, "text_config": text,
        "text_config_dict": None, "transformers_version": None, "vision_config": vision, "vision_config_dict": None,
    }


def _chinese_clip_b16_config() -> dict[str, Any]:
    text = {
        "architectures": ["ChineseCLIPTextModel"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
        "directionality": "bidi", "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "chinese_clip_text_model", "num_attention_heads": 12,
        "num_hidden_layers": 12, "output_past": True, "pad_token_id": 0, "pooler_fc_size": 768,
        "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3, "pooler_size_per_head": 128,
        "pooler_type": "first_token_transform", "type_vocab_size": 2, "vocab_size": 21128,
    }
    vision = {
        "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": 768, "image_size": 224, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
        "model_type": "chinese_clip_vision_model", "num_attention_heads": 12, "num_channels": 3,
        "num_hidden_layers": 12, "patch_size": 16, "projection_dim": 512,
    }
    return {
        "architectures": ["ChineseCLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
        "model_type": "chinese_clip", "projection_dim": 512, "text_config": text, "text_config_dict": None,
        "torch_dtype": "float32", "transformers_version": None, "vision_config": vision, "vision_config_dict": None,
    }


def _siglip_b16_config() -> dict[str, Any]:
    # The published file names only what differs from SiglipConfig's defaults, which are this checkpoint's
    # (text: 12 layers, 64 positions, gelu_pytorch_tanh; vision: 768 wide, 12 layers, 224 px).
    return {
        "architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "model_type": "siglip_text_model",
                        "num_attention_heads": 12, "vocab_size": 32000},
        "torch_dtype": "float32", "transformers_version": "4.37.0.dev0",
        "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16},
    }


# --- preprocessor configs, as published ---------------------------------------------------------------

CLIP_B32_PREPROCESSOR: dict[str, Any] = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD,
    "resample": BICUBIC, "size": 224,
}
# Chinese-CLIP squashes to 224x224 (no crop), as its original training code resized.
CHINESE_CLIP_B16_PREPROCESSOR: dict[str, Any] = {
    "crop_size": 224, "do_center_crop": False, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "ChineseCLIPFeatureExtractor", "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD,
    "resample": BICUBIC, "size": {"height": 224, "width": 224},
}
SIGLIP_B16_PREPROCESSOR: dict[str, Any] = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor",
    "resample": BICUBIC, "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224},
}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _random_model(config_dict: dict[str, Any], seed: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**config_dict)
    model = AutoModel.from_config(config)
    return randomize_(model.eval(), seed)


def _save_weights(model: torch.nn.Module, out: Path, config: dict[str, Any], *, bin_file: bool = False) -> None:
    """Weights in the library's on-disk key format; the config file is the published text, not a re-dump."""
    model.save_pretrained(out)
    if bin_file:
        from safetensors.torch import load_file

        state = load_file(str(out / "model.safetensors"))
        torch.save(state, out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    (out / "generation_config.json").unlink(missing_ok=True)  # not published for these encoders
    _write_json(out / "config.json", config)


# --- CLIP: the real BPE vocabulary from open_clip's merges ------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible byte -> printable character map (the first 512 vocabulary entries).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_bpe_vocabulary() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49408-token vocabulary and its 48894 merges, built as open_clip's SimpleTokenizer builds them."""
    import open_clip.tokenizer as oc_tokenizer

    bpe_path = Path(oc_tokenizer.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _added_token(content: str) -> dict[str, Any]:
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
            "__type": "AddedToken"}


def _write_clip_tokenizer(out: Path) -> None:
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocabulary()
    _write_json(out / "vocab.json", vocab)
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # tokenizer.json: the library's own serialisation of the same BPE (normaliser, splitter, post-processor).
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    specials = {"bos_token": _added_token("<|startoftext|>"), "eos_token": _added_token("<|endoftext|>"),
                "unk_token": _added_token("<|endoftext|>"), "pad_token": "<|endoftext|>"}
    _write_json(out / "special_tokens_map.json", specials)
    _write_json(out / "tokenizer_config.json", {
        **specials, "add_prefix_space": False, "errors": "replace", "do_lower_case": True,
        "name_or_path": CLIP_B32, "model_max_length": 77, "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
    })


# --- Chinese-CLIP: a BERT-Chinese-shaped vocab.txt --------------------------------------------------

BERT_CHINESE_VOCAB_SIZE = 21128
_CJK_PUNCTUATION = "，。、；：？！“”‘’（）《》〈〉【】「」『』…—～·"
_ENGLISH_PIECES = ("the", "of", "and", "in", "on", "with", "photo", "dog", "cat", "red", "house", "##s", "##ing",
                   "##ed", "##er", "##ly")


def bert_chinese_vocabulary() -> list[str]:
    """21128 tokens in BERT-Chinese's layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103,
    then ASCII, CJK punctuation, a few English pieces and CJK characters from U+4E00 (one token each)."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    ascii_chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    tokens += ascii_chars + ["##" + c for c in ascii_chars if c.isalnum()]
    tokens += list(_CJK_PUNCTUATION) + list(_ENGLISH_PIECES)
    seen = set(tokens)
    code = 0x4E00
    while len(tokens) < BERT_CHINESE_VOCAB_SIZE:
        if chr(code) not in seen:
            tokens.append(chr(code))
        code += 1
    return tokens


def _write_bert_chinese_tokenizer(out: Path) -> None:
    (out / "vocab.txt").write_text("\n".join(bert_chinese_vocabulary()) + "\n", encoding="utf-8")
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    _write_json(out / "special_tokens_map.json", specials)
    # No model_max_length, as in BERT-Chinese-derived files: a loader has to bound the length itself
    # (the text tower has 512 positions).
    _write_json(out / "tokenizer_config.json", {
        **specials, "do_lower_case": True, "do_basic_tokenize": True, "never_split": None,
        "tokenize_chinese_chars": True, "strip_accents": None, "tokenizer_class": "BertTokenizer",
    })


# --- SigLIP: a small sentencepiece model --------------------------------------------------------------

_SPIECE_CORPUS = (
    "a photo of a dog playing in the snow",
    "two children running in front of a house with a red door",
    "a cat sleeping on a sofa next to a window",
    "a bowl of soup on a wooden table",
    "a woman in uniform looking at the camera",
    "an aerial view of a city at night with bright lights",
    "a red bus driving down a busy street",
    "the quick brown fox jumps over the lazy dog",
    "一只猫坐在红色的沙发上",
    "两个孩子在房子前面奔跑",
    "雪地里玩耍的小狗",
    "桌子上有一碗热汤",
)


def _write_siglip_tokenizer(out: Path) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    # Ids as in the published spiece.model: <pad>=0, </s>=1 (eos and pad), <unk>=2, no bos.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SPIECE_CORPUS * 20), model_writer=model, vocab_size=300, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", num_threads=1, minloglevel=2,
    )
    (out / "spiece.model").write_bytes(model.getvalue())
    _write_json(out / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    _write_json(out / "tokenizer_config.json", {
        "additional_special_tokens": [], "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "</s>", "model_input_names": ["input_ids"], "model_max_length": 64, "pad_token": "</s>",
        "processor_class": "SiglipProcessor", "sp_model_kwargs": {}, "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    })


# --- the replicas -------------------------------------------------------------------------------------

def _build_clip_b32(out: Path, seed: int) -> None:
    config = _clip_b32_config()
    _save_weights(_random_model(config, seed), out, config)
    _write_json(out / "preprocessor_config.json", CLIP_B32_PREPROCESSOR)
    _write_clip_tokenizer(out)


def _build_chinese_clip_b16(out: Path, seed: int) -> None:
    config = _chinese_clip_b16_config()
    _save_weights(_random_model(config, seed), out, config, bin_file=True)
    _write_json(out / "preprocessor_config.json", CHINESE_CLIP_B16_PREPROCESSOR)
    _write_bert_chinese_tokenizer(out)


def _build_siglip_b16(out: Path, seed: int) -> None:
    config = _siglip_b16_config()
    _save_weights(_random_model(config, seed), out, config)
    _write_json(out / "preprocessor_config.json", SIGLIP_B16_PREPROCESSOR)
    _write_siglip_tokenizer(out)


_BUILDERS: dict[str, Callable[[Path, int], None]] = {
    CLIP_B32: _build_clip_b32,
    CHINESE_CLIP_B16: _build_chinese_clip_b16,
    SIGLIP_B16: _build_siglip_b16,
}


def install_transformers_clip_replica(repo_id: str, *, seed: int = 0) -> Path:
    """Build the replica of ``repo_id`` (one of :data:`SUPPORTED_REPOS`) into the hub cache; returns the snapshot."""
    try:
        build = _BUILDERS[repo_id]
    except KeyError:
        raise ValueError(f"no transformers CLIP replica for {repo_id!r}; known: {', '.join(SUPPORTED_REPOS)}") from None
    with tempfile.TemporaryDirectory(prefix="replica-") as tmp:
        build(Path(tmp), seed)
        return install_snapshot(repo_id, Path(tmp))
