"""The store interface every backend implements (embedded SQLite+NumPy, OpenSearch)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imagesearch.errors import TransientError
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
        """Keyword (BM25) matches on captions."""

    def counts(self) -> dict[str, int]: ...

    def stale_queued(self, before: float, limit: int = 1000) -> list[str]:
        """Ids of records still ``queued`` whose last change is older than ``before`` (epoch
        seconds), oldest first: candidates for re-sending when their message was lost."""

    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]:
        """Every record (without vectors), for reconciliation and reindexing."""

    def close(self) -> None: ...
