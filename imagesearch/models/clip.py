"""CLIP image and text encoders, loaded once per process, from whichever source the settings name.

Two backends share one interface (:class:`ClipEncoder`): open_clip (registry names, ``hf-hub:``
repos, ``local-dir`` folders) in ``open_clip_backend`` and transformers' dual encoders in
``transformers_backend``. Every vector leaves here L2-normalised, as float32 NumPy rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imagesearch.config import Settings
from imagesearch.errors import ConfigurationError
from imagesearch.models.loading import ModelMisconfigured, pick_device, pick_dtype
from imagesearch.models.sources import ClipSource, parse_clip_source
from imagesearch.text import normalize_text
from imagesearch.vocab import Library

log = logging.getLogger(__name__)

# The files of an open_clip ``local-dir`` folder (transformers folders: see transformers_backend).
CLIP_FILES = {
    "config": ("open_clip_config.json",),
    "weights": (
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
    ),
}

# What the pipeline hands from preprocess() to encode_pixels(): one tensor, or named tensors for
# processors that emit more than pixels (SigLIP 2's patch mask and shapes).
PixelInput = torch.Tensor | dict[str, torch.Tensor]
# Decoded RGB uint8 (3, H, W) tensors, on any device, to one model input per image.
TensorPreprocess = Callable[[Sequence[torch.Tensor]], list[PixelInput]]


@dataclass(frozen=True)
class ClipSpec:
    name: str
    pretrained: str | None
    directory: Path | None
    device: str
    precision: str = "auto"
    prepack_text: bool = True
    language: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipSpec:
        m = settings.models
        return cls(m.clip_model, m.clip_pretrained, m.clip_model_dir, m.device, m.precision, m.clip_prepack_text,
                   m.clip_language)

    @property
    def source(self) -> ClipSource:
        return parse_clip_source(self.name, self.pretrained, self.directory)


class ClipEncoder:
    """Normalised vectors for images and texts. Backends implement the three ``_``-methods."""

    def __init__(self, model: torch.nn.Module, device: torch.device, identity: str,
                 dtype: torch.dtype = torch.float32) -> None:
        self.model = model.eval()
        self.device = device
        self.dtype = dtype
        self.identity = identity
        self.prepacked_text = False
        # Set by a backend whose preprocessing has a tensor equivalent (see preprocess_tensors).
        self.tensor_preprocess: TensorPreprocess | None = None
        self._lock = threading.Lock()
        with torch.inference_mode():
            self.dim = int(self._text_features(["probe"]).shape[-1])

    # -- what a backend provides ---------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> PixelInput:
        """The model input for one image (runs in decode threads, outside the model lock)."""
        raise NotImplementedError

    def _image_features(self, pixels: PixelInput) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    # -- the shared interface ------------------------------------------------------------------
    @property
    def preprocesses_tensors(self) -> bool:
        return self.tensor_preprocess is not None

    def preprocess_tensors(self, images: Sequence[torch.Tensor]) -> list[PixelInput]:
        """The model input for each decoded image, computed on the images' device (the GPU, for
        images nvJPEG decoded there): RGB uint8 (3, H, W) tensors of any sizes in, the same
        transform :meth:`preprocess` applies to a Pillow image out, one item per image for
        :meth:`collate`. Only for encoders with :attr:`preprocesses_tensors`."""
        if self.tensor_preprocess is None:
            raise TypeError(f"CLIP {self.identity} has no tensor preprocessing")
        return self.tensor_preprocess(images) if images else []

    def collate(self, items: Sequence[PixelInput]) -> PixelInput:
        """One batch of items from :meth:`preprocess` or :meth:`preprocess_tensors`. The two may be
        mixed (a batch on the tensor path holds the Pillow path's fallbacks): then every item is
        moved to the model's device first."""
        def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
            if any(tensor.device != tensors[0].device for tensor in tensors):
                tensors = [tensor.to(self.device) for tensor in tensors]
            return torch.stack(tensors)

        if isinstance(items[0], dict):
            return {key: stack([item[key] for item in items]) for key in items[0]}
        return stack(list(items))

    def preprocess_batch(self, images: Sequence[Image.Image]) -> PixelInput:
        return self.collate([self.preprocess(image) for image in images])

    def encode_pixels(self, pixels: PixelInput) -> np.ndarray:
        """Encode an already preprocessed batch (see :meth:`collate`)."""
        with self._lock, torch.inference_mode(), self._autocast():
            return self._normalised(self._image_features(pixels))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_pixels(self.preprocess_batch(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        normalised = [normalize_text(text) for text in texts]
        with self._lock, torch.inference_mode(), self._autocast():
            return self._normalised(self._text_features(normalised))

    def _to_device(self, pixels: PixelInput) -> Any:
        if isinstance(pixels, dict):
            return {key: value.to(self.device, non_blocking=True) for key, value in pixels.items()}
        return pixels.to(self.device, non_blocking=True)

    @staticmethod
    def _normalised(features: torch.Tensor) -> np.ndarray:
        return F.normalize(features.float(), dim=-1).cpu().numpy()

    def _autocast(self) -> torch.autocast:
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype if enabled else None, enabled=enabled)


def load_clip(spec: ClipSpec) -> ClipEncoder:
    device = pick_device(spec.device)
    dtype = pick_dtype(device, spec.precision)
    try:
        source = spec.source
    except ConfigurationError as exc:
        raise ModelMisconfigured(str(exc)) from exc
    # Imported here so a process only pays for the library its model needs.
    if source.library is Library.TRANSFORMERS:
        from imagesearch.models.transformers_backend import load_transformers_clip as load
    else:
        from imagesearch.models.open_clip_backend import load_open_clip as load
    try:
        encoder = load(spec, source, device, dtype)
    except ConfigurationError as exc:
        raise ModelMisconfigured(str(exc)) from exc
    log.info("loaded CLIP %s on %s (dim %d)%s", encoder.identity, device, encoder.dim,
             " (packed text layers)" if encoder.prepacked_text else "")
    return encoder


@lru_cache(maxsize=4)
def _cached(spec: ClipSpec) -> ClipEncoder:
    return load_clip(spec)


def get_clip(settings: Settings) -> ClipEncoder:
    """The process-wide encoder for these settings (loaded on first use)."""
    return _cached(ClipSpec.from_settings(settings))
