"""Image-to-text captioning via transformers (VisionEncoderDecoder, BLIP, ...), loaded once per process.

On a CPU the captioner runs its linear layers with oneDNN weights packed once at load
(``_pack_linears``): torch's default CPU GEMM (MKL) reaches less than half of this CPU's matmul
rate on the encoder's products and a third of its memory bandwidth on the decoder's few-row ones,
which stream every weight once per generated token (bench/RESULTS.md, "Captioning at the CPU's
limit"). In bf16 the decoder's one-token attention also leaves torch's flash kernel
(``_bf16_cpu_attention``), which is slower than two plain matrix products at that shape. Both are
checked against the stock model on a probe at load and dropped if it differs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
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
from imagesearch.memtrim import release_freed_memory
from imagesearch.models import prepacked
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
    # oneDNN-packed linear layers (and, in bf16, the decoder attention below) on CPU; False keeps
    # transformers' stock modules (the benchmarks' reference).
    cpu_kernels: bool = True

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
    if device.type == "cpu" and spec.cpu_kernels:
        _use_cpu_kernels(model, image_processor)
    log.info("loaded captioner %s on %s in %s", identity, device, str(model.dtype).removeprefix("torch."))
    return Captioner(model, image_processor, tokenizer, device, identity, spec.max_length, spec.num_beams)


@lru_cache(maxsize=2)
def _cached(spec: CaptionerSpec) -> Captioner:
    return load_captioner(spec)


def get_captioner(settings: Settings) -> Captioner:
    """The process-wide captioner for these settings (loaded on first use)."""
    return _cached(CaptionerSpec.from_settings(settings))


# -- CPU kernels ----------------------------------------------------------------------------------

_PROBE_STEPS = 4
# Largest logit difference the packed model may show against the stock one on the probe, relative
# to the largest logit: fp32 differs by summation order only (measured ~1e-6); bf16 rounds each
# layer's output either way (measured ~1e-2 at most on the benchmark's random vit-gpt2).
_PROBE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.05}
_BF16_ATTENTION = "imagesearch_bf16_cpu"


def _use_cpu_kernels(model: PreTrainedModel, image_processor: BaseImageProcessor) -> None:
    """Packed linears (fp32, bf16) and the one-token bf16 attention, if the probe's output stays."""
    dtype = model.dtype
    if dtype not in _PROBE_TOLERANCE or not prepacked.available():
        return
    pixels = image_processor(images=[_probe_image()], return_tensors="pt")["pixel_values"].to(dtype=dtype)
    with torch.inference_mode():
        reference = _probe(model, pixels)
        swapped = _pack_linears(model)
        attention = _attention_implementations(model)
        if dtype == torch.bfloat16:
            try:
                _register_bf16_attention()
                model.set_attn_implementation(_BF16_ATTENTION)
            except Exception as exc:  # noqa: BLE001 - a model that cannot switch keeps sdpa, and the packing
                log.info("captioner keeps sdpa attention: %s", exc)
                _restore_attention(model, attention)
        try:
            error = _probe_difference(reference, _probe(model, pixels), _PROBE_TOLERANCE[dtype])
        except Exception as exc:  # noqa: BLE001 - a private operator or a model's own code refused: stock kernels
            error = repr(exc)
    if error is None:
        del swapped
        _own_remaining_tensors(model)
        release_freed_memory()
        log.info("captioner runs packed CPU linear layers")
        return
    for parent, name, original in swapped:
        setattr(parent, name, original)
    _restore_attention(model, attention)
    log.warning("captioner kept the stock CPU kernels: the packed ones changed its output (%s)", error)


def _own_remaining_tensors(model: nn.Module) -> None:
    """Copy what the packing left (embeddings, norms, biases) out of the weights file's mapping.

    transformers maps a safetensors file and loads fp32 weights as views of it: the packed copies
    replace most of them, but while any view lives the whole file stays mapped and resident (the
    fp32 vit-gpt2 process measured 2.7 GB instead of 2.0)."""
    copies: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                if id(tensor) not in copies:  # tied weights stay tied: one copy, shared
                    clone = tensor.detach().clone()
                    copies[id(tensor)] = nn.Parameter(clone, requires_grad=False) if isinstance(
                        tensor, nn.Parameter) else clone
                table[name] = copies[id(tensor)]
        if isinstance(module, prepacked.PackedLinear) and module.bias is not None:
            module.bias = module.bias.clone()


def _probe_image() -> Image.Image:
    """A fixed picture with structure (gradients and a checkerboard) for the load-time check."""
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([x * 2, y * 2, ((x // 16 + y // 16) % 2) * 255], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def _probe(model: PreTrainedModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(pixel_values=pixels, max_new_tokens=_PROBE_STEPS, min_new_tokens=_PROBE_STEPS,
                         max_length=None, num_beams=1, do_sample=False, output_scores=True,
                         return_dict_in_generate=True)
    return out.sequences, torch.stack(out.scores).float()


def _probe_difference(reference: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor],
                      tolerance: float) -> str | None:
    """None when both runs chose the same tokens with logits within ``tolerance`` (relative)."""
    (ref_ids, ref_scores), (ids, scores) = reference, got
    if not torch.equal(ref_ids, ids):
        return f"tokens {ids.tolist()} instead of {ref_ids.tolist()}"
    finite = torch.isfinite(ref_scores)  # tokens a logits processor ruled out are -inf in both
    if not torch.equal(finite, torch.isfinite(scores)):
        return "different tokens ruled out"
    scale = max(1.0, ref_scores[finite].abs().max().item())
    difference = (scores[finite] - ref_scores[finite]).abs().max().item()
    return None if difference <= tolerance * scale else f"logits differ by {difference:.2e} (scale {scale:.1f})"


def _linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a linear layer: nn.Linear, or GPT-2's Conv1D, which stores it transposed."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.weight
    if isinstance(module, Conv1D):
        return module.weight.t().contiguous()
    return None


class _PackedLinearGelu(prepacked.PackedLinear):
    """A packed linear layer with the MLP's GELU applied by oneDNN on its output tile (one pass
    less over the 8 x 197 x 3072 activations of each ViT layer). In fp32 the exact GELU is bit
    for bit torch's; the tanh form differs from transformers' Python one by about 5e-7."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, algorithm: str) -> None:
        super().__init__(weight, bias)
        self.algorithm = algorithm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "gelu", [], self.algorithm)
        return y.reshape(*x.shape[:-1], self.out_features)


# MLPs that compute act(linear(x)) and nothing else with act: (linear, activation) attribute names
# in ViT / BLIP's vision tower (fc1, activation_fn), GPT-2 (c_fc, act), BERT-style text decoders.
_MLP_PAIRS = (("fc1", "activation_fn"), ("c_fc", "act"), ("dense", "intermediate_act_fn"))


def _gelu_algorithm(activation: object) -> str | None:
    """oneDNN's name for the GELU this module computes ("none": exact erf; "tanh"), else None."""
    from transformers.activations import GELUActivation, GELUTanh, NewGELUActivation

    if isinstance(activation, GELUActivation) and activation.act is F.gelu:
        return "none"
    if isinstance(activation, NewGELUActivation | GELUTanh):
        return "tanh"
    if isinstance(activation, nn.GELU):
        return activation.approximate
    return None


def _pack_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Swap every linear layer for a packed one; returns (parent, name, original) for each swap.

    The decoder's output layer shares its weight with the token embedding (tied), so its packed
    copy is extra memory (GPT-2: 154 MB in fp32); every other layer's old weight is freed."""
    swapped = []
    for parent in list(model.modules()):
        for fc_name, act_name in _MLP_PAIRS:
            fc, act = getattr(parent, fc_name, None), getattr(parent, act_name, None)
            weight = None if fc is None else _linear_weight(fc)
            algorithm = _gelu_algorithm(act)
            if weight is None or algorithm is None or weight.dtype not in _PROBE_TOLERANCE:
                continue
            setattr(parent, fc_name, _PackedLinearGelu(weight, fc.bias, algorithm))
            setattr(parent, act_name, nn.Identity())
            swapped += [(parent, fc_name, fc), (parent, act_name, act)]
        for name, child in list(parent.named_children()):
            weight = _linear_weight(child)
            if weight is None or weight.dtype not in _PROBE_TOLERANCE:
                continue
            setattr(parent, name, prepacked.PackedLinear(weight, child.bias))
            swapped.append((parent, name, child))
    return swapped


def _attention_implementations(model: nn.Module) -> list[tuple[object, str | None]]:
    return [(m.config, m.config._attn_implementation) for m in model.modules() if isinstance(m, PreTrainedModel)]


def _restore_attention(model: nn.Module, saved: list[tuple[object, str | None]]) -> None:
    for config, implementation in saved:
        config._attn_implementation_internal = implementation


def _register_bf16_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(_BF16_ATTENTION, _bf16_cpu_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(_BF16_ATTENTION, sdpa_mask)  # the masks sdpa gets


def _bf16_cpu_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        is_causal: bool | None = None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except for one query token in bf16 on CPU: there torch's flash
    kernel took 0.8-1.5 ms per call against 0.2-0.3 ms for two matrix products around an fp32
    softmax (8 captions, 197 image tokens), and a decoder calls it twice per layer per token."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (query.shape[2] != 1 or query.dtype != torch.bfloat16 or query.device.type != "cpu" or dropout
            or key.shape[1] != query.shape[1] or kwargs.get("position_bias") is not None
            or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # Scores in fp32, as the flash kernel keeps them: bf16 scores (an 8-bit mantissa on values of
    # order 10) made the softmax weights 4x less exact, and the upcast costs no time at this size.
    scores = torch.matmul(query.float() * scale, key.float().transpose(-1, -2))
    if attention_mask is not None:  # one query row: causal masking has nothing to hide
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(torch.float32).min)
        else:
            scores = scores + attention_mask.float()
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None
