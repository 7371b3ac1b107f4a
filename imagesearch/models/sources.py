"""Where a CLIP model comes from: the one place that reads `IMAGESEARCH_CLIP_MODEL`'s three forms.

- ``ViT-B-32`` (+ a pretrained tag): open_clip's registry;
- ``hf-hub:org/name``: an open_clip repo on the hub (open_clip's own prefix);
- ``transformers:org/name``: a transformers dual encoder (CLIP, Chinese-CLIP, SigLIP, SigLIP 2);
- a folder (``CLIP_MODEL_DIR``): open_clip's ``local-dir`` format or a transformers ``save_pretrained``
  folder, told apart by the config file it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from imagesearch.errors import ConfigurationError
from imagesearch.vocab import Library, SourceKind

HF_HUB_PREFIX = "hf-hub:"
TRANSFORMERS_PREFIX = "transformers:"


@dataclass(frozen=True)
class ClipSource:
    kind: SourceKind
    library: Library
    name: str  # registry name, hub repo id, or folder path
    pretrained: str | None = None

    @property
    def label(self) -> str:
        """How the source is named in identities and messages: ``open_clip:ViT-B-32/laion2b_s34b_b79k``."""
        if self.kind is SourceKind.REGISTRY:
            return f"open_clip:{self.name}/{self.pretrained}"
        return f"{self.kind}:{self.name}"


def parse_clip_source(model: str, pretrained: str | None, directory: Path | None) -> ClipSource:
    if directory is not None:
        return ClipSource(SourceKind.DIRECTORY, folder_library(Path(directory)), str(directory))
    model = model.strip()
    if model.startswith(HF_HUB_PREFIX):
        return ClipSource(SourceKind.HF_HUB, Library.OPEN_CLIP, _repo_id(model, HF_HUB_PREFIX))
    if model.startswith(TRANSFORMERS_PREFIX):
        return ClipSource(SourceKind.TRANSFORMERS, Library.TRANSFORMERS, _repo_id(model, TRANSFORMERS_PREFIX))
    if not model:
        raise ConfigurationError("IMAGESEARCH_CLIP_MODEL is empty")
    if not pretrained:
        raise ConfigurationError(f"IMAGESEARCH_CLIP_MODEL={model} is an open_clip registry name: it needs "
                                 "IMAGESEARCH_CLIP_PRETRAINED (a tag such as laion2b_s34b_b79k)")
    return ClipSource(SourceKind.REGISTRY, Library.OPEN_CLIP, model, pretrained)


def folder_library(directory: Path) -> Library:
    """open_clip's folders hold ``open_clip_config.json``; transformers' hold ``config.json`` only.

    An open_clip folder with an HF text tower holds both, so open_clip's file decides.
    """
    if (directory / "open_clip_config.json").is_file():
        return Library.OPEN_CLIP
    config = directory / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{config} is not readable JSON: {exc}") from exc
        return Library.TRANSFORMERS
    return Library.OPEN_CLIP  # the loader then names the missing open_clip files


def _repo_id(model: str, prefix: str) -> str:
    repo = model[len(prefix):].strip().strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigurationError(f"IMAGESEARCH_CLIP_MODEL={model}: expected {prefix}org/name")
    return repo
