"""Render the README's settings table from the settings class, so the two cannot drift.

    python scripts/settings_table.py            # print the generated block
    python scripts/settings_table.py --write    # replace the block in README.md
    python scripts/settings_table.py --check    # exit 1 when README.md differs (tests/unit/test_settings_table.py)

The block sits between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` in README.md.
One row per field of :class:`imagesearch.config.Settings`, in declaration order: the environment
variable, the type (with its bounds), the default and a description. The description is, first
found: the field's ``Field(description=...)``; an entry in ``DESCRIPTIONS`` below; the comment
lines directly above the field in ``imagesearch/config.py`` (plus a trailing ``# ...`` on its
line), without a leading section heading line such as ``# S3 events (issue 4)``. A field with none
of these fails the test: document a new setting where it is declared.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
CONFIG = ROOT / "imagesearch" / "config.py"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"

# Descriptions for settings whose comment in config.py is missing or describes a whole section.
# A Field(description=...) in config.py takes precedence over these.
DESCRIPTIONS: dict[str, str] = {
    "redis_url": "Redis URL of the Celery broker (also read for the queue-depth metric).",
    "store": "Record and vector store: `embedded` (SQLite + NumPy, one machine) or `opensearch`.",
    "opensearch_url": "OpenSearch endpoint (`STORE=opensearch`).",
    "opensearch_username": "OpenSearch basic-auth user.",
    "opensearch_password": "OpenSearch basic-auth password.",
    "opensearch_aws_service": "SigV4 service name: `es` (OpenSearch Service domains) or `aoss` (Serverless).",
    "opensearch_index_prefix": "Prefix of the OpenSearch index and alias names.",
    "opensearch_engine": "k-NN engine of the HNSW `knn_vector` fields.",
    "opensearch_verify_certs": "Verify the OpenSearch server's TLS certificate.",
    "opensearch_dim": "Vector dimension for a new index; unset: taken from the first vector written.",
    "blob_backend": "Where originals and thumbnails are kept: `local` (under `DATA_DIR/blobs`) or `s3`.",
    "s3_bucket": "Bucket for originals and thumbnails (`BLOB_BACKEND=s3`).",
    "s3_prefix": "Key prefix inside `S3_BUCKET`.",
    "s3_endpoint_url": "S3 endpoint for S3-compatible storage (MinIO, moto); unset: AWS.",
    "clip_model": "open_clip architecture name, loaded from the hub when `CLIP_MODEL_DIR` is unset.",
    "clip_pretrained": "open_clip pretrained weights tag for `CLIP_MODEL`.",
    "clip_model_dir": "Folder with a CLIP model in open_clip's `local-dir:` format; wins over the hub name.",
    "captioner_model": "Hugging Face id of the captioning model, used when `CAPTIONER_DIR` is unset.",
    "captioner_dir": "Folder with a transformers `save_pretrained` captioner; wins over the hub id.",
    "device": "Where models run: `auto` (CUDA when present), `cpu` or `cuda`.",
    "caption_max_length": "Longest generated caption, in tokens.",
    "caption_num_beams": "Beam search width of the captioner (1: greedy).",
    "max_upload_bytes": "Largest upload accepted, in bytes (413 past it).",
    "max_image_pixels": "Largest image accepted, in pixels (width x height); larger ones are refused unread.",
    "decode_min_side": "Images are decoded at reduced size, keeping the shorter side at least this many pixels.",
    "thumbnail_size": "Longest side of stored thumbnails, in pixels.",
    "embed_batch_size": "Images per CLIP forward pass in the embed worker.",
    "embed_flush_every": "Messages an embed task takes at most (or what arrived within `BATCH_FLUSH_SECONDS`).",
    "decode_threads": "Threads per worker process fetching and decoding images.",
    "caption_batch_size": "Images per captioner batch (and messages per caption task).",
    "batch_flush_seconds": "A worker runs a partial batch after waiting this long for more messages.",
    "max_retries": "Retries of a transient failure (store or blob storage unreachable) before the image is failed.",
    "retry_backoff_seconds": "First retry delay; doubles per attempt, with full jitter.",
    "retry_backoff_max_seconds": "Longest retry delay.",
    "rrf_k": "Constant `k` of reciprocal rank fusion in hybrid mode (higher: flatter fusion).",
    "max_k": "Largest `k` a search may ask for (the request model currently caps `k` at 100).",
    "sqs_batch_size": "Messages per SQS receive call.",
    "sqs_wait_seconds": "SQS long-polling wait per receive call.",
    "s3_collection": "Collection for S3 objects whose bucket and notification id `S3_COLLECTION_MAP` does not name.",
    "s3_addressing_style": "S3 addressing style (botocore) when reading `s3://` originals: `auto`, `path` or `virtual`.",
    "s3_collection_map": "Collection per bucket or notification configuration id, as JSON `{\"name\": \"collection\"}`.",
}

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


# --- descriptions from comments ------------------------------------------------------------

def field_comments(source: str, class_name: str = "Settings") -> dict[str, str]:
    """``{field: comment text}`` from the comment lines above each field (and a trailing one)."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[str, str] = {}
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        block: list[str] = []
        line = node.lineno - 1
        while line >= 1 and line in comments and lines[line - 1].lstrip().startswith("#"):
            block.insert(0, comments[line])
            line -= 1
        if len(block) > 1 and _is_heading(block[0], block[1]):
            block = block[1:]  # a section heading such as "S3 events (issue 4)"
        trailing = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                    if n in comments and not lines[n - 1].lstrip().startswith("#")]
        text = " ".join(block + trailing).strip()
        if text:
            out[node.target.id] = text
    return out


def _is_heading(line: str, following: str) -> bool:
    """A short line without closing punctuation, followed by a sentence: a section heading."""
    return len(line.split()) <= 6 and not re.search(r"[.,;:]$", line) and following[:1].isupper()


# --- rendering -------------------------------------------------------------------------------

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner}, optional" if len(args) < len(typing.get_args(annotation)) else inner
    if origin in (dict, typing.Dict):
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
        import json

        return f"`{json.dumps(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(settings_cls: Any = None, source: str | None = None) -> list[dict[str, str]]:
    if settings_cls is None:
        from imagesearch.config import Settings as settings_cls
    comments = field_comments(source if source is not None else CONFIG.read_text())
    prefix = settings_cls.model_config.get("env_prefix", "")
    out = []
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        kind = _type_name(field.annotation)
        bounds = _bounds(list(field.metadata))
        description = field.description or DESCRIPTIONS.get(name) or comments.get(name, "")
        out.append({
            "name": name,
            "variable": alias or f"{prefix}{name}".upper(),
            "type": f"{kind} ({bounds})" if bounds else kind,
            "default": "required" if field.is_required() else _default(field.get_default(call_default_factory=True)),
            "description": description,
        })
    return out


def render(settings_cls: Any = None, source: str | None = None) -> str:
    """The whole block between the markers (markers included)."""
    lines = [
        START,
        "<!-- Generated by scripts/settings_table.py from imagesearch/config.py. Document a setting where it",
        "     is declared, then run: python scripts/settings_table.py --write -->",
        "",
        "Every setting is an environment variable prefixed `IMAGESEARCH_`, read by `imagesearch/config.py`",
        "(a `.env` file in the working directory is read too); the API, the workers and the CLI read the",
        "same class, so a setting means the same thing everywhere. `.env.example` holds the offline values.",
        "",
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows(settings_cls, source):
        lines.append(f"| `{row['variable']}` | {_cell(row['type'])} | {_cell(row['default'])} | "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update README.md in place")
    group.add_argument("--check", action="store_true", help="exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    block = render()
    if not (args.write or args.check):
        print(block)
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
