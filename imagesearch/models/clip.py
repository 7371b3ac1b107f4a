"""CLIP image and text encoders via open_clip, loaded once per process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from imagesearch.config import Settings
from imagesearch.models.loading import (
    ModelUnavailable,
    pick_device,
    pick_dtype,
    require_files,
    weights_fingerprint,
)
from imagesearch.models.prepacked import prepack_text_transformer

log = logging.getLogger(__name__)

CLIP_FILES = {
    "config": ("open_clip_config.json",),
    "weights": (
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
    ),
}


# One short and one long query: the packed text layers must reproduce both.
_PROBE_TEXTS = ["dog", "two children running in front of a house with a red door, seen from the street"]


@dataclass(frozen=True)
class ClipSpec:
    name: str
    pretrained: str
    directory: Path | None
    device: str
    precision: str = "auto"
    prepack_text: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> "ClipSpec":
        return cls(settings.models.clip_model, settings.models.clip_pretrained, settings.models.clip_model_dir, settings.models.device,
                   settings.models.precision, settings.models.clip_prepack_text)


class ClipEncoder:
    """Normalised CLIP vectors for images and texts, as float32 NumPy rows."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[Sequence[str]], torch.Tensor],
        device: torch.device,
        identity: str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.identity = identity
        self._lock = threading.Lock()
        self.prepacked_text = False
        with torch.inference_mode():
            probe = self.tokenizer(["probe"]).to(device)
            self.dim = int(self.model.encode_text(probe).shape[-1])

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(image) for image in images])

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode an already preprocessed batch (N, 3, H, W)."""
        with self._lock, torch.inference_mode(), self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
            return F.normalize(features.float(), dim=-1).cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess_batch(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._lock, torch.inference_mode(), self._autocast():
            features = self._encode_tokens(tokens)
            return F.normalize(features.float(), dim=-1).cpu().numpy()

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        model = self.model
        pool = getattr(model, "text_pool_type", None)
        if not isinstance(model, open_clip.CLIP) or pool not in ("argmax", "eos") or model.attn_mask is None:
            return model.encode_text(tokens)
        # The text transformer is causal, so positions after the end-of-text token cannot change
        # the pooled vector: run only up to the last end-of-text position in the batch. Exact,
        # and a short query costs a fraction of the full 77-token context.
        if pool == "argmax":
            ends = tokens.argmax(dim=-1)
        else:
            ends = (tokens == model.text_eos_id).int().argmax(dim=-1)
        length = int(ends.max().item()) + 1
        tokens = tokens[:, :length]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ends]
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
        return x

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype if enabled else None, enabled=enabled)


def load_clip(spec: ClipSpec) -> ClipEncoder:
    device = pick_device(spec.device)
    dtype = pick_dtype(device, spec.precision)
    # Weights are held in the compute dtype. (fp32 weights under CPU autocast were re-cast on every
    # call and lost the fused attention path: 2x slower than fp32, see bench/RESULTS.md.)
    weights = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    if device.type == "cpu" and weights == "fp16":
        weights = "fp32"  # CPUs have no fast fp16 kernels: keep fp32 weights and autocast
    if spec.directory is not None:
        directory = Path(spec.directory).resolve()
        require_files(directory, CLIP_FILES, "IMAGESEARCH_CLIP_MODEL_DIR")
        name = f"local-dir:{directory}"
        identity = f"clip:{directory.name}@{weights_fingerprint(directory, ('*.safetensors', '*.bin'))}"
        pretrained = None
    else:
        name, pretrained = spec.name, spec.pretrained
        identity = f"clip:{spec.name}/{spec.pretrained}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device, precision=weights
        )
        tokenizer = open_clip.get_tokenizer(name)
    except ModelUnavailable:
        raise
    except Exception as exc:  # open_clip raises RuntimeError/OSError/ValueError for network and files alike
        if spec.directory is not None:
            raise ModelUnavailable(f"could not load CLIP from {spec.directory}: {exc}") from exc
        raise ModelUnavailable(
            f"could not load CLIP {spec.name!r} with weights {spec.pretrained!r} from the hub ({exc}). "
            "Offline, set IMAGESEARCH_CLIP_MODEL_DIR to a folder holding open_clip_config.json and "
            "open_clip_model.safetensors (open_clip's local-dir format)."
        ) from exc
    encoder = ClipEncoder(model, preprocess, tokenizer, device, identity, dtype)
    if spec.prepack_text and device.type == "cpu" and dtype == torch.float32:
        encoder.prepacked_text = prepack_text_transformer(
            model, lambda: torch.from_numpy(encoder.encode_texts(_PROBE_TEXTS)))
    log.info("loaded CLIP %s on %s%s", identity, device, " (packed text layers)" if encoder.prepacked_text else "")
    return encoder


@lru_cache(maxsize=4)
def _cached(spec: ClipSpec) -> ClipEncoder:
    return load_clip(spec)


def get_clip(settings: Settings) -> ClipEncoder:
    """The process-wide encoder for these settings (loaded on first use)."""
    return _cached(ClipSpec.from_settings(settings))
