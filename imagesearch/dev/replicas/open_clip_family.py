"""Replicas of open_clip checkpoints: registry tags (``ViT-B-32`` / ``openai``) and ``hf-hub:`` repos.

A replica holds the files open_clip reads for that source, under their published names, with the
real architecture and small random weights (``weights.randomize_``):

- a registry tag: the repo its pretrained cfg names (``get_pretrained_cfg(name, tag)["hf_hub"]``),
  holding the weights under the first file name open_clip tries (``open_clip_model.safetensors``);
- an ``hf-hub:`` repo: the same weights plus ``open_clip_config.json`` (``model_cfg`` and
  ``preprocess_cfg``), which is where open_clip reads the architecture from;
- a text tower built from a Hugging Face model (``text_cfg.hf_model_name``, e.g. ``xlm-roberta-base``):
  also a replica of that repo's ``config.json`` and tokenizer, because open_clip builds the tower
  from the config and ``AutoTokenizer`` reads the tokenizer from the hub.

The weights are the state dict of the architecture the tag was trained with: the QuickGELU
variant when the tag says ``quick_gelu`` (activations have no parameters, so the keys are those of
the GELU model; open_clip loads with ``strict=True``, and the keys match exactly).

Provenance (no hub access offline): the laion ``open_clip_config.json`` is open_clip's registry
config plus the tag's mean/std, as the published file is remembered; xlm-roberta-base's config
fields are the published ones, its tokenizer a small Unigram vocabulary with XLM-R's special ids.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imagesearch.dev.replicas.hub_cache import install_snapshot, remove_repo, snapshot_path
from imagesearch.dev.replicas.weights import randomize_

# What open_clip's download_pretrained_from_hf tries first, and what it falls back to.
SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
CONFIG_NAME = "open_clip_config.json"

# open_clip's defaults (OPENAI_DATASET_MEAN / STD), written into open_clip_config.json by its
# push_to_hf_hub when a tag does not say otherwise.
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# The published config.json of xlm-roberta-base (FacebookAI/xlm-roberta-base; open_clip still names
# it by its legacy id). open_clip builds its text tower with AutoModel.from_config from this.
XLM_ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "architectures": ["XLMRobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "transformers_version": "4.17.0.dev0",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

# The published config.json of roberta-base (FacebookAI/roberta-base), for roberta-ViT-B-32.
ROBERTA_BASE_CONFIG: dict[str, Any] = {
    "architectures": ["RobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "type_vocab_size": 1,
    "vocab_size": 50265,
}


# ---------------------------------------------------------------------------------------------
# Tokenizers: the published class, a vocabulary trained here in well under a second.
# ---------------------------------------------------------------------------------------------

def _training_text() -> Iterator[str]:
    """English and Chinese captions of everyday scenes: enough for a few hundred Unigram pieces,
    so that English and Chinese queries both split into several known ids."""
    en_counts = ["a", "two", "three", "many", "some"]
    en_colours = ["red", "blue", "white", "black", "small", "big", "old"]
    en_things = ["children", "dogs", "cats", "people", "cars", "birds", "bicycles", "houses"]
    en_places = ["running in front of a house", "sitting on the street", "sleeping on a sofa",
                 "flying over the city", "standing near the river", "playing in the park at night"]
    for count, colour, thing, place in itertools.product(en_counts, en_colours, en_things, en_places):
        yield f"{count} {colour} {thing} {place}"
    zh_counts = ["一只", "两个", "三个", "很多", "一些"]
    zh_colours = ["红色的", "蓝色的", "白色的", "黑色的", "小", "大", "老"]
    zh_things = ["孩子", "狗", "猫", "人", "汽车", "鸟", "自行车", "房子"]
    zh_places = ["在房子前面跑", "坐在街上", "在沙发上睡觉", "飞过城市", "站在河边", "晚上在公园里玩"]
    for count, colour, thing, place in itertools.product(zh_counts, zh_colours, zh_things, zh_places):
        yield f"{count}{colour}{thing}{place}"


def _unigram_tokenizer_json(special: list[str], last: list[str], vocab_size: int = 2000) -> dict[str, Any]:
    """A sentencepiece-style Unigram tokenizer (Metaspace, NFKC) as tokenizer.json data.

    ``special`` take ids 0.. in order; ``last`` are appended after the trained pieces (XLM-R puts
    ``<mask>`` last). Pieces are at most 3 characters, so Chinese splits into words, not phrases.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>",
                                      max_piece_length=3)
    tokenizer.train_from_iterator(_training_text(), trainer)
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for token in last:
        data["added_tokens"].append({"id": len(vocab), "content": token, "single_word": False, "lstrip": True,
                                     "rstrip": False, "normalized": False, "special": True})
        vocab.append([token, 0.0])
    return data


def _template(single: list[str], pair: list[str], ids: dict[str, int]) -> dict[str, Any]:
    """A TemplateProcessing post-processor; "$A"/"$B" are the sequences."""
    def pieces(items: list[str]) -> list[dict[str, Any]]:
        return [{"Sequence": {"id": item[1:], "type_id": 0}} if item.startswith("$")
                else {"SpecialToken": {"id": item, "type_id": 0}} for item in items]
    return {"type": "TemplateProcessing", "single": pieces(single), "pair": pieces(pair),
            "special_tokens": {token: {"id": token, "ids": [i], "tokens": [token]} for token, i in ids.items()}}


def write_xlm_roberta_tokenizer(folder: Path) -> None:
    """XLM-R's tokenizer.json layout: Unigram, <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last,
    post-processor ``<s> X </s>`` (pairs ``<s> A </s></s> B </s>``).

    The published repo has no tokenizer_config.json: AutoTokenizer picks XLMRobertaTokenizer from
    config.json's model_type, so the replica leaves it out too. (It also has sentencepiece.bpe.model,
    which transformers 5 does not read when tokenizer.json is present.)
    """
    data = _unigram_tokenizer_json(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])
    data["post_processor"] = _template(["<s>", "$A", "</s>"], ["<s>", "$A", "</s>", "</s>", "$B", "</s>"],
                                       {"<s>": 0, "</s>": 2})
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))


def write_roberta_tokenizer(folder: Path) -> None:
    """RoBERTa's files: byte-level BPE as vocab.json + merges.txt and tokenizer.json, <s>=0 <pad>=1
    </s>=2 <unk>=3, <mask> last, post-processor ``<s> X </s>`` (RobertaProcessing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_training_text(), trainer)
    tokenizer.add_special_tokens(["<mask>"])  # the next free id: the last one, as published
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    data = json.loads(tokenizer.to_str())
    vocab = dict(data["model"]["vocab"], **{"<mask>": tokenizer.token_to_id("<mask>")})
    data["model"]["vocab"] = vocab
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in data["model"]["merges"]]
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")


@dataclass(frozen=True)
class HfTextReplica:
    """What a Hugging Face text model repo needs for open_clip: its config.json and tokenizer files."""

    config: dict[str, Any]
    write_tokenizer: Callable[[Path], None]


# The HF text models open_clip registry names build their text towers from, by repo id.
HF_TEXT_REPLICAS: dict[str, HfTextReplica] = {
    "xlm-roberta-base": HfTextReplica(XLM_ROBERTA_BASE_CONFIG, write_xlm_roberta_tokenizer),
    "roberta-base": HfTextReplica(ROBERTA_BASE_CONFIG, write_roberta_tokenizer),
}


def install_hf_text_replica(repo_id: str) -> Path:
    """Install config.json and the tokenizer of ``repo_id`` (no weights: with a full open_clip
    checkpoint, open_clip builds the tower from the config and never reads them)."""
    replica = HF_TEXT_REPLICAS.get(repo_id)
    if replica is None:
        raise KeyError(f"no replica of the Hugging Face text model {repo_id!r}; known: {sorted(HF_TEXT_REPLICAS)}")
    with tempfile.TemporaryDirectory(prefix="replica-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(replica.config, indent=2))
        replica.write_tokenizer(folder)
        return install_snapshot(repo_id, folder)


# ---------------------------------------------------------------------------------------------
# open_clip weights and configs.
# ---------------------------------------------------------------------------------------------

def hf_text_repos(model_cfg: dict[str, Any]) -> list[str]:
    """The Hugging Face repos a model config reads its text tower and tokenizer from."""
    text_cfg = model_cfg.get("text_cfg", {})
    names = [text_cfg.get("hf_model_name"), text_cfg.get("hf_tokenizer_name")]
    return sorted({name for name in names if name})


def _builtin_config(name: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(f"{name!r} is not an open_clip registry name")
    return cfg


def _ensure_hf_text(model_cfg: dict[str, Any]) -> None:
    for repo_id in hf_text_repos(model_cfg):
        if snapshot_path(repo_id) is None or not (snapshot_path(repo_id) / "config.json").is_file():
            install_hf_text_replica(repo_id)


def random_state_dict(name: str, *, quick_gelu: bool, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of ``open_clip.create_model(name)`` with small random weights, on CPU.

    No base weights are loaded (``pretrained_text=False``): the HF text tower is built from its
    config replica, so only config.json needs to be in the cache.
    """
    import open_clip

    model = open_clip.create_model(name, force_quick_gelu=quick_gelu, pretrained_text=False,
                                   pretrained_image=False, device="cpu")
    randomize_(model, seed)
    return _savable(model.state_dict())


def _savable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that share no storage (safetensors refuses shared or strided ones)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        out[key] = tensor
    return out


def _weights_file_name(hf_hub: str) -> tuple[str, str]:
    """(repo id, file name to write) for a pretrained cfg's ``hf_hub`` entry.

    ``org/name/`` means open_clip's default file, whose safetensors twin it tries first;
    ``org/name/file.bin`` (or .pth) likewise tries ``file.safetensors`` first.
    """
    repo_id, filename = os.path.split(hf_hub)
    if not filename or filename == WEIGHTS_NAME:
        return repo_id, SAFE_WEIGHTS_NAME
    if filename.endswith((".bin", ".pth")):
        return repo_id, filename[:-4] + ".safetensors"
    return repo_id, filename


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:  # a named .pt file has no safetensors alternative in open_clip
        torch.save(state, path)


def _tag_cfg(name: str, pretrained: str) -> dict[str, Any]:
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, pretrained)
    if not cfg:
        raise KeyError(f"open_clip registers no tag {pretrained!r} for {name!r}")
    if not cfg.get("hf_hub"):
        raise ValueError(f"{name}/{pretrained} downloads from a URL, not the hub: no hub replica can serve it")
    return cfg


def open_clip_replica_repos(name: str, pretrained: str) -> list[str]:
    """Every hub repo ``install_open_clip_replica(name, pretrained)`` writes to."""
    repo_id, _ = _weights_file_name(_tag_cfg(name, pretrained)["hf_hub"])
    return [repo_id, *hf_text_repos(_builtin_config(name))]


def install_open_clip_replica(name: str, pretrained: str, *, seed: int = 0) -> Path:
    """Install the hub repo open_clip downloads for registry ``name`` with tag ``pretrained``.

    Works for any registry name/tag served from the hub whose text tower is open_clip's own or
    built from a model in ``HF_TEXT_REPLICAS``. Returns the weights file.
    """
    cfg = _tag_cfg(name, pretrained)
    repo_id, filename = _weights_file_name(cfg["hf_hub"])
    _ensure_hf_text(_builtin_config(name))
    state = random_state_dict(name, quick_gelu=bool(cfg.get("quick_gelu", False)), seed=seed)
    with tempfile.TemporaryDirectory(prefix="replica-") as tmp:
        _save_weights(state, Path(tmp) / filename)
        del state
        return install_snapshot(repo_id, Path(tmp)) / filename


def _published_preprocess_cfg(repo_id: str) -> dict[str, Any]:
    """mean/std of the registry tag served from ``repo_id``, else open_clip's defaults."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    for name, tag in open_clip.list_pretrained():
        cfg = get_pretrained_cfg(name, tag)
        if cfg.get("hf_hub", "").rstrip("/") == repo_id:
            return {"mean": list(cfg.get("mean", _OPENAI_MEAN)), "std": list(cfg.get("std", _OPENAI_STD))}
    return {"mean": list(_OPENAI_MEAN), "std": list(_OPENAI_STD)}


def hf_hub_replica_repos(repo_id: str, model_name: str) -> list[str]:
    """Every hub repo ``install_hf_hub_replica(repo_id, model_name)`` writes to."""
    return [repo_id, *hf_text_repos(_builtin_config(model_name))]


def install_hf_hub_replica(repo_id: str, model_name: str, *, preprocess_cfg: dict[str, Any] | None = None,
                           seed: int = 0) -> Path:
    """Install ``hf-hub:<repo_id>`` as open_clip's push_to_hf_hub lays it out: open_clip_config.json
    (``model_cfg`` = the registry config of ``model_name``, ``preprocess_cfg``) and the weights.

    ``preprocess_cfg`` defaults to the mean/std of the registry tag served from the same repo.
    With the same seed, the weights equal those of the tag's replica. Returns the snapshot folder.
    """
    model_cfg = _builtin_config(model_name)
    _ensure_hf_text(model_cfg)
    published = {"model_cfg": copy.deepcopy(model_cfg),
                 "preprocess_cfg": preprocess_cfg if preprocess_cfg is not None else _published_preprocess_cfg(repo_id)}
    state = random_state_dict(model_name, quick_gelu=bool(model_cfg.get("quick_gelu", False)), seed=seed)
    with tempfile.TemporaryDirectory(prefix="replica-") as tmp:
        folder = Path(tmp)
        (folder / CONFIG_NAME).write_text(json.dumps(published, indent=2))
        _save_weights(state, folder / SAFE_WEIGHTS_NAME)
        del state
        return install_snapshot(repo_id, folder)


def remove_repos(repo_ids: list[str]) -> None:
    for repo_id in repo_ids:
        remove_repo(repo_id)
