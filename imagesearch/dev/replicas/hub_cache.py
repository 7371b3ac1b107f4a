"""Install a folder of files into a Hugging Face hub cache as if `hf_hub_download` had fetched it.

The layout (measured, see ../shared/notes/hub-replicas.md)::

    <cache>/models--<org>--<name>/refs/main                  the revision, 40 hex characters
    <cache>/models--<org>--<name>/snapshots/<revision>/<file>

With ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` (or ``HF_HUB_CACHE``) pointing at the cache, open_clip and
transformers load a hub name from here and never touch the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def hub_cache_dir() -> Path:
    """The hub cache that huggingface_hub reads, by its own environment rules."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "hub"


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def snapshot_path(repo_id: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder `refs/main` points at, or None when the repo is not cached."""
    folder = repo_folder(repo_id, cache)
    ref = folder / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = folder / "snapshots" / ref.read_text().strip()
    return snapshot if snapshot.is_dir() else None


def install_snapshot(repo_id: str, source: Path, cache: Path | None = None) -> Path:
    """Move every file of ``source`` (recursively) into the cached snapshot of ``repo_id``.

    Files already in the snapshot are kept unless ``source`` has the same name. Returns the snapshot.
    """
    folder = repo_folder(repo_id, cache)
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = snapshot / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def remove_repo(repo_id: str, cache: Path | None = None) -> None:
    shutil.rmtree(repo_folder(repo_id, cache), ignore_errors=True)
