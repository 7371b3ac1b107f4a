"""Query encoding, kNN per scheme, and fusion into one ranked list."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from imagesearch import imaging
from imagesearch.config import Settings
from imagesearch.errors import Conflict, NotFound, PermanentError
from imagesearch.models import ClipEncoder
from imagesearch.records import ImageRecord
from imagesearch.stores.base import Filters, Store
from imagesearch.text import normalize_text
from imagesearch.vocab import SearchMode, VectorField


class QueryError(PermanentError):
    """The query cannot be answered as asked."""


class UnknownImage(QueryError, NotFound):
    """A query by example names an image id that does not exist (for this tenant)."""


class NoVectorYet(QueryError, Conflict):
    """A query by example names an image the current model has not embedded yet."""


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    mode: SearchMode = SearchMode.IMAGE
    k: int = 10
    collection: str | None = None
    tenant: str | None = None
    min_score: float | None = None


@dataclass(frozen=True)
class Hit:
    record: ImageRecord
    score: float


@dataclass(frozen=True)
class Result:
    hits: list[Hit]
    took_ms: float
    encode_ms: float


def rrf(ranked_lists: list[list[str]], k: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: sum of 1/(k + rank) over the lists an id appears in."""
    scores: dict[str, float] = {}
    for ranked in ranked_lists:
        for rank, image_id in enumerate(ranked, start=1):
            scores[image_id] = scores.get(image_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class SearchService:
    def __init__(self, settings: Settings, store: Store, clip: ClipEncoder) -> None:
        self.settings = settings
        self.store = store
        self.clip = clip

    def _query_vector(self, query: Query) -> np.ndarray:
        if query.text is not None:
            return self.clip.encode_texts([query.text])[0]
        if query.image is not None:
            image = imaging.decode(query.image, min_side=self.settings.ingest.decode_min_side,
                                   max_pixels=self.settings.ingest.max_image_pixels)
            return self.clip.encode_images([image])[0]
        assert query.image_id is not None
        record = self.store.get(query.image_id)
        if record is None or (query.tenant is not None and record.tenant != query.tenant):
            raise UnknownImage(f"unknown image id {query.image_id!r}")
        stored = self.store.vector(query.image_id, VectorField.IMAGE)
        if stored is None or stored[1] != self.clip.identity:
            raise NoVectorYet(f"image {query.image_id!r} has no vector from the current model yet "
                             f"(status: {record.status})")
        return stored[0]

    def search(self, query: Query) -> Result:
        started = time.perf_counter()
        vector = self._query_vector(query)
        encoded = time.perf_counter()
        filters = Filters(tenant=query.tenant, collection=query.collection, exclude_id=query.image_id)
        model = self.clip.identity
        if query.mode == SearchMode.HYBRID:
            depth = max(query.k * 3, 50)
            lists = [
                [i for i, _ in self.store.knn(VectorField.IMAGE, vector, depth, model, filters, query.min_score)],
                [i for i, _ in self.store.knn(VectorField.CAPTION, vector, depth, model, filters, query.min_score)],
            ]
            if query.text:
                lists.append([i for i, _ in self.store.keyword(normalize_text(query.text), depth, filters)])
            scored = rrf(lists, self.settings.search.rrf_k)[: query.k]
        else:
            scored = self.store.knn(VectorField(query.mode), vector, query.k, model, filters, query.min_score)
        records = self.store.get_many(i for i, _ in scored)
        hits = [Hit(records[i], score) for i, score in scored if i in records]
        done = time.perf_counter()
        return Result(hits=hits, took_ms=(done - started) * 1000, encode_ms=(encoded - started) * 1000)
