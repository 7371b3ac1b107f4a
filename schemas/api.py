"""HTTP request and response models (pydantic); the API validates against them and returns them."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imagesearch.vocab import CaptionStatus, SearchMode, Status

MAX_K = 100
MAX_TEXT = 1000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``image`` (base64) or ``image_id``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, max_length=MAX_TEXT)
    image: str | None = Field(default=None, description="base64-encoded image bytes")
    image_id: str | None = Field(default=None, max_length=128)
    mode: SearchMode = SearchMode.IMAGE
    k: int = Field(default=10, ge=1, le=MAX_K)
    collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text must not be blank")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in ("text", "image", "image_id") if getattr(self, name) is not None]
        if len(given) != 1:
            got = f" (got {', '.join(given)})" if given else ""
            raise ValueError("give exactly one of text, image or image_id" + got)
        return self

    def image_bytes(self) -> bytes | None:
        if self.image is None:
            return None
        try:
            return base64.b64decode(self.image, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image is not valid base64: {exc}") from exc


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


class SearchHit(BaseModel):
    id: str
    score: float
    caption: str | None
    source: str
    collection: str
    external_id: str | None
    tags: list[str]
    thumbnail_url: str | None


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    mode: SearchMode
    model: str
    took_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
