"""transformers dual encoders: CLIPModel, ChineseCLIPModel, SiglipModel, Siglip2Model (and any model
with ``get_text_features`` and ``get_image_features``), each with its own processor and text rules.

Text rules come from how each family was trained, not from one default:
- SigLIP and SigLIP 2 pad every text to the full ``max_length`` (their text tower pools the last
  position and was trained on fixed-length padding: shorter padding changes the vector);
- BERT-style towers (Chinese-CLIP) are bidirectional, so the attention mask must go with the ids;
- every family truncates at its position-embedding limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from imagesearch.errors import ConfigurationError
from imagesearch.models.clip import ClipEncoder, ClipSpec, PixelInput
from imagesearch.models.loading import ModelUnavailable, require_files, weights_fingerprint
from imagesearch.models.sources import ClipSource
from imagesearch.vocab import SourceKind

TRANSFORMERS_CLIP_FILES = {
    "config": ("config.json",),
    "weights": ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"),
    "image processor": ("preprocessor_config.json", "processor_config.json"),
    "tokenizer": ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                  "sentencepiece.bpe.model"),
}

# Families trained on texts padded to the full context (see the module docstring).
PAD_TO_MAX_LENGTH = frozenset({"siglip", "siglip2"})


def _features(output: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features;
    # earlier versions returned the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TransformersClipEncoder(ClipEncoder):
    def __init__(self, model: torch.nn.Module, processor: object, device: torch.device, identity: str,
                 dtype: torch.dtype = torch.float32) -> None:
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        config = model.config
        self.model_type = config.model_type
        text_config = getattr(config, "text_config", config)
        limit = getattr(text_config, "max_position_embeddings", None) or 77
        model_max = getattr(self.tokenizer, "model_max_length", None) or limit
        self.max_length = int(min(limit, model_max))
        self.padding: bool | str = "max_length" if self.model_type in PAD_TO_MAX_LENGTH else True
        super().__init__(model, device, identity, dtype)
        # transformers 5's torchvision-backed processors take tensors as they take Pillow images and
        # compute on the tensors' device: the tensor path runs the very processor preprocess() runs.
        # A Pillow/NumPy-backed processor has no such path.
        if getattr(self.image_processor, "backend", None) == "torchvision":
            self.tensor_preprocess = self._preprocess_tensors

    def preprocess(self, image: Image.Image) -> PixelInput:
        inputs = self.image_processor(images=[image], return_tensors="pt")
        tensors = {key: value[0] for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        return tensors["pixel_values"] if list(tensors) == ["pixel_values"] else tensors

    def _preprocess_tensors(self, images: Sequence[torch.Tensor]) -> list[PixelInput]:
        # channels_first: a (3, H, 3) image would otherwise be ambiguous to the processor's guess.
        inputs = self.image_processor(images=list(images), return_tensors="pt", input_data_format="channels_first")
        tensors = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
        if list(tensors) == ["pixel_values"]:
            return list(tensors["pixel_values"])
        return [{key: value[i] for key, value in tensors.items()} for i in range(len(images))]

    def _image_features(self, pixels: PixelInput) -> torch.Tensor:
        inputs = self._to_device(pixels)
        if not isinstance(inputs, dict):
            inputs = {"pixel_values": inputs}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.weights_dtype)
        return _features(self.model.get_image_features(**inputs))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        return _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))

    @property
    def weights_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def load_transformers_clip(spec: ClipSpec, source: ClipSource, device: torch.device,
                           dtype: torch.dtype) -> ClipEncoder:
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPUs have no fast fp16 kernels (as for open_clip)
    if source.kind is SourceKind.DIRECTORY:
        directory = Path(source.name).resolve()
        require_files(directory, TRANSFORMERS_CLIP_FILES, "IMAGESEARCH_CLIP_MODEL_DIR")
        location = str(directory)
        identity = f"clip:{directory.name}@{weights_fingerprint(directory, ('*.safetensors', '*.bin'))}"
    else:
        location = source.name
        identity = f"clip:{source.label}"
    if spec.language:
        raise ConfigurationError(f"IMAGESEARCH_CLIP_LANGUAGE={spec.language}: transformers CLIP models take no "
                                 "language code; unset it")
    try:
        model = AutoModel.from_pretrained(location, dtype=dtype).to(device)
        processor = AutoProcessor.from_pretrained(location)
    except Exception as exc:  # transformers raises OSError/ValueError for network and files alike
        raise ModelUnavailable(
            f"could not load CLIP {source.label} ({exc}). Offline, run `imagesearch models download` where the "
            "hub is reachable and set IMAGESEARCH_CLIP_MODEL_DIR to the folder it writes."
        ) from exc
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ConfigurationError(f"CLIP {source.label} loads as {type(model).__name__}, which is not a dual "
                                 "image-text encoder (CLIPModel, ChineseCLIPModel, SiglipModel, Siglip2Model)")
    if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
        raise ConfigurationError(f"CLIP {source.label}: its processor ({type(processor).__name__}) lacks an image "
                                 "processor or a tokenizer")
    # No autocast: the weights are held in the compute dtype.
    return TransformersClipEncoder(model, processor, device, identity, torch.float32)
