"""Render the README's settings table from the settings class, so the two cannot drift.

    python scripts/settings_table.py            # print the generated block
    python scripts/settings_table.py --write    # replace the block in README.md
    python scripts/settings_table.py --check    # exit 1 when README.md differs (tests/unit/test_settings_table.py)

The block sits between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` in README.md.
One row per field of :class:`imagesearch.config.Settings`, in declaration order: the environment
variable, the type (with its bounds), the default and the field's ``Field(description=...)``.
A field without a description fails ``--check`` (and the test), naming it: document a new setting
where it is declared.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"

# Environment variables read outside the settings class.
OTHER_VARIABLES: tuple[tuple[str, str], ...] = (
    ("PROMETHEUS_MULTIPROC_DIR", "Folder where every API and worker process writes its metric samples; `GET /metrics` "
     "merges them. Unset: `DATA_DIR/metrics`, created on first use. Give API and workers on one machine the same "
     "folder, and a fresh empty one per deployment (the files are never deleted)."),
    ("PORT", "Port of the Procfile's `web` process (default 8000)."),
    ("WEB_CONCURRENCY", "gunicorn worker processes of the Procfile's `web` process (default 2)."),
    ("OMP_NUM_THREADS", "Threads per process for torch and NumPy's BLAS. The API defaults it to 1 (one thread per "
                        "query; scale with `WEB_CONCURRENCY`); workers use every core unless it is set."),
    ("IMAGESEARCH_API_URL", "API base URL for `imagesearch search` (default `http://127.0.0.1:8000`)."),
    ("HF_HUB_OFFLINE", "`1`: never contact the Hugging Face hub (models come from the `*_DIR` settings)."),
)


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner}, optional" if len(args) < len(typing.get_args(annotation)) else inner
    if origin is dict:
        return "JSON object"
    if origin in (list, tuple, set):
        return "JSON array"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(parts)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        text = value.as_posix()
        return f"`{text if value.is_absolute() or text.startswith('.') else './' + text}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_class() -> Any:
    from imagesearch.config import Settings

    return Settings


def rows(settings_cls: Any = None, path: str = "") -> list[dict[str, str]]:
    """One row per setting, groups flattened in declaration order (``name`` is the attribute path)."""
    settings_cls = settings_cls or _settings_class()
    prefix = settings_cls.model_config.get("env_prefix", "")
    out = []
    for name, field in settings_cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            out += rows(field.annotation, f"{path}{name}.")
            continue
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        kind = _type_name(field.annotation)
        bounds = _bounds(list(field.metadata))
        out.append({
            "name": f"{path}{name}",
            "variable": alias or f"{prefix}{name}".upper(),
            "type": f"{kind} ({bounds})" if bounds else kind,
            "default": "required" if field.is_required() else _default(field.get_default(call_default_factory=True)),
            "description": (field.description or "").strip(),
        })
    return out


def undocumented(settings_cls: Any = None) -> list[str]:
    """Fields without a ``Field(description=...)``, in declaration order."""
    return [row["name"] for row in rows(settings_cls) if not row["description"]]


def render(settings_cls: Any = None) -> str:
    """The whole block between the markers (markers included)."""
    lines = [
        START,
        "<!-- Generated by scripts/settings_table.py from imagesearch/config.py. Document a setting where it",
        "     is declared, then run: python scripts/settings_table.py --write -->",
        "",
        "Every setting is an environment variable prefixed `IMAGESEARCH_`, read by `imagesearch/config.py`",
        "(a `.env` file in the working directory is read too; an empty variable means unset) into one group",
        "per concern (`setting` is its attribute: `settings.s3.bucket`). The API, the workers and the CLI read",
        "the same classes, so a setting means the same thing everywhere. `.env.example` holds the offline values.",
        "",
        "| variable | setting | type | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows(settings_cls):
        lines.append(f"| `{row['variable']}` | `{row['name']}` | {_cell(row['type'])} | {_cell(row['default'])} | "
                     f"{_cell(row['description'])} |")
    lines += ["", "Other environment variables:", "", "| variable | what it does |", "| --- | --- |"]
    lines += [f"| `{name}` | {_cell(text)} |" for name, text in OTHER_VARIABLES]
    lines.append(END)
    return "\n".join(lines)


def current_block(readme: str) -> str | None:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[start:end + len(END)]


def updated_readme(readme: str, block: str) -> str:
    current = current_block(readme)
    if current is None:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return readme.replace(current, block, 1)


def main(argv: list[str] | None = None, settings_cls: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update README.md in place")
    group.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    block = render(settings_cls)
    missing = undocumented(settings_cls)
    if not (args.write or args.check):
        print(block)
    if missing:
        print(f"settings without a description: {', '.join(missing)}; give each a Field(description=...) "
              "in imagesearch/config.py, then run python scripts/settings_table.py --write", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        return 0
    readme = README.read_text()
    new = updated_readme(readme, block)
    if args.check:
        if new != readme:
            print("README.md's settings table is out of date: run python scripts/settings_table.py --write",
                  file=sys.stderr)
            return 1
        return 0
    if new != readme:
        README.write_text(new)
        print("README.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
