"""The catalogue names real models and the docs show it as `imagesearch models list` prints it."""

from __future__ import annotations

import open_clip
import pytest

from imagesearch.config import Settings
from imagesearch.models.catalogue import CATALOGUE, markdown_table
from imagesearch.models.sources import parse_clip_source
from imagesearch.vocab import ModelRole, SourceKind
from tests.support.paths import ROOT

CLIP_ENTRIES = [e for e in CATALOGUE if e.role is ModelRole.CLIP]


@pytest.fixture(autouse=True)
def _hub_defaults(monkeypatch):
    """The test session points every model at local folders; these tests read the hub defaults."""
    for name in ("CLIP_MODEL", "CLIP_PRETRAINED", "CLIP_MODEL_DIR", "CLIP_LANGUAGE", "CAPTIONER_MODEL",
                 "CAPTIONER_DIR"):
        monkeypatch.delenv(f"IMAGESEARCH_{name}", raising=False)


def test_docs_hold_the_catalogue_as_printed():
    text = (ROOT / "docs" / "models.md").read_text()
    start, end = "<!-- catalogue:start -->\n", "\n<!-- catalogue:end -->"
    assert text[text.index(start) + len(start):text.index(end)] == markdown_table(), (
        "regenerate with: imagesearch models list --markdown")


@pytest.mark.parametrize("entry", CLIP_ENTRIES, ids=lambda e: e.name)
def test_every_clip_entry_names_a_loadable_source(entry, monkeypatch):
    for key, value in entry.settings.items():
        monkeypatch.setenv(key, value)
    models = Settings().models
    source = parse_clip_source(models.clip_model, models.clip_pretrained, models.clip_model_dir)
    assert source.label.endswith(entry.name) or entry.name == f"{source.name}/{source.pretrained}"
    if source.kind is SourceKind.REGISTRY:
        assert open_clip.get_pretrained_cfg(source.name, source.pretrained), f"{entry.name}: unknown tag"


def test_the_default_settings_are_the_first_entry():
    models = Settings().models
    assert CATALOGUE[0].settings == {"IMAGESEARCH_CLIP_MODEL": models.clip_model,
                                     "IMAGESEARCH_CLIP_PRETRAINED": models.clip_pretrained}
    captioners = [e for e in CATALOGUE if e.role is ModelRole.CAPTIONER]
    assert captioners[0].settings == {"IMAGESEARCH_CAPTIONER_MODEL": models.captioner_model}


def test_every_recall_is_cited():
    for entry in CATALOGUE:
        assert not entry.recall or entry.citation, entry.name
        assert set(entry.recall) <= {"en", "zh"} and all(0 < v < 100 for v in entry.recall.values())
