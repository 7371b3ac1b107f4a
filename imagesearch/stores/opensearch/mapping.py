"""What an OpenSearch index of image records looks like: its body, its name, and its scores.

The design (template, ``innerproduct`` space, versioned names) is described in ARCHITECTURE.md,
"OpenSearch store", Index layout.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Literal

import numpy as np

from imagesearch.attributes import AttributeSchema
from imagesearch.config import OpenSearchSettings
from imagesearch.errors import ConfigurationError
from imagesearch.vocab import AttributeType, VectorField

# Package data, so that an installed wheel finds it as well as a source checkout.
TEMPLATE_PATH: Traversable = files("schemas") / "opensearch" / "index_template.json"
VECTOR_FIELDS: dict[str, str] = {VectorField.IMAGE: "image_vector", VectorField.CAPTION: "caption_vector"}
# The model identity stored with each vector kind: knn is restricted to vectors of one model.
MODEL_FIELDS: dict[str, str] = {VectorField.IMAGE: "image_model", VectorField.CAPTION: "text_model"}
Engine = Literal["faiss", "lucene"]
ENGINES: tuple[Engine, ...] = ("faiss", "lucene")
Encoding = Literal["fp32", "sq_fp16", "on_disk"]
ENCODINGS: tuple[Encoding, ...] = ("fp32", "sq_fp16", "on_disk")
# The spaces of float vectors, which every encoding here takes (OpenSearch's "Methods and engines"
# and "Disk-based vector search" pages; cosinesimil on faiss from 2.19). The hamming spaces are for
# binary vectors, which none of them is. The template's space, innerproduct, is supported by all.
FLOAT_SPACES = ("l2", "innerproduct", "cosinesimil")
# 2: the CJK-aware text analyzer on caption, title and description; taken_at; attributes.
SCHEMA_VERSION = 2
TEXT_FIELDS = ("caption", "title", "description")
# How each declared attribute type is mapped under ``attributes``. Dates are epoch milliseconds,
# like ``created_at``; the store converts from and to the records' epoch seconds.
ATTRIBUTE_MAPPINGS: dict[AttributeType, dict[str, Any]] = {
    AttributeType.KEYWORD: {"type": "keyword"},
    AttributeType.NUMBER: {"type": "double"},
    AttributeType.BOOLEAN: {"type": "boolean"},
    AttributeType.DATE: {"type": "date", "format": "epoch_millis"},
}


@dataclass(frozen=True)
class VectorEncoding:
    """How an index holds its two vector fields (ARCHITECTURE.md, "OpenSearch store", Index layout;
    the memory each one costs: docs/opensearch-sizing.md).

    - ``fp32``: the template's mapping as it is: float vectors in a Faiss (or Lucene) HNSW graph.
    - ``sq_fp16``: Faiss's 16-bit scalar quantizer (``encoder: sq``, ``type: fp16``), half the
      native memory. ``clip`` stays false: CLIP vectors are unit length, so every value is far
      inside fp16's +-65504, and a vector that is not would be refused (recorded as that image's
      failure) rather than silently altered.
    - ``on_disk``: ``mode: on_disk`` with ``compression_level``: a quantized graph in memory and the
      full vectors on disk. OpenSearch rescores the first pass from the full vectors by default,
      with an oversampling it chooses per compression level (and, in recent releases, dimension),
      so the store sends no ``rescore`` of its own, and the scores stay inner products of the full
      vectors, which :func:`score_to_cosine` reads as for fp32.
    """

    kind: Encoding = "fp32"
    compression_level: str | None = None  # on_disk only

    @classmethod
    def from_settings(cls, settings: OpenSearchSettings) -> VectorEncoding:
        kind = settings.vector_encoding
        return cls(kind, settings.compression_level if kind == "on_disk" else None)

    def check(self, engine: str, space: str) -> None:
        """Refuse a combination OpenSearch would refuse when it creates the index (the settings
        check the same at start-up; this covers a store built without them)."""
        if self.kind not in ENCODINGS:
            raise ConfigurationError(f"unknown vector encoding {self.kind!r}; expected one of {ENCODINGS}")
        if space not in FLOAT_SPACES:
            raise ConfigurationError(f"vector encoding {self.kind} does not support the space type {space!r}")
        if self.kind == "sq_fp16" and engine != "faiss":
            raise ConfigurationError(f"vector encoding sq_fp16 is Faiss's scalar quantizer; the engine is {engine}")
        if self.kind == "on_disk":
            levels = OpenSearchSettings.COMPRESSION_ENGINES
            needed = levels.get(self.compression_level or "")
            if needed is None:
                raise ConfigurationError(f"on_disk needs a compression level, one of {list(levels)}; "
                                         f"got {self.compression_level!r}")
            if needed != engine:
                raise ConfigurationError(f"compression level {self.compression_level} runs on {needed}, not {engine}")
        elif self.compression_level is not None:
            raise ConfigurationError(f"a compression level applies to on_disk only, not {self.kind}")

    def apply(self, field: dict[str, Any]) -> dict[str, Any]:
        """``field`` (a template ``knn_vector`` mapping) with this encoding, changed in place."""
        if self.kind == "sq_fp16":
            field["method"]["parameters"]["encoder"] = {"name": "sq", "parameters": {"type": "fp16", "clip": False}}
        elif self.kind == "on_disk":
            # The method (engine, space, m, ef_construction) stays; OpenSearch forbids an encoder
            # beside a compression level, and the template has none.
            field["mode"] = "on_disk"
            field["compression_level"] = self.compression_level
        return field

    def meta(self) -> dict[str, Any]:
        """What ``_meta`` records of it."""
        out: dict[str, Any] = {"vector_encoding": self.kind}
        if self.compression_level is not None:
            out["compression_level"] = self.compression_level
        return out


@dataclass(frozen=True)
class IndexSettings:
    """The dynamic settings of a live index, and the static shard count of a new one."""

    shards: int | None = None  # None: the cluster's default
    replicas: int = 1
    refresh_interval: str = "1s"

    @classmethod
    def from_settings(cls, settings: OpenSearchSettings) -> IndexSettings:
        return cls(settings.shards, settings.replicas, settings.refresh_interval)

    def live(self) -> dict[str, Any]:
        """The values a serving index has (and a reindexed one gets back before its swap)."""
        return {"number_of_replicas": self.replicas, "refresh_interval": self.refresh_interval}


# While a reindex fills a new index: no refresh (no small segments, each with its own native
# graph) and no replicas (the graphs are built once, on the primaries, and copied to the replicas
# when they are added). OpenSearch's "Indexing performance tuning" page.
BULK_LOAD: dict[str, Any] = {"number_of_replicas": 0, "refresh_interval": "-1"}


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text(encoding="utf-8"))


def template() -> dict[str, Any]:
    """A fresh copy of the template (callers may change it)."""
    return copy.deepcopy(_template())


def space_type() -> str:
    return _template()["mappings"]["properties"][VECTOR_FIELDS[VectorField.IMAGE]]["method"]["space_type"]


def vector_properties(dim: int, engine: str, encoding: VectorEncoding | None = None) -> dict[str, Any]:
    """The two ``knn_vector`` field mappings for vectors of ``dim`` dimensions, in ``encoding``
    (fp32 by default). The same at index creation and when the first vector adds the fields."""
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown k-NN engine {engine!r}; expected one of {ENGINES}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ConfigurationError(f"vector dimension must be a positive integer, got {dim!r}")
    encoding = encoding or VectorEncoding()
    encoding.check(engine, space_type())
    properties = _template()["mappings"]["properties"]
    out = {}
    for name in VECTOR_FIELDS.values():
        field = copy.deepcopy(properties[name])
        field["dimension"] = dim
        field["method"]["engine"] = engine
        out[name] = encoding.apply(field)
    return out


def index_meta(model: str | None, dim: int | None, engine: str, schema_version: int = SCHEMA_VERSION,
               encoding: VectorEncoding | None = None) -> dict[str, Any]:
    """``schema_version``: the template version the index was created from (fields added later
    do not change it: its analyzers stay those of that version)."""
    meta: dict[str, Any] = {"schema_version": schema_version, "engine": engine, "space_type": space_type()}
    meta.update((encoding or VectorEncoding()).meta())
    if model is not None:
        meta["model"] = model
    if dim is not None:
        meta["dim"] = dim
    return meta


def attribute_properties(schema: AttributeSchema | None) -> dict[str, Any]:
    """The mapping of each declared attribute, by name (the ``properties`` of ``attributes``)."""
    if schema is None:
        return {}
    return {name: dict(ATTRIBUTE_MAPPINGS[kind]) for name, kind in sorted(schema.types.items())}


def record_properties(schema: AttributeSchema | None) -> dict[str, Any]:
    """Every field a record document has (vectors aside), with the declared attributes filled in."""
    properties = template()["mappings"]["properties"]
    for name in VECTOR_FIELDS.values():
        del properties[name]
    properties["attributes"]["properties"] = attribute_properties(schema)
    return properties


def missing_properties(existing: dict[str, Any], schema: AttributeSchema | None) -> dict[str, Any]:
    """What ``PUT /<index>/_mapping`` must add to an index mapped as ``existing`` (its
    ``properties``) before records with the current fields and ``schema``'s attributes can be
    written to it: an index made by an older version, or before an attribute was declared.

    Adding fields is the one mapping change OpenSearch allows in place. A new text field takes the
    analyzer the index's ``caption`` has, since an analyzer cannot be added to an open index (an
    index made before the CJK-aware analyzer keeps ``english`` until a reindex). An attribute
    already mapped with another type cannot be changed: that is a :class:`ConfigurationError`.
    """
    wanted = record_properties(schema)
    caption_analyzer = existing.get("caption", {}).get("analyzer")
    missing: dict[str, Any] = {}
    for name, field in wanted.items():
        if name == "attributes" or name in existing:
            continue
        if field["type"] == "text" and caption_analyzer and name in TEXT_FIELDS:
            field = dict(field, analyzer=caption_analyzer)
        missing[name] = field
    mapped = existing.get("attributes")
    declared = wanted["attributes"]["properties"]
    if mapped is None:
        missing["attributes"] = wanted["attributes"]
        return missing
    mapped_props = mapped.get("properties", {})
    new = {}
    for name, field in declared.items():
        if name not in mapped_props:
            new[name] = field
        elif mapped_props[name].get("type") != field["type"]:
            raise ConfigurationError(
                f"attribute {name!r} is declared {field['type']} in IMAGESEARCH_ATTRIBUTES but the index maps it "
                f"as {mapped_props[name].get('type')}; a field's type cannot change in place: declare it under "
                "another name, or reindex into a new index")
    if new:
        missing["attributes"] = {"properties": new}
    return missing


def index_body(model: str | None, dim: int | None, engine: str, attributes: AttributeSchema | None = None,
               encoding: VectorEncoding | None = None, settings: IndexSettings | None = None,
               bulk_load: bool = False) -> dict[str, Any]:
    """The ``PUT /<index>`` body. Without a known ``dim`` the vector fields are left out; the
    store adds them with ``PUT /<index>/_mapping`` when the first vector shows the dimension
    (``index.knn`` is set at creation, which is all a later ``knn_vector`` field needs).
    ``attributes``: the declared attributes, mapped under the (strict) ``attributes`` object.
    ``encoding``: of the vector fields (recorded in ``_meta`` either way). ``settings``: shards,
    replicas and refresh interval; with ``bulk_load`` the index starts with :data:`BULK_LOAD`
    instead, for a reindex to fill before it restores the live values."""
    encoding = encoding or VectorEncoding()
    encoding.check(engine, space_type())
    settings = settings or IndexSettings()
    body = template()
    index = body["settings"]["index"]
    if settings.shards is not None:
        index["number_of_shards"] = settings.shards
    index.update(BULK_LOAD if bulk_load else settings.live())
    properties = body["mappings"]["properties"]
    properties["attributes"]["properties"] = attribute_properties(attributes)
    for name in VECTOR_FIELDS.values():
        del properties[name]
    if dim is not None:
        properties.update(vector_properties(dim, engine, encoding))
    elif engine not in ENGINES:
        raise ConfigurationError(f"unknown k-NN engine {engine!r}; expected one of {ENGINES}")
    body["mappings"]["_meta"] = index_meta(model, dim, engine, encoding=encoding)
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
