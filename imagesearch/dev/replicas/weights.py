"""Small random weights for a replica, filled fast and deterministically.

Random init through each library's own initialisers costs seconds per 100M parameters on two cores;
a replica only needs finite, well-scaled values, so every tensor is drawn from one seeded generator:
weights ~ N(0, std), norm scales ~ 1 + N(0, std), biases ~ N(0, std). Activations then stay O(1)
through deep towers, so vector differences measure the code path, not float overflow.
"""

from __future__ import annotations

import torch


def _is_norm_scale(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    owner = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return leaf in ("weight", "gamma", "g") and any(k in owner.lower() for k in ("norm", "ln", "layernorm"))


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Overwrite every floating parameter of ``module`` in place; returns it.

    Buffers are left alone: some are structural (open_clip's causal ``attn_mask``).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * std
            if _is_norm_scale(name):
                noise += 1.0
            tensor.copy_(noise.to(tensor.dtype))
    return module
