"""HTTP request and response models (pydantic); the API validates against them and returns them."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imagesearch.vocab import CaptionStatus, Cutoff, FusionMethod, RankedList, SearchMode, Status

MAX_K = 100
MAX_TEXT = 1000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


MAX_EXAMPLES = 8
MAX_WEIGHT = 10.0
QUERY_SOURCES = ("text", "image", "image_id", "positive")


def _one_of(names: tuple[str, ...]) -> list[dict]:
    """"Exactly one source" as JSON Schema: each alternative requires one field to be present and
    not null (a null field counts as absent, as the validators treat it)."""
    kinds = {"positive": {"type": "array"}}
    return [{"required": [name], "properties": {name: kinds.get(name, {"type": "string"})}} for name in names]


def _decode_image(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image is not valid base64: {exc}") from exc


def _strip_text(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("text must not be blank")
    return value.strip() if value is not None else None


class ExampleIn(BaseModel):
    """One example of a query by examples: exactly one of ``text``, ``image`` (base64) or
    ``image_id``, with a weight."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _one_of(("text", "image", "image_id"))})

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    image: str | None = Field(default=None, description="base64-encoded image bytes")
    image_id: str | None = Field(default=None, min_length=1, max_length=128)
    weight: float = Field(default=1.0, gt=0, le=MAX_WEIGHT, description="How much this example counts.")

    _text = field_validator("text")(classmethod(lambda cls, v: _strip_text(v)))

    @model_validator(mode="after")
    def _one_source(self) -> ExampleIn:
        given = [name for name in ("text", "image", "image_id") if getattr(self, name) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError("an example needs exactly one of text, image or image_id" + got)
        return self

    def image_bytes(self) -> bytes | None:
        return _decode_image(self.image)


class SearchRequest(BaseModel):
    """Exactly one query source: ``text``, ``image`` (base64), ``image_id`` or ``positive``
    (examples); ``negative`` examples are subtracted from any of them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _one_of(QUERY_SOURCES)})

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    image: str | None = Field(default=None, description="base64-encoded image bytes")
    image_id: str | None = Field(default=None, min_length=1, max_length=128)
    positive: list[ExampleIn] | None = Field(
        default=None, min_length=1, max_length=MAX_EXAMPLES,
        description="Examples to search for: their weighted vectors are added (in the query encoder's space).")
    negative: list[ExampleIn] = Field(
        default_factory=list, max_length=MAX_EXAMPLES,
        description="Examples to search away from: their weighted vectors are subtracted.")
    mode: SearchMode = SearchMode.IMAGE
    k: int = Field(default=10, ge=1, le=MAX_K)
    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    min_score: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="Drop hits whose cosine is below this (image and caption modes; 422 in hybrid).")
    min_relevance: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Drop hits whose calibrated relevance is below this (409 without a calibration).")
    cutoff: Cutoff | None = Field(default=None, description="`auto`: cut the list at the first jump in scores.")
    explain: bool = Field(default=False, description="Give each hit its rank and raw score in each list.")
    dedup: bool = Field(default=False, description="Collapse near-duplicate hits onto the best one.")

    _text = field_validator("text")(classmethod(lambda cls, v: _strip_text(v)))

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in QUERY_SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError("give exactly one of text, image, image_id or positive" + got)
        return self

    def image_bytes(self) -> bytes | None:
        return _decode_image(self.image)


class AcceptedOut(BaseModel):
    id: str
    status: Status


class ImageOut(BaseModel):
    id: str
    status: Status
    caption: str | None
    caption_status: CaptionStatus
    error: str | None
    collection: str
    external_id: str | None
    tags: list[str]
    source: str
    width: int | None
    height: int | None
    thumbnail_url: str | None
    image_model: str | None
    caption_model: str | None
    created_at: float
    updated_at: float


class ListEntry(BaseModel):
    rank: int = Field(description="1-based rank in this list.")
    score: float = Field(description="The list's raw score: cosine for image and caption, BM25 for keyword.")


class HitExplain(BaseModel):
    fused: float = Field(description="The hit's score after fusion (its `score`).")
    lists: dict[RankedList, ListEntry | None] = Field(
        description="Where the hit stands in each list searched (null: not within the fusion depth).")


class SearchHit(BaseModel):
    id: str
    score: float = Field(description="Cosine in image and caption modes; the fused score in hybrid "
                                     "(linear: weighted sum of normalised scores in [0, 1]; rrf: weighted RRF sum).")
    relevance: float | None = Field(
        default=None, ge=0, le=1,
        description="Calibrated probability that the hit is relevant (null: no calibration for this mode and models).")
    caption: str | None
    source: str
    collection: str
    external_id: str | None
    tags: list[str]
    thumbnail_url: str | None
    duplicates: list[str] = Field(default_factory=list, description="Near-duplicates collapsed onto this hit (dedup).")
    explain: HitExplain | None = None


class CutoffOut(BaseModel):
    method: Cutoff
    kept: int
    of: int


class FusionOut(BaseModel):
    method: FusionMethod
    weights: dict[RankedList, float]
    depth: int
    rrf_k: int
    tuned: bool = Field(description="True when the fusion comes from a profile tuned for these models.")


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    mode: SearchMode
    model: str
    took_ms: float
    calibrated: bool = Field(default=False, description="Whether `relevance` is given (a calibration exists).")
    cutoff: CutoffOut | None = None
    fusion: FusionOut | None = Field(default=None, description="The fusion applied (hybrid mode only).")


class SimilarOut(BaseModel):
    id: str
    threshold: float
    hits: list[SearchHit]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
