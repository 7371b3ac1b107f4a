"""What an OpenSearch index of image records looks like: its body, its name, and its scores.

The design (template, ``innerproduct`` space, versioned names) is described in ARCHITECTURE.md,
"OpenSearch store", Index layout.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Literal

import numpy as np

from imagesearch.errors import ConfigurationError
from imagesearch.vocab import VectorField

# Package data, so that an installed wheel finds it as well as a source checkout.
TEMPLATE_PATH: Traversable = files("schemas") / "opensearch" / "index_template.json"
VECTOR_FIELDS: dict[str, str] = {VectorField.IMAGE: "image_vector", VectorField.CAPTION: "caption_vector"}
# The model identity stored with each vector kind: knn is restricted to vectors of one model.
MODEL_FIELDS: dict[str, str] = {VectorField.IMAGE: "image_model", VectorField.CAPTION: "text_model"}
Engine = Literal["faiss", "lucene"]
ENGINES: tuple[Engine, ...] = ("faiss", "lucene")
SCHEMA_VERSION = 1


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))


def template() -> dict[str, Any]:
    """A fresh copy of the template (callers may change it)."""
    return copy.deepcopy(_template())


def space_type() -> str:
    return _template()["mappings"]["properties"][VECTOR_FIELDS[VectorField.IMAGE]]["method"]["space_type"]


def vector_properties(dim: int, engine: str) -> dict[str, Any]:
    """The two ``knn_vector`` field mappings for vectors of ``dim`` dimensions."""
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown k-NN engine {engine!r}; expected one of {ENGINES}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ConfigurationError(f"vector dimension must be a positive integer, got {dim!r}")
    properties = _template()["mappings"]["properties"]
    out = {}
    for name in VECTOR_FIELDS.values():
        field = copy.deepcopy(properties[name])
        field["dimension"] = dim
        field["method"]["engine"] = engine
        out[name] = field
    return out


def index_meta(model: str | None, dim: int | None, engine: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "engine": engine, "space_type": space_type()}
    if model is not None:
        meta["model"] = model
    if dim is not None:
        meta["dim"] = dim
    return meta


def index_body(model: str | None, dim: int | None, engine: str) -> dict[str, Any]:
    """The ``PUT /<index>`` body. Without a known ``dim`` the vector fields are left out; the
    store adds them with ``PUT /<index>/_mapping`` when the first vector shows the dimension
    (``index.knn`` is set at creation, which is all a later ``knn_vector`` field needs)."""
    body = template()
    properties = body["mappings"]["properties"]
    for name in VECTOR_FIELDS.values():
        del properties[name]
    if dim is not None:
        properties.update(vector_properties(dim, engine))
    elif engine not in ENGINES:
        raise ConfigurationError(f"unknown k-NN engine {engine!r}; expected one of {ENGINES}")
    body["mappings"]["_meta"] = index_meta(model, dim, engine)
    return body


def model_slug(model: str | None) -> str:
    """A readable, index-name-safe token for a model identity, unique through a short hash.

    ``clip:ViT-B-32/openai`` -> ``clip-vit-b-32-openai-<8 hex>``; ``None`` (the model is not
    known yet when the very first index is created) -> ``initial``.
    """
    if model is None:
        return "initial"
    readable = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40].strip("-") or "model"
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def index_name(prefix: str, model: str | None, version: int) -> str:
    return f"{prefix}-{model_slug(model)}-v{version}"


def index_version(prefix: str, name: str) -> int | None:
    """The version number of one of our physical indices, None for any other name."""
    match = re.fullmatch(re.escape(prefix) + r"-[a-z0-9-]+-v(\d+)", name)
    return int(match.group(1)) if match else None


def json_vector(vector: np.ndarray) -> list[float]:
    """float32 values as JSON numbers (each float32 is exactly representable as a double)."""
    return np.asarray(vector, dtype=np.float32).ravel().tolist()


# -- scores -------------------------------------------------------------------------------------
# OpenSearch turns a k-NN distance into a positive score. For ``innerproduct`` (faiss and lucene
# alike): score = 1 + ip when ip > 0, else 1 / (1 - ip). For ``cosinesimil``: score = (1 + cos)/2.
# The store reports cosine similarity, like the embedded store, and applies ``min_score`` to it.


def score_to_cosine(score: float, space: str | None = None) -> float:
    space = space or space_type()
    if space == "innerproduct":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    if space == "cosinesimil":
        return 2.0 * score - 1.0
    raise ConfigurationError(f"no cosine conversion for space type {space!r}")
