"""HTTP request and response models (pydantic); the API validates against them and returns them."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from imagesearch.limits import MAX_K
from imagesearch.vocab import CaptionStatus, Cutoff, FusionMethod, RankedList, SearchMode, Status

MAX_TEXT = 1000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# A caller's own id: an SKU, an album's photo id, a backfilled file's path or an S3 key. Those hold
# `/`, spaces and any script (Chinese file names), and S3 keys run to 1,024 bytes; only control
# characters are refused (the upload id digest joins its parts with one).
EXTERNAL_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,1024}$"


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


def _strip_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be blank")
    return value.strip()


# A text query: at most MAX_TEXT characters as sent (checked first), then stripped, and never blank.
QueryText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_strip_text)]


class ExampleIn(BaseModel):
    """One example of a query by examples: exactly one of ``text``, ``image`` (base64) or
    ``image_id``, with a weight."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _one_of(("text", "image", "image_id"))})

    text: QueryText | None = None
    image: str | None = Field(default=None, description="base64-encoded image bytes")
    image_id: str | None = Field(default=None, min_length=1, max_length=128)
    weight: float = Field(default=1.0, gt=0, le=MAX_WEIGHT, description="How much this example counts.")

    @model_validator(mode="after")
    def _one_source(self) -> ExampleIn:
        given = [name for name in ("text", "image", "image_id") if getattr(self, name) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError("an example needs exactly one of text, image or image_id" + got)
        return self

    def image_bytes(self) -> bytes | None:
        return _decode_image(self.image)


class TagsFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    any: list[str] | None = Field(default=None, min_length=1, max_length=100, description="At least one of these.")
    all: list[str] | None = Field(default=None, min_length=1, max_length=100, description="Every one of these.")


class RangeIn(BaseModel):
    """Bounds; dates as ISO 8601 (an offset is honoured, none means UTC) or epoch seconds."""

    model_config = ConfigDict(extra="forbid")

    gte: float | str | None = None
    gt: float | str | None = None
    lte: float | str | None = None
    lt: float | str | None = None


class AttributeCondition(BaseModel):
    """Exactly one of ``eq``, ``in``, ``range`` (numbers and dates) or ``exists``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eq: str | float | bool | None = None
    in_: list[str | float | bool] | None = Field(default=None, alias="in", min_length=1, max_length=100)
    range: RangeIn | None = None
    exists: bool | None = None


class FilterIn(BaseModel):
    """Every part must hold (and). Attributes are the ones IMAGESEARCH_ATTRIBUTES declares."""

    model_config = ConfigDict(extra="forbid")

    tags: TagsFilter | None = None
    created_at: RangeIn | None = None
    taken_at: RangeIn | None = Field(default=None, description="From EXIF; records without it never match.")
    attributes: dict[str, AttributeCondition] | None = None

    def as_json(self) -> dict:
        """The filter language's JSON form (``imagesearch.filtering.parse_where``)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class SearchRequest(BaseModel):
    """Exactly one query source: ``text``, ``image`` (base64), ``image_id`` or ``positive``
    (examples); ``negative`` examples are subtracted from any of them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _one_of(QUERY_SOURCES)})

    text: QueryText | None = None
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
    filter: FilterIn | None = Field(default=None, description="Tags, date ranges and attribute conditions, "
                                    "applied inside the nearest-neighbour search (k hits whenever k records match).")
    page_token: str | None = Field(default=None, max_length=512,
                                   description="`next_page_token` of the previous page of the same query.")

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
    title: str | None = None
    description: str | None = None
    attributes: dict[str, str | float | bool] = Field(
        default_factory=dict, description="Typed attributes (IMAGESEARCH_ATTRIBUTES): keyword strings, numbers, "
        "booleans, dates as epoch seconds.")
    taken_at: float | None = Field(default=None, description="When the photo was taken (EXIF DateTimeOriginal), "
                                                             "epoch seconds; null when the image does not say.")


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
    title: str | None = None
    attributes: dict[str, str | float | bool] = Field(default_factory=dict)
    created_at: float | None = None
    taken_at: float | None = None
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
    next_page_token: str | None = Field(default=None, description="Send it back with the same query for the next "
                                        "page; null on the last page (at most 1,000 hits deep).")


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


# --- editing, listing and batch uploads of images (GET/PATCH/DELETE /v1/images, POST /v1/images/batch) ---

MAX_LIST = 1000
MAX_BATCH_FILES = 100
AttributeValue = str | float | bool


def _no_default(schema: dict) -> None:
    """Leave "default: null" out of a field null is not valid for (absent means unchanged)."""
    schema.pop("default", None)


class ImagePatchIn(BaseModel):
    """What ``PATCH /v1/images/{id}`` changes; a field left out stays as it is. Nothing is re-embedded."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(
        default=None, pattern=NAME_PATTERN, json_schema_extra=_no_default,
        description="Move the record to this collection. Its id stays the same, so the record is still the one an "
                    "upload with its external_id into its first collection replaces (and `DELETE /v1/images?"
                    "collection=<first>&external_id=` removes); an upload with that external_id into the new "
                    "collection makes a different record.")
    tags: list[str] = Field(default=None, max_length=64, json_schema_extra=_no_default,
                            description="Replace the tags (at most 64 of at most 128 characters; [] removes all).")
    attributes: dict[str, AttributeValue | None] = Field(
        default=None, json_schema_extra=_no_default,
        description="Merged into the record's attributes; a null value removes that attribute. "
                    "Names and types are the declared ones (IMAGESEARCH_ATTRIBUTES).")
    title: str | None = Field(default=None, max_length=512, description="New title; null clears it.")
    description: str | None = Field(default=None, max_length=8192, description="New description; null clears it.")


class ImageListOut(BaseModel):
    records: list[ImageOut] = Field(description="Oldest first (created_at, then id).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class BatchItemIn(BaseModel):
    """One element of a batch upload's ``items`` array: what belongs to the file at the same position."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, pattern=EXTERNAL_ID_PATTERN,
                                    description="Your id for this file (as in a single upload).")
    title: str | None = Field(default=None, max_length=512)
    description: str | None = Field(default=None, max_length=8192)
    tags: list[str] | None = Field(default=None, max_length=64, description="Added to the batch's shared tags.")
    attributes: dict[str, AttributeValue] | None = Field(default=None, description="Declared attributes.")


class BatchResultOut(BaseModel):
    index: int = Field(description="Position of the file in the request (0-based).")
    filename: str
    status: int = Field(description="As the single upload would answer for this file: 202 accepted, 400 empty "
                                    "file, 413 too large, 415 not an image, 422 invalid item, 503 store or broker "
                                    "unavailable (with an id: stored and queued, its task is re-sent later).")
    id: str | None = Field(default=None, description="The image's id, when it was stored.")
    error: ErrorBody | None = None


class BatchOut(BaseModel):
    results: list[BatchResultOut] = Field(description="One per file, in request order.")
