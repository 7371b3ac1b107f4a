"""The vocabularies: every fixed set of names the service speaks, in one place.

They are ``StrEnum``s, so a member compares equal to its string, serialises as that string in
JSON, SQL and OpenSearch documents, and pydantic models accept either.
"""

from __future__ import annotations

from enum import StrEnum


class SearchMode(StrEnum):
    IMAGE = "image"      # query text -> CLIP image vectors
    CAPTION = "caption"  # query text -> CLIP text vectors of generated captions
    HYBRID = "hybrid"    # both kNN lists and BM25 on captions, titles and descriptions, fused


class Status(StrEnum):
    """Where a record stands in the embed stage."""

    QUEUED = "queued"
    INDEXED = "indexed"
    FAILED = "failed"


class CaptionStatus(StrEnum):
    """Where a record stands in the caption stage."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Stage(StrEnum):
    """A worker stage; each has its own queue and its own processes."""

    EMBED = "embed"
    CAPTION = "caption"


class VectorField(StrEnum):
    IMAGE = "image"
    CAPTION = "caption"


class Library(StrEnum):
    """The library that loads a CLIP model."""

    OPEN_CLIP = "open_clip"
    TRANSFORMERS = "transformers"


class SourceKind(StrEnum):
    """Where a CLIP model comes from (`IMAGESEARCH_CLIP_MODEL`'s forms, or a folder); the value
    prefixes the model identity."""

    REGISTRY = "open_clip"
    HF_HUB = "hf-hub"
    TRANSFORMERS = "transformers"
    DIRECTORY = "dir"


class ModelRole(StrEnum):
    """What a catalogue model is for."""

    CLIP = "clip"
    CAPTIONER = "captioner"


class RankedList(StrEnum):
    """The lists hybrid search fuses (each has a weight)."""

    IMAGE = "image"      # kNN on CLIP image vectors (cosine)
    CAPTION = "caption"  # kNN on CLIP text vectors of captions (cosine)
    KEYWORD = "keyword"  # BM25 on captions, titles and descriptions


class FusionMethod(StrEnum):
    RRF = "rrf"        # weighted reciprocal rank fusion: ranks only
    LINEAR = "linear"  # convex combination of normalised scores


class Cutoff(StrEnum):
    AUTO = "auto"  # cut at the first jump in the scores (needs no calibration)


class AttributeType(StrEnum):
    """The types an operator can declare for a record attribute (``IMAGESEARCH_ATTRIBUTES``)."""

    KEYWORD = "keyword"  # exact strings: brand, colour, SKU
    NUMBER = "number"    # price, rating
    BOOLEAN = "boolean"  # in stock
    DATE = "date"        # ISO 8601 or epoch seconds, kept as epoch seconds
