"""Queries over the read alias: kNN and BM25 bodies, their hits, counts, and stale queued records.
Why the filter sits inside the ``knn`` clause and how scores become cosines: ARCHITECTURE.md,
"OpenSearch store", Search and Index layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from opensearchpy import exceptions as os_errors

from imagesearch.filtering import Range, Where
from imagesearch.records import ImageRecord, VectorField
from imagesearch.stores.base import Filters, Page, StoreUnavailable
from imagesearch.stores.opensearch.lifecycle import IndexLifecycle
from imagesearch.stores.opensearch.mapping import (
    MODEL_FIELDS,
    TEXT_FIELDS,
    VECTOR_FIELDS,
    json_vector,
    score_to_cosine,
)
from imagesearch.stores.opensearch.records import VECTOR_SOURCE, attribute_value, epoch_ms, ms_bound, to_record
from imagesearch.vocab import AttributeType, CaptionStatus, Status

_WORD = re.compile(r"\w+", re.UNICODE)
_MGET_CHUNK = 500  # ids per mget, as in get_many


class SearchOperations(IndexLifecycle):
    """The search part of :class:`~imagesearch.stores.opensearch.OpenSearchStore`."""

    _space: str  # the vector space type, which decides how a score maps back to a cosine

    def vector(self, image_id: str, field: VectorField) -> tuple[np.ndarray, str] | None:
        vector_field, model_field = VECTOR_FIELDS[field], MODEL_FIELDS[field]
        try:
            doc = self.retrying.call(self.client.get, index=self._read, id=image_id,
                                     _source_includes=[vector_field, model_field])
        except os_errors.NotFoundError:
            return None
        source = doc.get("_source") or {}
        if not doc.get("found") or source.get(vector_field) is None:
            return None
        return np.asarray(source[vector_field], dtype=np.float32), source.get(model_field)

    def vectors(self, ids: Iterable[str], field: VectorField, model: str) -> dict[str, np.ndarray]:
        """One ``mget`` per 500 ids on the read alias, fetching only the vector, its model and the
        status: like knn (and the embedded store), a record that is not indexed has no vector to offer."""
        ids = list(dict.fromkeys(ids))
        vector_field, model_field = VECTOR_FIELDS[field], MODEL_FIELDS[field]
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), _MGET_CHUNK):
            try:
                resp = self.retrying.call(self.client.mget, index=self._read,
                                          body={"ids": ids[start:start + _MGET_CHUNK]},
                                          _source_includes=[vector_field, model_field, "status"])
            except os_errors.NotFoundError:
                return out
            for doc in resp["docs"]:
                if "error" in doc:
                    raise StoreUnavailable(f"reading the vector of {doc.get('_id')} failed: {doc['error']}")
                source = doc.get("_source") or {}
                if (doc.get("found") and source.get(vector_field) is not None and source.get(model_field) == model
                        and source.get("status") == Status.INDEXED):
                    out[doc["_id"]] = np.asarray(source[vector_field], dtype=np.float32)
        return out

    def knn(self, field: VectorField, query: np.ndarray, k: int, model: str, filters: Filters,
            min_score: float | None = None) -> list[tuple[str, float]]:
        """Approximate (HNSW) neighbours; the filter sits inside the ``knn`` clause, so it is
        applied while searching (efficient filtering) and ``k`` results survive it."""
        if k <= 0:
            return []
        vector_field = VECTOR_FIELDS[field]
        body = {
            "size": k,
            "_source": False,
            "query": {"knn": {vector_field: {
                "vector": json_vector(query), "k": k,
                "filter": _filter(filters, {"term": {MODEL_FIELDS[field]: model}}),
            }}},
        }
        try:
            hits = self._search(body)
        except os_errors.RequestError:
            state = self._load_state()
            if state is not None and state.dim is None:
                return []  # no vector has been written yet: the field does not exist
            raise
        out = []
        for hit in hits:
            cosine = score_to_cosine(float(hit["_score"]), self._space)
            if min_score is None or cosine >= min_score:
                out.append((hit["_id"], cosine))
        return out

    def keyword(self, text: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        """BM25 over caption, title and description (the index's CJK-aware analyzer, the same for
        the query), same filters as knn. ``most_fields`` sums the fields' scores, as the embedded
        store's FTS5 ``bm25()`` sums its columns'."""
        if k <= 0 or not _WORD.search(text):
            return []
        query = _filter(filters)
        query["bool"]["must"] = [{"multi_match": {"query": text, "fields": list(TEXT_FIELDS), "type": "most_fields"}}]
        hits = self._search({"size": k, "_source": False, "query": query})
        return [(hit["_id"], float(hit["_score"])) for hit in hits]

    def list_records(self, filters: Filters, status: str | None, after: tuple[float, str] | None,
                     limit: int) -> Page:
        """One search sorted by ``created_at`` then ``id`` (unique, so the order is total), resumed
        with ``search_after``: no depth limit, and no scroll context to keep. One record more than
        ``limit`` is asked for, to tell whether another page follows."""
        if limit <= 0:
            return Page([], None)
        body: dict[str, Any] = {
            "size": limit + 1,
            "_source": {"excludes": VECTOR_SOURCE},
            "query": _filter(filters, status=status),
            # Field names alone sort ascending. (The spec's oneOf for sort also matches its open
            # SortOptions with ``{"created_at": {"order": "asc"}}``, so it rejects that form.)
            "sort": ["created_at", "id"],
            "track_total_hits": False,
        }
        if after is not None:
            body["search_after"] = [epoch_ms(after[0]), after[1]]
        hits = self._search(body)
        records: list[ImageRecord] = [to_record(hit["_source"], self.attributes) for hit in hits[:limit]]
        more = len(hits) > limit
        return Page(records, (records[-1].created_at, records[-1].id) if more else None)

    def counts(self) -> dict[str, int]:
        out = {str(status): 0 for status in Status} | {"caption_pending": 0}
        body = {
            "size": 0,
            "aggs": {
                "status": {"terms": {"field": "status", "size": 10}},
                "caption_pending": {"filter": {"bool": {"filter": [
                    {"term": {"status": Status.INDEXED}}, {"term": {"caption_status": CaptionStatus.PENDING}}]}}},
            },
        }
        try:
            resp = self.retrying.call(self.client.search, index=self._read, body=body)
        except os_errors.NotFoundError:
            return out
        for bucket in resp["aggregations"]["status"]["buckets"]:
            out[bucket["key"]] = bucket["doc_count"]
        out["caption_pending"] = resp["aggregations"]["caption_pending"]["doc_count"]
        return out

    def stale_queued(self, before: float, limit: int = 1000) -> list[str]:
        body = {
            "size": limit,
            "_source": False,
            "query": {"bool": {"filter": [{"term": {"status": Status.QUEUED}},
                                          {"range": {"updated_at": {"lt": int(before * 1000)}}}]}},
            "sort": ["updated_at"],  # ascending: oldest first
        }
        try:
            resp = self.retrying.call(self.client.search, index=self._read, body=body)
        except os_errors.NotFoundError:
            return []
        return [hit["_id"] for hit in resp["hits"]["hits"]]

    def _search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            resp = self.retrying.call(self.client.search, index=self._read, body=body,
                                      allow_partial_search_results=False)
        except os_errors.NotFoundError:
            return []
        return resp["hits"]["hits"]


def _filter(filters: Filters, *clauses: dict[str, Any], status: str | None = Status.INDEXED) -> dict[str, Any]:
    """The ``bool`` filter every search applies: the status (indexed, for searches), the caller's
    tenant and collection, the filter language (:func:`where_clauses`), and ``exclude_ids`` left
    out (one ``terms`` clause). Filter context only: nothing here changes a score."""
    terms = [{"term": {"status": status}}] if status is not None else []
    terms += clauses
    for name, value in (("tenant", filters.tenant), ("collection", filters.collection)):
        if value is not None:
            terms.append({"term": {name: value}})
    where_filter, where_not = where_clauses(filters.where)
    terms += where_filter
    must_not = list(where_not)
    if filters.exclude_ids:
        must_not.append({"terms": {"id": sorted(filters.exclude_ids)}})
    query: dict[str, Any] = {"filter": terms}
    if must_not:
        query["must_not"] = must_not
    return {"bool": query}


def where_clauses(where: Where) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The filter language as ``filter`` and ``must_not`` clauses, meaning what
    :meth:`~imagesearch.filtering.Where.matches` means (dates in epoch ms, as stored)."""
    keep: list[dict[str, Any]] = []
    drop: list[dict[str, Any]] = []
    if where.tags_any:
        keep.append({"terms": {"tags": sorted(where.tags_any)}})
    keep += [{"term": {"tags": tag}} for tag in sorted(where.tags_all)]
    for name, bounds in (("created_at", where.created_at), ("taken_at", where.taken_at)):
        if bounds is not None:
            keep.append({"range": {name: _date_range(bounds)}})
    for condition in where.attributes:
        name = f"attributes.{condition.name}"
        if condition.op == "exists":
            (keep if condition.exists else drop).append({"exists": {"field": name}})
        elif condition.op == "range":
            assert condition.range is not None
            limits = (_date_range(condition.range) if condition.kind == AttributeType.DATE
                      else condition.range.bounds())
            keep.append({"range": {name: limits}})
        else:  # "in" (``eq`` is ``in`` with one value)
            keep.append({"terms": {name: [attribute_value(condition.kind, v) for v in condition.values]}})
    return keep, drop


def _date_range(bounds: Range) -> dict[str, int]:
    return {op: ms_bound(op, seconds) for op, seconds in bounds.bounds().items()}
