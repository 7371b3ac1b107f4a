"""What CLIP and the captioner share: device choice, precision, identity, missing-file errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from imagesearch.errors import TransientError


class ModelUnavailable(TransientError):
    """Model files could not be found locally nor downloaded; the message says how to fix it."""


class ModelMisconfigured(ModelUnavailable):
    """The model settings cannot load as given (a tag trained with another activation, a language
    code for a model without languages). Transient for the messages waiting on the model: they are
    retried, not failed, until an operator fixes the settings and restarts the process."""


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Compute dtype. auto: half precision on GPUs (half the memory, tensor cores), fp32 on CPUs."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def require_files(directory: Path, groups: dict[str, tuple[str, ...]], setting: str) -> None:
    """Raise :class:`ModelUnavailable` naming each group of which no file exists in ``directory``."""
    if not directory.is_dir():
        raise ModelUnavailable(f"{setting}={directory} is not a directory")
    missing = [
        " or ".join(names)
        for names in groups.values()
        if not any((directory / name).is_file() for name in names)
    ]
    if missing:
        raise ModelUnavailable(
            f"{setting}={directory} lacks: {'; '.join(missing)}. Copy a saved model there "
            f"(or run `imagesearch models tiny {directory.parent}` for small untrained models)."
        )


def weights_fingerprint(directory: Path, patterns: tuple[str, ...]) -> str:
    """A short content hash of a model folder's weights: two folders with equal weights match."""
    digest = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(directory.glob(pattern)):
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:12]
