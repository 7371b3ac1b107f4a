"""Image-to-text captioning via transformers (VisionEncoderDecoder, BLIP, ...), loaded once per process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoTokenizer,
    BaseImageProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from imagesearch.config import Settings
from imagesearch.models.loading import (
    ModelUnavailable,
    pick_device,
    pick_dtype,
    require_files,
    weights_fingerprint,
)
from imagesearch.text import normalize_text

log = logging.getLogger(__name__)

CAPTIONER_FILES = {
    "config": ("config.json",),
    "weights": ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"),
    "image processor": ("preprocessor_config.json", "processor_config.json"),
    "tokenizer": ("tokenizer.json", "vocab.json", "vocab.txt"),
}


@dataclass(frozen=True)
class CaptionerSpec:
    name: str
    directory: Path | None
    device: str
    max_length: int
    num_beams: int
    precision: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> CaptionerSpec:
        return cls(
            settings.models.captioner_model,
            settings.models.captioner_dir,
            settings.models.device,
            settings.models.caption_max_length,
            settings.models.caption_num_beams,
            settings.models.precision,
        )


class Captioner:
    """Writes one caption per image; generation settings are explicit, not library defaults."""

    def __init__(self, model: PreTrainedModel, image_processor: BaseImageProcessor,
                 tokenizer: PreTrainedTokenizerBase, device: torch.device, identity: str,
                 max_length: int, num_beams: int) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.device = device
        self.identity = identity
        self.max_length = max_length
        self.num_beams = num_beams
        self._lock = threading.Lock()

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        if not images:
            return []
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.model.dtype)
        with self._lock, torch.inference_mode():
            output = self.model.generate(
                pixel_values=pixels,
                max_new_tokens=self.max_length,
                # Published configs carry a 4.x `max_length` (vit-gpt2: 20) that transformers 5 turns into a
                # generation default and warns about on every call; the caption length is max_new_tokens.
                max_length=None,
                num_beams=self.num_beams,
                do_sample=False,
            )
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [normalize_text(text) for text in texts]


def captioner_identity(spec: CaptionerSpec) -> str:
    """The identity records carry (``caption_model``), known without loading the weights: what the
    API keys search profiles by, and it runs no captioner."""
    if spec.directory is None:
        return f"captioner:{spec.name}"
    directory = Path(spec.directory).resolve()
    require_files(directory, CAPTIONER_FILES, "IMAGESEARCH_CAPTIONER_DIR")
    return f"captioner:{directory.name}@{weights_fingerprint(directory, ('*.safetensors', '*.bin'))}"


@lru_cache(maxsize=2)
def cached_identity(spec: CaptionerSpec) -> str:
    return captioner_identity(spec)


def configured_captioner(settings: Settings) -> str:
    """The identity of the captioner these settings name (hashed once per process)."""
    return cached_identity(CaptionerSpec.from_settings(settings))


def load_captioner(spec: CaptionerSpec) -> Captioner:
    device = pick_device(spec.device)
    identity = captioner_identity(spec)
    source = str(Path(spec.directory).resolve()) if spec.directory is not None else spec.name
    dtype = pick_dtype(device, spec.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPUs have no fast fp16 kernels (as for CLIP: see models/clip.py)
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype).to(device)
        image_processor = AutoImageProcessor.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # transformers raises OSError/ValueError for network and files alike
        if spec.directory is not None:
            raise ModelUnavailable(f"could not load the captioner from {spec.directory}: {exc}") from exc
        raise ModelUnavailable(
            f"could not load captioner {spec.name!r} from the hub ({exc}). Offline, set "
            "IMAGESEARCH_CAPTIONER_DIR to a folder saved with save_pretrained (config.json, "
            "model.safetensors, preprocessor_config.json, tokenizer files)."
        ) from exc
    log.info("loaded captioner %s on %s", identity, device)
    return Captioner(model, image_processor, tokenizer, device, identity, spec.max_length, spec.num_beams)


@lru_cache(maxsize=2)
def _cached(spec: CaptionerSpec) -> Captioner:
    return load_captioner(spec)


def get_captioner(settings: Settings) -> Captioner:
    """The process-wide captioner for these settings (loaded on first use)."""
    return _cached(CaptionerSpec.from_settings(settings))
