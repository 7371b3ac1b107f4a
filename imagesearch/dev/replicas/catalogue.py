"""Install the replica of a catalogue entry (imagesearch.models.catalogue) by its catalogue name."""

from __future__ import annotations

from pathlib import Path

from imagesearch.models.catalogue import find
from imagesearch.vocab import ModelRole


def install_replica(name: str, *, seed: int = 0) -> Path:
    entry = find(name)
    if entry is None or not entry.replica:
        raise ValueError(f"no offline replica for {name!r}")
    if entry.role is ModelRole.CAPTIONER:
        from imagesearch.dev.replicas.captioners import install_captioner_replica

        return install_captioner_replica(name, seed=seed)
    if name.startswith("transformers:"):
        from imagesearch.dev.replicas.transformers_clip import install_transformers_clip_replica

        return install_transformers_clip_replica(name.removeprefix("transformers:"), seed=seed)
    from imagesearch.dev.replicas.open_clip_family import install_open_clip_replica

    arch, _, tag = name.partition("/")
    return install_open_clip_replica(arch, tag, seed=seed)
