"""``imagesearch models download``: save a model, from the hub or the local cache, as a folder that
``IMAGESEARCH_CLIP_MODEL_DIR`` / ``IMAGESEARCH_CAPTIONER_DIR`` load, for air-gapped deployments.

- open_clip models (registry names, ``hf-hub:``) become open_clip ``local-dir`` folders. They are
  loaded through the production loader first, so the saved config carries the activation the tag
  was trained with; an HF text tower's ``config.json`` and tokenizer go in the same folder.
- transformers models (``transformers:`` CLIP-family models, captioners) are copied file for file
  from the cached snapshot: the published configs, processors and tokenizers, unchanged.

After saving, the folder is loaded back through the production loader and compared with the
source on a probe, so a folder that would serve different vectors is never reported as done.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoConfig

from imagesearch.errors import ConfigurationError
from imagesearch.models.captioner import CaptionerSpec, load_captioner
from imagesearch.models.clip import ClipEncoder, ClipSpec, load_clip
from imagesearch.models.loading import ModelUnavailable
from imagesearch.models.open_clip_backend import needs_quick_gelu
from imagesearch.models.sources import HF_HUB_PREFIX, TRANSFORMERS_PREFIX, ClipSource, parse_clip_source
from imagesearch.vocab import Library, SourceKind

_PROBE_TEXTS = ["two children running in front of a house", "两个孩子在房子前面跑"]
# What a transformers folder needs; other published formats (TF, Flax, ONNX) are left behind.
_TRANSFORMERS_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors", "*.safetensors.index.json", "*.tiktoken")
_BIN_PATTERNS = ("pytorch_model*.bin",)


@dataclass(frozen=True)
class Saved:
    folder: Path
    setting: str  # the environment variable that loads the folder
    max_difference: float  # probe vectors (CLIP) or 0/1 caption mismatch (captioner), source vs folder

    @property
    def environment(self) -> str:
        return f"{self.setting}={self.folder}"


def parse_name(name: str) -> tuple[str, ClipSource | None]:
    """``arch/tag``, ``hf-hub:org/name`` or ``transformers:org/name`` name a CLIP; any other
    ``org/name`` a captioner (returned as ``(name, None)``)."""
    if name.startswith((HF_HUB_PREFIX, TRANSFORMERS_PREFIX)):
        return name, parse_clip_source(name, None, None)
    head, _, tail = name.partition("/")
    if tail and open_clip.get_model_config(head) is not None:
        return name, ClipSource(SourceKind.REGISTRY, Library.OPEN_CLIP, head, tail)
    if head and tail and "/" not in tail:
        return name, None
    raise ConfigurationError(f"{name!r} names no model: use arch/tag (ViT-B-32/laion2b_s34b_b79k), hf-hub:org/name, "
                             "transformers:org/name, or a captioner's org/name (`imagesearch models list`)")


def download(name: str, target: Path) -> Saved:
    _, source = parse_name(name)
    target = Path(target).resolve()
    if target.exists() and any(target.iterdir()):
        raise ConfigurationError(f"{target} is not empty: choose a new folder")
    target.mkdir(parents=True, exist_ok=True)
    try:
        if source is None:
            return _save_captioner(name, target)
        if source.library is Library.TRANSFORMERS:
            return _save_transformers_clip(source, target)
        return _save_open_clip(source, target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave a half-written folder that looks loadable
        raise


def _spec(model: str, pretrained: str | None, directory: Path | None) -> ClipSpec:
    # fp32 on the CPU with stock layers: what is saved is the checkpoint itself, not a serving layout.
    return ClipSpec(model, pretrained, directory, "cpu", "fp32", prepack_text=False)


def _save_open_clip(source: ClipSource, target: Path) -> Saved:
    model_setting = f"{HF_HUB_PREFIX}{source.name}" if source.kind is SourceKind.HF_HUB else source.name
    encoder = load_clip(_spec(model_setting, source.pretrained, None))
    if source.kind is SourceKind.HF_HUB:
        config = json.loads(Path(hf_hub_download(source.name, "open_clip_config.json")).read_text())
        model_cfg = config["model_cfg"]
    else:
        model_cfg = copy.deepcopy(open_clip.get_model_config(source.name))
        if needs_quick_gelu(source.name, source.pretrained):
            model_cfg["quick_gelu"] = True
    text_cfg = model_cfg.setdefault("text_cfg", {})
    tokenizer = encoder.tokenizer
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        tokenizer.tokenizer.save_pretrained(target)
        # With local-dir, open_clip loads an HF tokenizer from the folder itself: the folder can move.
        # A language code is not stored: IMAGESEARCH_CLIP_LANGUAGE applies to a folder as to a hub name.
        text_cfg["hf_tokenizer_name"] = "./"
    elif not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        raise ConfigurationError(f"{source.label} uses {type(tokenizer).__name__}, which a local-dir folder cannot "
                                 "hold; use its transformers: repo instead")
    if "hf_model_name" in text_cfg:
        AutoConfig.from_pretrained(text_cfg["hf_model_name"]).save_pretrained(target)
    preprocess_cfg = dict(getattr(encoder.model.visual, "preprocess_cfg", {}))
    (target / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, "source": source.label}, indent=2))
    state = {key: value.detach().contiguous() for key, value in encoder.model.state_dict().items()}
    save_file(state, str(target / "open_clip_model.safetensors"))
    saved = load_clip(_spec("unused", None, target))
    return Saved(target, "IMAGESEARCH_CLIP_MODEL_DIR", _difference(encoder, saved))


def _copy_snapshot(repo_id: str, target: Path) -> None:
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=[*_TRANSFORMERS_PATTERNS, *_BIN_PATTERNS]))
    except Exception as exc:  # huggingface_hub raises several types for offline, missing and network errors
        raise ModelUnavailable(f"could not fetch {repo_id} from the hub or the local cache: {exc}") from exc
    files = [p for p in folder.rglob("*") if p.is_file() and any(p.match(g) for g in _TRANSFORMERS_PATTERNS)]
    if not any(p.name.endswith(".safetensors") for p in files):
        files += [p for p in folder.rglob("*") if p.is_file() and any(p.match(g) for g in _BIN_PATTERNS)]
    for path in files:
        destination = target / path.relative_to(folder)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path.resolve(), destination)  # the cache holds symlinks into blobs/


def _save_transformers_clip(source: ClipSource, target: Path) -> Saved:
    _copy_snapshot(source.name, target)
    original = load_clip(_spec(f"{TRANSFORMERS_PREFIX}{source.name}", None, None))
    saved = load_clip(_spec("unused", None, target))
    return Saved(target, "IMAGESEARCH_CLIP_MODEL_DIR", _difference(original, saved))


def _save_captioner(repo_id: str, target: Path) -> Saved:
    _copy_snapshot(repo_id, target)
    probe = [_probe_image()]
    spec = CaptionerSpec(repo_id, None, "cpu", 8, 1, "fp32")
    original = load_captioner(spec).caption(probe)
    saved = load_captioner(CaptionerSpec(repo_id, target, "cpu", 8, 1, "fp32")).caption(probe)
    return Saved(target, "IMAGESEARCH_CAPTIONER_DIR", float(original != saved))


def _probe_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))


def _difference(a: ClipEncoder, b: ClipEncoder) -> float:
    image = [_probe_image()]
    with torch.inference_mode():
        texts = np.abs(a.encode_texts(_PROBE_TEXTS) - b.encode_texts(_PROBE_TEXTS)).max()
        images = np.abs(a.encode_images(image) - b.encode_images(image)).max()
    return float(max(texts, images))
