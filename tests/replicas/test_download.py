"""`imagesearch models download` from the private hub cache: the folder it writes loads through the
*_DIR settings and serves what the hub name serves, and it keeps working after the folder moves."""

from __future__ import annotations

import gc
import shutil
import subprocess

import numpy as np
import open_clip
import pytest
from PIL import Image

from imagesearch.dev.replicas.captioners import install_captioner_replica
from imagesearch.dev.replicas.hub_cache import remove_repo
from imagesearch.dev.replicas.open_clip_family import (
    install_open_clip_replica,
    open_clip_replica_repos,
    remove_repos,
)
from imagesearch.dev.replicas.transformers_clip import install_transformers_clip_replica
from imagesearch.errors import ConfigurationError
from imagesearch.models.captioner import CaptionerSpec, load_captioner
from imagesearch.models.clip import ClipSpec, load_clip
from imagesearch.models.download import download
from tests.support.paths import ROOT

TEXTS = ["two children running in front of a house", "两个红色圆形", "a dog"]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(2)]


def _spec(model: str, pretrained: str | None = None, directory=None) -> ClipSpec:
    return ClipSpec(model, pretrained, directory, "cpu")


def _max_difference(a, b) -> float:
    return float(max(np.abs(a.encode_texts(TEXTS) - b.encode_texts(TEXTS)).max(),
                     np.abs(a.encode_images(_images()) - b.encode_images(_images())).max()))


@pytest.fixture
def openai_replica():
    install_open_clip_replica("ViT-B-32", "openai")
    yield
    remove_repos(open_clip_replica_repos("ViT-B-32", "openai"))
    gc.collect()


def test_an_open_clip_tag_becomes_a_local_dir_that_keeps_its_activation(openai_replica, tmp_path):
    saved = download("ViT-B-32/openai", tmp_path / "clip")
    assert saved.setting == "IMAGESEARCH_CLIP_MODEL_DIR" and saved.max_difference < 1e-6
    assert {"open_clip_config.json", "open_clip_model.safetensors"} <= {p.name for p in saved.folder.iterdir()}
    moved = shutil.move(saved.folder, tmp_path / "elsewhere")  # the folder names no absolute path
    from_folder = load_clip(_spec("unused", directory=moved))
    from_hub = load_clip(_spec("ViT-B-32", "openai"))
    assert _max_difference(from_folder, from_hub) < 1e-6
    activations = [m for m in from_folder.model.modules() if isinstance(m, open_clip.transformer.QuickGELU)]
    assert len(activations) == 24  # 12 vision + 12 text blocks, as the tag was trained


def test_the_command_prints_the_setting_and_refuses_bad_names(openai_replica, tmp_path):
    command = [str(ROOT / ".venv" / "bin" / "imagesearch"), "models", "download"]
    done = subprocess.run([*command, "ViT-B-32/openai", "--to", str(tmp_path / "m")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"IMAGESEARCH_CLIP_MODEL_DIR={tmp_path / 'm'}" in done.stdout
    bad = subprocess.run([*command, "no-such-model", "--to", str(tmp_path / "n")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "names no model" in bad.stderr and not (tmp_path / "n").exists()
    with pytest.raises(ConfigurationError, match="not empty"):
        download("ViT-B-32/openai", tmp_path / "m")


def test_an_hf_text_tower_travels_with_the_folder(tmp_path):
    name, tag = "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"
    install_open_clip_replica(name, tag)
    try:
        saved = download(f"{name}/{tag}", tmp_path / "clip")
        assert {"config.json", "tokenizer.json"} <= {p.name for p in saved.folder.iterdir()}
        moved = shutil.move(saved.folder, tmp_path / "elsewhere")
        for repo in open_clip_replica_repos(name, tag):
            remove_repo(repo)  # the folder alone must suffice: no hub cache left to fall back on
        from_folder = load_clip(_spec("unused", directory=moved))
        assert from_folder.encode_texts(["两个孩子在房子前面跑"]).shape == (1, 512)
        assert saved.max_difference < 1e-6
    finally:
        remove_repos(open_clip_replica_repos(name, tag))
        gc.collect()


def test_a_transformers_clip_is_copied_file_for_file(tmp_path):
    repo = "openai/clip-vit-base-patch32"
    snapshot = install_transformers_clip_replica(repo)
    try:
        saved = download(f"transformers:{repo}", tmp_path / "clip")
        published = {p.name for p in snapshot.iterdir()}
        assert {p.name for p in saved.folder.iterdir()} <= published
        files = {p.name for p in saved.folder.iterdir()}
        assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= files
        assert saved.max_difference < 1e-6
    finally:
        remove_repo(repo)
        gc.collect()


def test_a_captioner_folder_writes_the_same_captions(tmp_path):
    repo = "nlpconnect/vit-gpt2-image-captioning"
    install_captioner_replica(repo)
    try:
        saved = download(repo, tmp_path / "captioner")
        assert saved.setting == "IMAGESEARCH_CAPTIONER_DIR" and saved.max_difference == 0
        from_folder = load_captioner(CaptionerSpec(repo, saved.folder, "cpu", 6, 1, "fp32"))
        from_hub = load_captioner(CaptionerSpec(repo, None, "cpu", 6, 1, "fp32"))
        assert from_folder.caption(_images()) == from_hub.caption(_images())
    finally:
        remove_repo(repo)
        gc.collect()
