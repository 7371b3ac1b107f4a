"""README's settings table is generated from the settings class: it fails when they differ."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagesearch.config import Settings
from tests.support.paths import ROOT

_spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
settings_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings_table)

FIX = "run: python scripts/settings_table.py --write"


def test_readme_table_matches_the_settings_class():
    readme = (ROOT / "README.md").read_text()
    block = settings_table.current_block(readme)
    assert block is not None, f"README.md lacks the {settings_table.START} ... {settings_table.END} markers"
    assert block == settings_table.render(), f"README.md's settings table is out of date; {FIX}"


def test_every_setting_is_in_the_table_and_documented():
    rows = {row["name"]: row for row in settings_table.rows()}
    expected = [name for name in Settings.model_fields if name not in Settings.GROUPS]
    expected += [f"{group}.{name}" for group, cls in Settings.GROUPS.items() for name in cls.model_fields]
    assert sorted(rows) == sorted(expected)
    undocumented = sorted(name for name, row in rows.items() if not row["description"])
    assert not undocumented, (f"settings without a description: {undocumented}; add Field(description=...) to "
                              f"the field in imagesearch/config.py, then {FIX}")
    assert rows["data_dir"]["variable"] == "IMAGESEARCH_DATA_DIR"


def test_the_description_is_the_fields_own():
    for cls in (Settings, *Settings.GROUPS.values()):
        for name, field in cls.model_fields.items():
            assert field.description or name in Settings.GROUPS, (cls.__name__, name)
    assert not hasattr(settings_table, "DESCRIPTIONS")  # no second source of wording


class Fake(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_")
    # A comment is not a description: only Field(description=...) reaches the table.
    data_dir: Path = Field(default=Path("./data"), description="Where things live.")
    mode: Literal["a", "b"] = Field(default="a", description="Which mode.")
    count: int = Field(default=3, ge=1, le=9, description="How many, at most. per batch")
    ratio: float | None = Field(default=None, description="A described ratio.")
    flag: bool = False  # undocumented


def test_rendering_of_types_defaults_and_descriptions():
    rows = {row["name"]: row for row in settings_table.rows(Fake)}
    assert rows["data_dir"] == {"name": "data_dir", "variable": "APP_DATA_DIR", "type": "path", "default": "`./data`",
                                "description": "Where things live."}
    assert rows["mode"]["type"] == "`a` | `b`" and rows["mode"]["default"] == "`a`"
    assert (rows["count"]["type"] == "integer (≥ 1, ≤ 9)"
            and rows["count"]["description"] == "How many, at most. per batch")
    assert rows["ratio"]["type"] == "number, optional" and rows["ratio"]["default"] == "unset"
    assert rows["ratio"]["description"] == "A described ratio."
    assert rows["flag"]["default"] == "`false`" and rows["flag"]["description"] == ""
    assert settings_table.undocumented(Fake) == ["flag"]
    block = settings_table.render(Fake)
    assert "| `APP_MODE` | `mode` | `a` \\| `b` | `a` |" in block  # pipes escaped inside the table


def test_check_and_write_name_a_setting_without_description(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{settings_table.START}\n| old |\n{settings_table.END}\n")
    monkeypatch.setattr(settings_table, "README", readme)
    for mode in ("--check", "--write"):
        assert settings_table.main([mode], Fake) == 1
        err = capsys.readouterr().err
        assert "flag" in err and "data_dir" not in err and "description" in err, (mode, err)
    assert "| old |" in readme.read_text()  # nothing written while a setting is undocumented


def test_check_mode_reports_a_stale_readme(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{settings_table.START}\n| old |\n{settings_table.END}\n")
    monkeypatch.setattr(settings_table, "README", stale)
    assert settings_table.main(["--check"]) == 1
    assert "--write" in capsys.readouterr().err
    assert settings_table.main(["--write"]) == 0 and settings_table.main(["--check"]) == 0
    assert stale.read_text().startswith("# x\n\n") and "IMAGESEARCH_DATA_DIR" in stale.read_text()
