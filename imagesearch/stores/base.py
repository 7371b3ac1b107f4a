"""The store interface every backend implements (embedded SQLite+NumPy, OpenSearch)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from imagesearch.errors import TransientError
from imagesearch.filtering import Where
from imagesearch.records import ImageRecord, VectorField


class StoreUnavailable(TransientError):
    """The store cannot be reached right now. Transient: the operation may be retried."""


@dataclass(frozen=True, kw_only=True)
class ImageVectorUpdate:
    id: str
    content_hash: str  # only the version of the image that was embedded is updated
    vector: np.ndarray
    model: str
    thumb_key: str
    width: int
    height: int
    taken_at: float | None = None  # from EXIF DateTimeOriginal, when the image has one


@dataclass(frozen=True, kw_only=True)
class CaptionUpdate:
    id: str
    content_hash: str
    caption: str
    vector: np.ndarray
    caption_model: str
    text_model: str


@dataclass(frozen=True)
class Filters:
    tenant: str | None = None
    collection: str | None = None
    # Ids left out of the results: the query-by-example images, which would otherwise match themselves.
    exclude_ids: frozenset[str] = frozenset()
    # The filter language (tags, dates, attributes): applied inside kNN, so k hits survive it.
    where: Where = field(default_factory=Where)


@dataclass(frozen=True, kw_only=True)
class RecordPatch:
    """What ``PATCH /v1/images/<id>`` may change without re-embedding; None leaves a field as it is.
    ``attributes`` replaces the whole set (already merged and typed by the caller)."""

    collection: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, str | float | bool] | None = None
    title: str | None = None
    description: str | None = None
    clear: frozenset[str] = frozenset()  # "title" / "description" set to null


@dataclass(frozen=True)
class Page:
    """Records sorted by (created_at, id), and the cursor after the last one (None: no more)."""

    records: list[ImageRecord]
    after: tuple[float, str] | None


class Store(Protocol):
    def put(self, record: ImageRecord) -> None:
        """Insert or replace a record as queued; any earlier vectors for that id are dropped."""

    def get(self, image_id: str) -> ImageRecord | None: ...

    def get_many(self, ids: Iterable[str]) -> dict[str, ImageRecord]: ...

    def delete(self, image_id: str) -> ImageRecord | None:
        """Remove the record; returns what was removed (for blob cleanup), None if unknown."""

    def set_image_vectors(self, updates: list[ImageVectorUpdate]) -> list[str]:
        """Store vectors and mark records indexed; returns the ids updated (deleted or
        re-uploaded records are left alone)."""

    def set_captions(self, updates: list[CaptionUpdate]) -> list[str]: ...

    def set_failed(self, image_id: str, content_hash: str, stage: str, error: str) -> None: ...

    def vector(self, image_id: str, field: VectorField) -> tuple[np.ndarray, str] | None:
        """The stored vector and the model identity that produced it."""

    def vectors(self, ids: Iterable[str], field: VectorField, model: str) -> dict[str, np.ndarray]:
        """The stored ``field`` vectors of ``ids`` made by ``model``, by id, in one cheap read (for
        de-duplicating results and near-duplicate search; meant for about a hundred ids). Ids that are
        unknown, deleted, not embedded yet, or whose vector another model made are absent."""

    def knn(self, field: VectorField, query: np.ndarray, k: int, model: str, filters: Filters,
            min_score: float | None = None) -> list[tuple[str, float]]:
        """Exact or approximate cosine neighbours among vectors made by ``model`` only."""

    def keyword(self, text: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        """Keyword (BM25) matches on captions, titles and descriptions (CJK-aware analysis)."""

    def patch(self, image_id: str, changes: RecordPatch) -> ImageRecord | None:
        """Change metadata in place (vectors and status untouched); None when the record is gone.
        A record deleted meanwhile is never recreated."""

    def list_records(self, filters: Filters, status: str | None, after: tuple[float, str] | None,
                     limit: int) -> Page:
        """Records matching ``filters`` (and ``status``), by ``created_at`` then id, after ``after``."""

    def counts(self) -> dict[str, int]: ...

    def stale_queued(self, before: float, limit: int = 1000) -> list[str]:
        """Ids of records still ``queued`` whose last change is older than ``before`` (epoch
        seconds), oldest first: candidates for re-sending when their message was lost."""

    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]:
        """Every record (without vectors), for reconciliation and reindexing."""

    def close(self) -> None: ...
