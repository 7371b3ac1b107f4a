"""Query encoding, kNN per scheme, fusion, relevance, cutoffs and de-duplication.

A query is a weighted sum of examples in the query encoder's space: positive examples (texts,
uploaded images, indexed images' ids) added, negative ones subtracted, the sum normalised. One
plain text is the one-example case.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imagesearch import imaging
from imagesearch.config import Settings
from imagesearch.errors import Conflict, InvalidInput, NotFound, PermanentError
from imagesearch.filtering import Where
from imagesearch.fusion import Entry, FusionConfig, fuse
from imagesearch.limits import MAX_DEPTH, MAX_K
from imagesearch.models import ClipEncoder
from imagesearch.profiles import SearchProfile
from imagesearch.records import ImageRecord
from imagesearch.relevance import Calibration, auto_cut
from imagesearch.stores.base import Filters, Store
from imagesearch.text import normalize_text
from imagesearch.vocab import Cutoff, RankedList, SearchMode, VectorField


class QueryError(PermanentError):
    """The query cannot be answered as asked."""


class UnknownImage(QueryError, NotFound):
    """A query by example names an image id that does not exist (for this tenant)."""


class NoVectorYet(QueryError, Conflict):
    """A query by example names an image the current model has not embedded yet."""


class UnsupportedInMode(QueryError, InvalidInput):
    """An option the chosen mode cannot honour (``min_score`` in hybrid)."""


class CancelledOut(QueryError, InvalidInput):
    """The positive and negative examples sum to (almost) nothing."""


class PageTooDeep(QueryError, InvalidInput):
    """A page past ``MAX_DEPTH`` hits."""


class NotCalibrated(QueryError, Conflict):
    """``min_relevance`` was asked for a mode without a relevance calibration for these models."""


@dataclass(frozen=True)
class Example:
    """Exactly one of ``text``, ``image`` (bytes) or ``image_id``, with a weight."""

    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: bytes | None = None
    image_id: str | None = None
    positive: tuple[Example, ...] = ()
    negative: tuple[Example, ...] = ()
    mode: SearchMode = SearchMode.IMAGE
    k: int = 10
    collection: str | None = None
    tenant: str | None = None
    min_score: float | None = None
    min_relevance: float | None = None
    cutoff: Cutoff | None = None
    explain: bool = False
    dedup: bool = False
    where: Where = field(default_factory=Where)
    offset: int = 0  # hits skipped: the page's start (offset + k <= MAX_DEPTH)
    depth: int | None = None  # hybrid: the list depth the first page used (kept by the page token)

    def positives(self) -> tuple[Example, ...]:
        """``text``/``image``/``image_id`` (when given) as the first positive example."""
        if self.text is None and self.image is None and self.image_id is None:
            return self.positive
        return (Example(self.text, self.image, self.image_id), *self.positive)

    def keyword_text(self) -> str:
        """What the keyword list matches: the positive texts (negatives are not keyword-searchable)."""
        return " ".join(normalize_text(e.text) for e in self.positives() if e.text)


@dataclass(frozen=True)
class Hit:
    record: ImageRecord
    score: float
    relevance: float | None = None
    parts: Mapping[RankedList, Entry] | None = None  # with ``explain``: where the hit stands in each list
    duplicates: tuple[str, ...] = ()


@dataclass(frozen=True)
class CutoffReport:
    method: Cutoff
    kept: int
    of: int


@dataclass(frozen=True)
class Result:
    hits: list[Hit]
    took_ms: float
    encode_ms: float
    calibrated: bool = False
    cutoff: CutoffReport | None = None
    fusion: FusionConfig | None = None
    tuned: bool = False
    more: bool = False  # a next page exists (within MAX_DEPTH)
    depth: int | None = None  # hybrid: the list depth used, for the next page


@dataclass
class _Candidate:
    id: str
    score: float
    parts: Mapping[RankedList, Entry] | None = None
    relevance: float | None = None
    duplicates: list[str] = field(default_factory=list)


def rrf(ranked_lists: list[list[str]], k: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion with equal weights: sum of 1/(k + rank) over the lists an id is in."""
    scores: dict[str, float] = {}
    for ranked in ranked_lists:
        for rank, image_id in enumerate(ranked, start=1):
            scores[image_id] = scores.get(image_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


ProfileSource = Callable[[], SearchProfile | None]


class SearchService:
    def __init__(self, settings: Settings, store: Store, clip: ClipEncoder,
                 profile: ProfileSource = lambda: None) -> None:
        self.settings = settings
        self.store = store
        self.clip = clip
        self.profile = profile

    # -- the query vector --------------------------------------------------------------------

    def _example_vector(self, example: Example, tenant: str | None) -> np.ndarray:
        if example.text is not None:
            return self.clip.encode_texts([example.text])[0]
        if example.image is not None:
            image = imaging.decode(example.image, min_side=self.settings.ingest.decode_min_side,
                                   max_pixels=self.settings.ingest.max_image_pixels)
            return self.clip.encode_images([image])[0]
        assert example.image_id is not None
        return self.stored_vector(example.image_id, tenant)

    def stored_vector(self, image_id: str, tenant: str | None) -> np.ndarray:
        record = self.store.get(image_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise UnknownImage(f"unknown image id {image_id!r}")
        stored = self.store.vector(image_id, VectorField.IMAGE)
        if stored is None or stored[1] != self.clip.identity:
            raise NoVectorYet(f"image {image_id!r} has no vector from the current model yet "
                              f"(status: {record.status})")
        return stored[0]

    def query_vector(self, query: Query) -> np.ndarray:
        positives = query.positives()
        if not positives:
            raise QueryError("a query needs at least one positive example")
        terms = [sign * example.weight * np.asarray(self._example_vector(example, query.tenant), np.float64)
                 for sign, examples in ((1.0, positives), (-1.0, query.negative)) for example in examples]
        total = np.sum(terms, axis=0)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise CancelledOut("the positive and negative examples cancel out: nothing is left to search for")
        return (total / norm).astype(np.float32)

    # -- search ------------------------------------------------------------------------------

    def search(self, query: Query) -> Result:
        started = time.perf_counter()
        if query.mode == SearchMode.HYBRID and query.min_score is not None:
            raise UnsupportedInMode("min_score has no meaning in hybrid mode, whose fused scores are not cosines; "
                                    "use min_relevance (calibrated) or cutoff: \"auto\"")
        profile = self.profile() if self.settings.search.use_profiles else None
        calibration = profile.calibration.get(query.mode) if profile is not None else None
        if query.min_relevance is not None and calibration is None:
            raise NotCalibrated(f"no relevance calibration for {query.mode} mode with the current models; "
                                "fit one with `imagesearch eval --tune`")
        vector = self.query_vector(query)
        encoded = time.perf_counter()
        excluded = frozenset(e.image_id for e in (*query.positives(), *query.negative) if e.image_id)
        filters = Filters(tenant=query.tenant, collection=query.collection, exclude_ids=excluded, where=query.where)
        if query.offset + query.k > MAX_DEPTH:
            raise PageTooDeep(f"pages go {MAX_DEPTH} hits deep at most")
        end = query.offset + query.k
        fusion = depth = None
        # One more than the page needs tells whether there is a next page; de-duplication collapses
        # hits, so it needs candidates beyond that.
        wanted = max(end * 3, 50) if query.dedup else end + 1
        if query.mode == SearchMode.HYBRID:
            fusion = profile.fusion if profile is not None else self.settings.search.fusion()
            # Pages of one query fuse lists of one depth (the token keeps it): a deeper list
            # would change the fused order of what earlier pages showed.
            # The largest page is part of the first depth, so a page of any size, and the deepest
            # single page, fuse the same lists.
            depth = query.depth or max(fusion.depth, MAX_K, wanted if query.dedup else 0)
            candidates = self._hybrid(query, vector, filters, fusion, depth)
        else:
            field_ = VectorField(query.mode)
            found = self.store.knn(field_, vector, wanted, self.clip.identity, filters, query.min_score)
            name = RankedList(query.mode)
            candidates = [_Candidate(i, s, {name: Entry(rank, s)} if query.explain else None)
                          for rank, (i, s) in enumerate(found, start=1)]
        if calibration is not None:
            for candidate, relevance in zip(candidates, calibration.many([c.score for c in candidates])):
                candidate.relevance = relevance
        if query.min_relevance is not None:
            candidates = [c for c in candidates if c.relevance is not None and c.relevance >= query.min_relevance]
        if query.dedup:
            candidates = self._collapse(candidates)
        more = len(candidates) > end and end < MAX_DEPTH
        candidates = candidates[:end]
        cutoff = None
        if query.cutoff == Cutoff.AUTO:
            kept = auto_cut([c.score for c in candidates])
            cutoff = CutoffReport(Cutoff.AUTO, kept, len(candidates))
            more = more and kept == len(candidates)
            candidates = candidates[:kept]
        candidates = candidates[query.offset:]
        records = self.store.get_many(c.id for c in candidates)
        hits = [Hit(records[c.id], c.score, c.relevance, c.parts, tuple(c.duplicates))
                for c in candidates if c.id in records]
        done = time.perf_counter()
        return Result(hits=hits, took_ms=(done - started) * 1000, encode_ms=(encoded - started) * 1000,
                      calibrated=calibration is not None, cutoff=cutoff, fusion=fusion,
                      tuned=fusion is not None and profile is not None, more=more, depth=depth)

    def _hybrid(self, query: Query, vector: np.ndarray, filters: Filters, fusion: FusionConfig,
                depth: int) -> list[_Candidate]:
        # With explain every list is searched, so a hit's place in a zero-weight list shows too.
        names = list(RankedList) if query.explain else fusion.active()
        lists: dict[RankedList, Sequence[tuple[str, float]]] = {}
        model = self.clip.identity
        for name in names:
            if name == RankedList.KEYWORD:
                text = query.keyword_text()
                lists[name] = self.store.keyword(text, depth, filters) if text else []
            else:
                lists[name] = self.store.knn(VectorField(name), vector, depth, model, filters)
        return [_Candidate(f.id, f.score, f.parts if query.explain else None) for f in fuse(lists, fusion)]

    def _collapse(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Greedy, best first: a hit whose image vector is within the duplicate threshold of a hit
        already kept is folded into that hit's ``duplicates``."""
        threshold = self.settings.search.duplicate_threshold
        vectors = self.store.vectors([c.id for c in candidates], VectorField.IMAGE, self.clip.identity)
        kept: list[_Candidate] = []
        with_vectors: list[tuple[_Candidate, np.ndarray]] = []
        for candidate in candidates:
            vector = vectors.get(candidate.id)
            if vector is not None and with_vectors:
                cosines = np.stack([v for _, v in with_vectors]) @ vector
                best = int(np.argmax(cosines))
                if cosines[best] >= threshold:
                    with_vectors[best][0].duplicates.append(candidate.id)
                    continue
            kept.append(candidate)
            if vector is not None:
                with_vectors.append((candidate, vector))
        return kept

    # -- near-duplicates ---------------------------------------------------------------------

    def similar(self, image_id: str, tenant: str | None, k: int, threshold: float | None = None) -> list[Hit]:
        """Indexed images whose image vectors are within ``threshold`` (cosine) of this one's."""
        vector = self.stored_vector(image_id, tenant)
        limit = self.settings.search.duplicate_threshold if threshold is None else threshold
        found = self.store.knn(VectorField.IMAGE, vector, k, self.clip.identity,
                               Filters(tenant=tenant, exclude_ids=frozenset({image_id})), limit)
        records = self.store.get_many(i for i, _ in found)
        return [Hit(records[i], score) for i, score in found if i in records]


__all__ = ["Calibration", "CancelledOut", "Example", "Hit", "NoVectorYet", "NotCalibrated", "PageTooDeep", "Query",
           "QueryError", "Result", "SearchService", "UnknownImage", "UnsupportedInMode", "rrf"]
