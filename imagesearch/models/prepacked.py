"""CLIP's text transformer with its linear weights pre-packed for oneDNN, for fast CPU queries.

A text query is a handful of tokens, so every linear layer is a GEMM with about eight rows: the
cost is streaming the weights, and torch's default CPU GEMM (MKL) reads them at about a third of
the memory bandwidth on the AMD CPUs we measured. oneDNN with weights reordered once at load time
runs the same products 2x faster (bench/RESULTS.md, "Query"). These are the operators torch's own
inductor uses when it freezes a CPU model; they are private, so `prepack_text_transformer` checks
them against the stock path on a probe and keeps the stock modules when anything differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from imagesearch.memtrim import release_freed_memory

log = logging.getLogger(__name__)

# Rows the packed layout is tuned for: a short query's token count.
_ROWS_HINT = 8


def available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """`nn.Linear` for fp32 CPU inference, weights held in oneDNN's blocked layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features = weight.shape[0]
        # Named `weight` because open_clip reads `mlp.c_fc.weight.dtype` to pick the cast dtype.
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _ROWS_HINT)
        self.bias = None if bias is None else bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)


class PackedSelfAttention(nn.Module):
    """Stands in for `nn.MultiheadAttention(batch_first=True)` called as self-attention."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.heads = attention.num_heads
        self.in_proj = PackedLinear(attention.in_proj_weight, attention.in_proj_bias)
        self.out_proj = PackedLinear(attention.out_proj.weight, attention.out_proj.bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if k is not q or v is not q or need_weights:
            raise NotImplementedError("packed attention serves self-attention without weights only")
        batch, length, width = q.shape
        qkv = self.in_proj(q).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width)), None


def _packable(block: nn.Module) -> bool:
    attention, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    return (
        isinstance(attention, nn.MultiheadAttention) and attention.batch_first
        and attention._qkv_same_embed_dim and attention.in_proj_weight is not None
        and attention.bias_k is None and not attention.add_zero_attn
        and not hasattr(block, "ln_1_kv")
        and isinstance(getattr(mlp, "c_fc", None), nn.Linear) and isinstance(getattr(mlp, "c_proj", None), nn.Linear)
    )


def prepack_text_transformer(model: nn.Module, probe: Callable[[], torch.Tensor], atol: float = 1e-4) -> bool:
    """Swap the text transformer's layers for packed ones if `probe()` gives the same vectors after.

    `probe` encodes fixed texts with the model. Returns whether the packed layers stayed in.
    """
    transformer = getattr(model, "transformer", None)
    blocks = list(getattr(transformer, "resblocks", []))
    if not available() or not blocks or not all(_packable(b) for b in blocks):
        return False
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in transformer.parameters()):
        return False
    originals = [(b.attn, b.mlp.c_fc, b.mlp.c_proj) for b in blocks]
    with torch.inference_mode():
        reference = probe()
        try:
            for block in blocks:
                block.attn = PackedSelfAttention(block.attn)
                block.mlp.c_fc = PackedLinear(block.mlp.c_fc.weight, block.mlp.c_fc.bias)
                block.mlp.c_proj = PackedLinear(block.mlp.c_proj.weight, block.mlp.c_proj.bias)
            packed = probe()
            same = packed.shape == reference.shape and bool(torch.allclose(packed, reference, atol=atol, rtol=0))
            error = None if same else f"max difference {(packed - reference).abs().max().item():.2e}"
        except Exception as exc:  # noqa: BLE001 - a private operator changed: serve with the stock kernels
            error = repr(exc)
    if error is None:
        del originals
        # Nothing reuses the replaced weights' 150 MB: a process that loaded ViT-B-32 stayed 152 MiB
        # larger than one with the stock layers without this, 6 MiB with it.
        release_freed_memory()
        return True
    for block, (attention, fc, proj) in zip(blocks, originals):
        block.attn, block.mlp.c_fc, block.mlp.c_proj = attention, fc, proj
    log.warning("kept the stock text encoder: packed layers did not match it (%s)", error)
    return False

