"""Replicas of the published captioners, loaded in production as ``IMAGESEARCH_CAPTIONER_MODEL=<repo>``.

Each replica has the hub repo's file names, its ``config.json`` as published (transformers 4.x wrote every
generation default into each sub-config, and a replica keeps them: they are what a 5.x loader has to read),
its preprocessor config and its tokenizer class and special tokens, with the real architecture sizes and
small random weights (:func:`imagesearch.dev.replicas.weights.randomize_`).

Written from what the repos publish (config values checked against a dump of the BLIP config and the
ViT-GPT2 training recipe of its author; tokenizer_config/special_tokens_map from memory of the hub files).
Two things differ on purpose:

- the weights are saved as ``model.safetensors`` (the repos also carry ``pytorch_model.bin``; transformers
  prefers safetensors, and a pickle would be slower and unsafe to load);
- the vocabularies are synthetic, of the published *size*: random weights emit any id, so every id of the
  output layer must decode. GPT-2's is byte-level BPE: 256 byte symbols, 50,000 merges, ``<|endoftext|>``
  last (50,257); BLIP's is bert-base-uncased's layout (``[PAD]`` 0, ``[unused*]``, ``[UNK]`` 100, ``[CLS]``
  101, ``[SEP]`` 102, ``[MASK]`` 103, 30,522 entries) plus ``[DEC]`` 30522 and ``[ENC]`` 30523.
"""

from __future__ import annotations

import itertools
import json
import string
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from imagesearch.dev.replicas.hub_cache import hub_cache_dir, install_snapshot
from imagesearch.dev.replicas.weights import randomize_

VIT_GPT2 = "nlpconnect/vit-gpt2-image-captioning"
BLIP_BASE = "Salesforce/blip-image-captioning-base"
SUPPORTED_CAPTIONERS: tuple[str, ...] = (VIT_GPT2, BLIP_BASE)

GPT2_EOS = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
BERT_BASE_VOCAB_SIZE = 30522  # bert-base-uncased; BLIP appends [DEC] and [ENC]
BLIP_EXTRA_TOKENS = ("[DEC]", "[ENC]")


# ---------------------------------------------------------------------------------------------- configs


def _legacy_config(version: str, *, newer_fields: bool, **fields: Any) -> dict[str, Any]:
    """A sub-config as transformers 4.x's ``to_dict`` wrote it: every generation default inline.

    ``newer_fields`` adds the keys that 4.26-era dumps have and 4.17-era ones lack.
    """
    base: dict[str, Any] = {
        "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
        "bos_token_id": None, "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
        "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
        "encoder_no_repeat_ngram_size": 0, "eos_token_id": None, "finetuning_task": None,
        "forced_bos_token_id": None, "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "is_decoder": False, "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "length_penalty": 1.0, "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0,
        "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1, "output_attentions": False,
        "output_hidden_states": False, "output_scores": False, "pad_token_id": None, "prefix": None,
        "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0,
        "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None,
        "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None,
        "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False, "transformers_version": version,
        "use_bfloat16": False,
    }
    if newer_fields:
        base.update({"begin_suppress_tokens": None, "exponential_decay_length_penalty": None,
                     "suppress_tokens": None, "tf_legacy_loss": False, "typical_p": 1.0})
    return dict(sorted({**base, **fields}.items()))


def vit_gpt2_config() -> dict[str, Any]:
    """``config.json`` of nlpconnect/vit-gpt2-image-captioning (transformers 4.17.0.dev0)."""
    version = "4.17.0.dev0"
    decoder = _legacy_config(
        version, newer_fields=False,
        activation_function="gelu_new", add_cross_attention=True, architectures=["GPT2LMHeadModel"],
        attn_pdrop=0.1, bos_token_id=50256, decoder_start_token_id=50256, embd_pdrop=0.1, eos_token_id=50256,
        initializer_range=0.02, is_decoder=True, layer_norm_epsilon=1e-05, model_type="gpt2", n_ctx=1024,
        n_embd=768, n_head=12, n_inner=None, n_layer=12, n_positions=1024, pad_token_id=50256,
        reorder_and_upcast_attn=False, resid_pdrop=0.1, scale_attn_by_inverse_layer_idx=False,
        scale_attn_weights=True, summary_activation=None, summary_first_dropout=0.1, summary_proj_to_labels=True,
        summary_type="cls_index", summary_use_proj=True,
        task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}},
        use_cache=True, vocab_size=GPT2_VOCAB_SIZE,
    )
    encoder = _legacy_config(
        version, newer_fields=False,
        architectures=["ViTModel"], attention_probs_dropout_prob=0.0, encoder_stride=16, hidden_act="gelu",
        hidden_dropout_prob=0.0, hidden_size=768, image_size=224, initializer_range=0.02, intermediate_size=3072,
        layer_norm_eps=1e-12, model_type="vit", num_attention_heads=12, num_channels=3, num_hidden_layers=12,
        patch_size=16, qkv_bias=True,
    )
    return {
        "_name_or_path": "./vit-gpt2-image-captioning", "architectures": ["VisionEncoderDecoderModel"],
        "bos_token_id": 50256, "decoder": decoder, "decoder_start_token_id": 50256, "encoder": encoder,
        "eos_token_id": 50256, "is_encoder_decoder": True, "model_type": "vision-encoder-decoder",
        "pad_token_id": 50256, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": None,
    }


def blip_base_config() -> dict[str, Any]:
    """``config.json`` of Salesforce/blip-image-captioning-base (transformers 4.26.0.dev0).

    Note the published oddities: text ``eos_token_id`` 2 (generation stops on ``sep_token_id`` 102 instead:
    ``BlipForConditionalGeneration.generate`` passes it), ``bos_token_id`` 30522 = ``[DEC]``.
    """
    version = "4.26.0.dev0"
    text = _legacy_config(
        version, newer_fields=True,
        attention_probs_dropout_prob=0.0, bos_token_id=30522, eos_token_id=2, hidden_act="gelu",
        hidden_dropout_prob=0.0, hidden_size=768, initializer_factor=1.0, initializer_range=0.02,
        intermediate_size=3072, is_decoder=True, layer_norm_eps=1e-12, max_position_embeddings=512,
        model_type="blip_text_model", num_attention_heads=12, num_hidden_layers=12, pad_token_id=0,
        projection_dim=768, sep_token_id=102, use_cache=True, vocab_size=BERT_BASE_VOCAB_SIZE + 2,
    )
    vision = _legacy_config(
        version, newer_fields=True,
        attention_dropout=0.0, dropout=0.0, hidden_act="gelu", hidden_size=768, image_size=384,
        initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-05,
        model_type="blip_vision_model", num_attention_heads=12, num_channels=3, num_hidden_layers=12,
        patch_size=16, projection_dim=512,
    )
    return {
        "_commit_hash": None, "architectures": ["BlipForConditionalGeneration"], "image_text_hidden_size": 256,
        "initializer_factor": 1.0, "logit_scale_init_value": 2.6592, "model_type": "blip", "projection_dim": 512,
        "text_config": text, "torch_dtype": "float32", "transformers_version": None, "vision_config": vision,
    }


VIT_GPT2_PREPROCESSOR: dict[str, Any] = {
    # The pre-image-processor serialisation: no do_rescale / rescale_factor (ViTImageProcessor's defaults,
    # 1/255, fill them in), size a bare int (expanded to a 224x224 square).
    "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224,
}

BLIP_PREPROCESSOR: dict[str, Any] = {
    "do_normalize": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "BlipImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "BlipProcessor", "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384},
}


# ------------------------------------------------------------------------------------------- tokenizers


def gpt2_byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table, in its id order: printable bytes as themselves, the rest shifted
    past U+0100 so that no symbol is whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
    return [table[b] for b in (*printable, *shifted)]


def _diagonal_pairs(symbols: list[str]) -> Iterator[tuple[str, str]]:
    """Every (a, b) pair of ``symbols``, by increasing index sum: early merges join early (printable) bytes."""
    n = len(symbols)
    for total in range(2 * n - 1):
        for i in range(max(0, total - n + 1), min(total, n - 1) + 1):
            yield symbols[i], symbols[total - i]


def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary of exactly GPT-2's size: 256 byte symbols (ids 0-255), 50,000 merges of
    two bytes each (ids 256-50255, in merge order, as GPT-2's are), ``<|endoftext|>`` 50256."""
    symbols = gpt2_byte_symbols()
    merges = list(itertools.islice(_diagonal_pairs(symbols), GPT2_VOCAB_SIZE - 1 - len(symbols)))
    tokens = [*symbols, *(a + b for a, b in merges), GPT2_EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    assert len(vocab) == GPT2_VOCAB_SIZE  # two-byte strings of distinct pairs never collide
    return vocab, merges


def _write_gpt2_tokenizer(folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = gpt2_vocab_and_merges()
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="",
                              fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tokenizer.add_special_tokens([AddedToken(GPT2_EOS, special=True, normalized=True)])
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "vocab.json", vocab, compact=True)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "bos_token": GPT2_EOS, "eos_token": GPT2_EOS, "model_max_length": 1024,
        "name_or_path": "gpt2", "special_tokens_map_file": None, "tokenizer_class": "GPT2Tokenizer",
        "unk_token": GPT2_EOS,
    })
    # The author's recipe sets pad = eos on the tokenizer before saving (GPT-2 has no pad token).
    _write_json(folder / "special_tokens_map.json",
                {"bos_token": GPT2_EOS, "eos_token": GPT2_EOS, "pad_token": GPT2_EOS, "unk_token": GPT2_EOS})


def bert_uncased_tokens() -> list[str]:
    """30,522 WordPiece entries laid out as bert-base-uncased's: the special and ``[unused*]`` ids where
    BERT has them (0-998), then single characters, their ``##`` continuations and synthetic lowercase
    words and pieces, in a fixed order."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
            *(f"[unused{i}]" for i in range(99, 994))]
    chars = [c for c in string.punctuation + string.digits + string.ascii_lowercase]
    chars += [chr(c) for c in range(0xDF, 0x100) if chr(c) != "÷"]  # Latin-1 lowercase letters
    chars += [chr(c) for c in range(0x3B1, 0x3CA)]  # Greek lowercase
    chars += [chr(c) for c in range(0x4E00, 0x4E00 + 200)]  # the first CJK ideographs
    words: list[str] = []
    for length in (2, 3):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            words.append("".join(letters))
    pieces = [*chars, *(f"##{c}" for c in chars)]
    for word in words:
        pieces += [word, f"##{word}"]
    tokens = [*head, *pieces][:BERT_BASE_VOCAB_SIZE]
    assert len(tokens) == len(set(tokens)) == BERT_BASE_VOCAB_SIZE
    return tokens


def _write_bert_tokenizer(folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tokens = [*bert_uncased_tokens(), *BLIP_EXTRA_TOKENS]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_EXTRA_TOKENS)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    _write_json(folder / "tokenizer_config.json", {
        "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": 512, "name_or_path": "bert-base-uncased", "never_split": None, "pad_token": "[PAD]",
        "processor_class": "BlipProcessor", "sep_token": "[SEP]", "special_tokens_map_file": None,
        "strip_accents": None, "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    })
    # BLIP's own init_tokenizer: bos [DEC], and [ENC] as the one additional special token.
    _write_json(folder / "special_tokens_map.json", {
        "additional_special_tokens": ["[ENC]"], "bos_token": "[DEC]", "cls_token": "[CLS]", "mask_token": "[MASK]",
        "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]",
    })


# ------------------------------------------------------------------------------------------------ models


def _write_json(path: Path, data: Any, *, compact: bool = False) -> None:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")) if compact else \
        json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def _save_model(model: torch.nn.Module, config: dict[str, Any], folder: Path, seed: int) -> None:
    """Random weights, saved as safetensors; then the published ``config.json`` replaces the one
    save_pretrained writes (and its ``generation_config.json``, which the published repos do not have).

    The tied pairs (output layer = word embeddings) are tied after filling, as in the trained checkpoints:
    under ``no_init_weights`` the constructor does not tie them, and a file with two different tensors
    would make transformers keep them apart, unlike the published weights.
    """
    randomize_(model, seed)
    model.tie_weights()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)
    _write_json(folder / "config.json", config)


def _build_vit_gpt2(folder: Path, seed: int) -> None:
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel
    from transformers.initialization import no_init_weights

    config = vit_gpt2_config()
    with no_init_weights():  # randomize_ fills every parameter; the library's init would cost seconds
        model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_dict(config))
    _save_model(model, config, folder, seed)
    _write_json(folder / "preprocessor_config.json", VIT_GPT2_PREPROCESSOR)
    _write_gpt2_tokenizer(folder)


def _build_blip_base(folder: Path, seed: int) -> None:
    from transformers import BlipConfig, BlipForConditionalGeneration
    from transformers.initialization import no_init_weights

    config = blip_base_config()
    with no_init_weights():
        model = BlipForConditionalGeneration(BlipConfig.from_dict(config))
    _save_model(model, config, folder, seed)
    _write_json(folder / "preprocessor_config.json", BLIP_PREPROCESSOR)
    _write_bert_tokenizer(folder)


_BUILDERS: dict[str, Callable[[Path, int], None]] = {VIT_GPT2: _build_vit_gpt2, BLIP_BASE: _build_blip_base}


def write_captioner_replica(repo_id: str, folder: Path, *, seed: int = 0) -> Path:
    """Write the replica's files into ``folder`` (created); returns it."""
    if repo_id not in _BUILDERS:
        raise ValueError(f"no captioner replica for {repo_id!r}; supported: {', '.join(SUPPORTED_CAPTIONERS)}")
    folder.mkdir(parents=True, exist_ok=True)
    _BUILDERS[repo_id](folder, seed)
    return folder


def install_captioner_replica(repo_id: str, *, seed: int = 0) -> Path:
    """Build the replica of ``repo_id`` and install it in the hub cache; returns the snapshot folder."""
    cache = hub_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    # Built next to the cache so that install_snapshot's moves are renames, not 1 GB copies.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".replica-") as tmp:
        write_captioner_replica(repo_id, Path(tmp), seed=seed)
        return install_snapshot(repo_id, Path(tmp))
