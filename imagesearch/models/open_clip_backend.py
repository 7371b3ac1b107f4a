"""open_clip models: registry names with a pretrained tag, ``hf-hub:`` repos and ``local-dir`` folders.

Two rules that open_clip itself only warns about are errors here:
- the activation follows the pretrained tag. OpenAI's weights were trained with QuickGELU, and
  open_clip's ``ViT-B-32`` config is GELU: loading ``openai`` weights into it gives vectors off by
  up to 2.5e-3 with no error. The tag's ``quick_gelu`` now decides;
- any remaining config/tag mismatch warning stops the load, naming both.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import torch
from open_clip.hf_model import ClsPooler, HFTextEncoder, MaxPooler, MeanPooler
from open_clip.transform import MaybeConvertMode
from PIL import Image
from torchvision import transforms
from torchvision.transforms.v2 import functional as TF

from imagesearch.errors import ConfigurationError
from imagesearch.imaging import RESIZE_CHUNK, group_by_shape
from imagesearch.models.clip import CLIP_FILES, ClipEncoder, ClipSpec, PixelInput, TensorPreprocess
from imagesearch.models.loading import ModelUnavailable, require_files, weights_fingerprint
from imagesearch.models.prepacked import prepack_text_transformer
from imagesearch.models.sources import ClipSource
from imagesearch.vocab import SourceKind

log = logging.getLogger(__name__)

# One short and one long query: the packed text layers must reproduce both.
_PROBE_TEXTS = ["dog", "two children running in front of a house with a red door, seen from the street"]


class OpenClipEncoder(ClipEncoder):
    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[Sequence[str]], torch.Tensor], device: torch.device, identity: str,
                 dtype: torch.dtype = torch.float32) -> None:
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        super().__init__(model, device, identity, dtype)
        self.tensor_preprocess = tensor_transform(preprocess)

    def preprocess(self, image: Image.Image) -> PixelInput:
        return self._preprocess(image)

    def _image_features(self, pixels: PixelInput) -> torch.Tensor:
        return self.model.encode_image(self._to_device(pixels))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        model = self.model
        pool = getattr(model, "text_pool_type", None)
        if isinstance(getattr(model, "text", None), HFTextEncoder):
            return model.encode_text(_without_trailing_padding(tokens, model.text))
        if not isinstance(model, open_clip.CLIP) or pool not in ("argmax", "eos") or model.attn_mask is None:
            return model.encode_text(tokens)
        # The text transformer is causal, so positions after the end-of-text token cannot change
        # the pooled vector: run only up to the last end-of-text position in the batch. Exact,
        # and a short query costs a fraction of the full 77-token context. Bidirectional towers
        # (XLM-R, BERT: CustomTextCLIP) take the stock path above.
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
        projection = model.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return x


def tensor_transform(preprocess: Callable[[Image.Image], torch.Tensor]) -> TensorPreprocess | None:
    """open_clip's eval transform, for decoded uint8 tensors on any device: each step of the Compose
    open_clip built for this model (resize of the shorter side or to a fixed size, bicubic or bilinear
    with antialiasing, centre crop, normalisation with the model's mean and std), applied to batches
    of same-sized images. None when the Compose holds a step without an exact tensor counterpart
    (``ResizeKeepRatio``, ``CenterCropOrPad``: open_clip's "longest" mode); the Pillow path then
    serves every image."""
    steps = getattr(preprocess, "transforms", None)
    if steps is None:
        return None
    plan: list[object] = []
    for step in steps:
        if isinstance(step, transforms.Resize) and step.interpolation in (
                transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR):
            plan.append(step)
        elif isinstance(step, transforms.CenterCrop | transforms.Normalize):
            plan.append(step)
        elif isinstance(step, MaybeConvertMode | transforms.ToTensor):
            continue  # decoded tensors are RGB already, and are scaled to [0, 1] up front
        else:
            log.info("open_clip transform %r has no tensor counterpart: images are preprocessed with Pillow", step)
            return None

    def run(images: Sequence[torch.Tensor]) -> list[PixelInput]:
        out: list[PixelInput] = [torch.empty(0)] * len(images)
        for members in group_by_shape(images).values():
            for start in range(0, len(members), RESIZE_CHUNK):
                chosen = members[start:start + RESIZE_CHUNK]
                batch = torch.stack([images[i] for i in chosen]).float().div_(255.0)
                for step in plan:
                    if isinstance(step, transforms.Resize):
                        # Antialiased, as Pillow always resizes; clamped, as Pillow's uint8 result is.
                        batch = TF.resize(batch, step.size, interpolation=step.interpolation, max_size=step.max_size,
                                          antialias=True).clamp_(0.0, 1.0)
                    elif isinstance(step, transforms.CenterCrop):
                        batch = TF.center_crop(batch, list(step.size))
                    else:
                        batch = TF.normalize(batch, list(step.mean), list(step.std))
                for i, pixels in zip(chosen, batch):
                    out[i] = pixels
        return out

    return run


def _without_trailing_padding(tokens: torch.Tensor, text: HFTextEncoder) -> torch.Tensor:
    """open_clip pads HF-tower texts to the full context (77); the tower masks padding out, so the
    columns past the batch's longest text change nothing but cost: an XLM-R query took 188 ms at 77
    tokens (bench/models.py). Only for poolers that read unpadded positions alone."""
    pooler = text.pooler
    if not (isinstance(pooler, MeanPooler | MaxPooler) or (isinstance(pooler, ClsPooler)
                                                          and pooler.cls_token_position == 0)):
        return tokens
    real = (tokens != text.config.pad_token_id).any(dim=0).nonzero()
    return tokens[:, : int(real.max()) + 1] if len(real) else tokens


def needs_quick_gelu(name: str, pretrained: str) -> bool:
    """Whether QuickGELU must be forced: the tag was trained with it and the architecture lacks it."""
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    arch_cfg = open_clip.get_model_config(name) or {}
    return bool(tag_cfg.get("quick_gelu", False)) and not arch_cfg.get("quick_gelu", False)


def _hf_text_override(directory: Path) -> dict:
    """A downloaded folder whose text tower is a transformers model keeps that model's config.json
    beside open_clip's; point open_clip at the folder instead of the hub name it was saved with
    (a stored absolute path would break when the folder moves)."""
    config = json.loads((directory / "open_clip_config.json").read_text())
    text_cfg = dict(config.get("model_cfg", {}).get("text_cfg", {}))
    if "hf_model_name" not in text_cfg or not (directory / "config.json").is_file():
        return {}
    text_cfg["hf_model_name"] = str(directory)
    # The folder's checkpoint holds the whole model: build the tower from the config, never from
    # separate pretrained text weights (this override replaces the flag open_clip would set).
    text_cfg["hf_model_pretrained"] = False
    return {"text_cfg": text_cfg}


def load_open_clip(spec: ClipSpec, source: ClipSource, device: torch.device, dtype: torch.dtype) -> ClipEncoder:
    # Weights are held in the compute dtype. (fp32 weights under CPU autocast were re-cast on every
    # call and lost the fused attention path: 2x slower than fp32, see bench/RESULTS.md.)
    weights = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    if device.type == "cpu" and weights == "fp16":
        weights = "fp32"  # CPUs have no fast fp16 kernels: keep fp32 weights and autocast
    overrides: dict = {}
    force_quick_gelu = False
    if source.kind is SourceKind.DIRECTORY:
        directory = Path(source.name).resolve()
        require_files(directory, CLIP_FILES, "IMAGESEARCH_CLIP_MODEL_DIR")
        name, pretrained = f"local-dir:{directory}", None
        identity = f"clip:{directory.name}@{weights_fingerprint(directory, ('*.safetensors', '*.bin'))}"
        overrides = _hf_text_override(directory)
    elif source.kind is SourceKind.HF_HUB:
        name, pretrained = f"hf-hub:{source.name}", None
        identity = f"clip:{source.label}"
    else:
        name, pretrained = source.name, source.pretrained
        identity = f"clip:{source.label}"
        if open_clip.get_model_config(name) is None:
            raise ConfigurationError(f"IMAGESEARCH_CLIP_MODEL={name} is not in open_clip's registry "
                                     "(`imagesearch models list`; or use hf-hub:org/name / transformers:org/name)")
        if not open_clip.get_pretrained_cfg(name, pretrained) and not Path(pretrained).is_file():
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise ConfigurationError(f"IMAGESEARCH_CLIP_PRETRAINED={pretrained} is not a tag open_clip registers "
                                     f"for {name} (registered: {tags})")
        force_quick_gelu = needs_quick_gelu(name, pretrained)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, precision=weights,
                force_quick_gelu=force_quick_gelu, **overrides)
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # open_clip raises RuntimeError/OSError/ValueError for network and files alike
        if source.kind is SourceKind.DIRECTORY:
            raise ModelUnavailable(f"could not load CLIP from {source.name}: {exc}") from exc
        raise ModelUnavailable(
            f"could not load CLIP {source.label} from the hub or the local cache ({exc}). Offline, run "
            "`imagesearch models download` where the hub is reachable and set IMAGESEARCH_CLIP_MODEL_DIR to "
            "the folder it writes."
        ) from exc
    _refuse_mismatches(caught, source)
    if spec.language:
        _apply_language(tokenizer, spec.language, source)
    if force_quick_gelu:
        log.info("CLIP %s: QuickGELU, as tag %r was trained", source.name, pretrained)
    encoder = OpenClipEncoder(model, preprocess, tokenizer, device, identity, dtype)
    if spec.prepack_text and device.type == "cpu" and dtype == torch.float32:
        encoder.prepacked_text = prepack_text_transformer(
            model, lambda: torch.from_numpy(encoder.encode_texts(_PROBE_TEXTS)))
    return encoder


def _apply_language(tokenizer: object, language: str, source: ClipSource) -> None:
    """Put ``language``'s code before every text, and check that it is there.

    open_clip's ``language=`` calls the HF tokenizer's ``set_src_lang_special_tokens``, which
    transformers 5 resets to ``src_lang`` on the next call: every text came out as English
    (``eng_Latn``) with no warning. Setting ``src_lang`` itself lasts.
    """
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None or not hasattr(inner, "src_lang"):
        raise ConfigurationError(f"IMAGESEARCH_CLIP_LANGUAGE={language}: the tokenizer of CLIP {source.label} has "
                                 "no languages; unset it for this model.")
    code = inner.convert_tokens_to_ids(language)
    if code is None or code == inner.unk_token_id:
        raise ConfigurationError(f"IMAGESEARCH_CLIP_LANGUAGE={language} is not a language code of CLIP "
                                 f"{source.label}'s tokenizer (e.g. eng_Latn, zho_Hans)")
    inner.src_lang = language
    if code not in tokenizer(["probe"])[0].tolist():
        raise ConfigurationError(f"CLIP {source.label}: the tokenizer ignored IMAGESEARCH_CLIP_LANGUAGE={language}")


def _refuse_mismatches(caught: list[warnings.WarningMessage], source: ClipSource) -> None:
    for warning in caught:
        message = str(warning.message)
        if "mismatch" in message.lower():
            repo = (open_clip.get_pretrained_cfg(source.name, source.pretrained) or {}).get("hf_hub", "").strip("/")
            hint = (f" Or load hf-hub:{repo}, whose open_clip_config.json states the activation its weights were "
                    "trained with.") if repo else ""
            raise ConfigurationError(
                f"CLIP {source.name!r} with pretrained tag {source.pretrained!r}: {message} Choose the "
                f"architecture the tag was trained with (`imagesearch models list`).{hint}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
