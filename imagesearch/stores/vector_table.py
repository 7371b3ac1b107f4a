"""An in-memory matrix of unit vectors with exact cosine top-k and tenant/collection filters."""

from __future__ import annotations

import numpy as np

from imagesearch.stores.base import Filters

# Appends written to the matrix at once; bounds the memory they hold while a large load is applied.
_PENDING_BLOCK = 4096


def _larger(rows: int) -> int:
    # Grow by a quarter, not double: with one column per vector every page of the matrix is
    # resident (transparent huge pages span several of its rows), so spare capacity costs memory.
    return max(1024, rows + rows // 4)


class VectorTable:
    """Rows are appended; removals leave holes that are compacted once they outnumber live rows.

    Vectors are stored as columns (a dim x capacity matrix): scoring is then query @ columns, which
    streams long contiguous rows, and one thread runs it at memory bandwidth (8 ms for 100,000 x
    512 here, against 15.6 ms for one row per vector; bench/RESULTS.md, "Query"). Appends are
    buffered and written as one block before the next search, since a single column write touches
    `dim` cache lines.
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._matrix = np.zeros((dim, capacity), dtype=np.float32)
        # The last `_pending` rows' vectors, staged row by row until they are written as one block.
        self._staging = np.empty((0, dim), dtype=np.float32)
        self._pending = 0
        self._alive = np.zeros(capacity, dtype=bool)
        self._tenant = np.zeros(capacity, dtype=np.int32)
        self._collection = np.zeros(capacity, dtype=np.int32)
        self._ids: list[str | None] = []
        self._row: dict[str, int] = {}
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    @property
    def capacity(self) -> int:
        """Vectors the matrix holds before it grows (all of it is resident memory)."""
        return self._alive.shape[0]

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def add(self, image_id: str, vector: np.ndarray, tenant: str, collection: str) -> None:
        self.remove(image_id)
        n = len(self._ids)
        if n == self._alive.shape[0]:
            self._grow(_larger(n))
        if self._staging.shape[0] == 0:
            self._staging = np.empty((_PENDING_BLOCK, self.dim), dtype=np.float32)
        self._staging[self._pending] = vector
        self._pending += 1
        self._alive[n] = True
        self._tenant[n] = self._code(tenant)
        self._collection[n] = self._code(collection)
        self._ids.append(image_id)
        self._row[image_id] = n
        if self._pending == _PENDING_BLOCK:
            self._write_pending()

    def remove(self, image_id: str) -> None:
        row = self._row.pop(image_id, None)
        if row is None:
            return
        self._alive[row] = False
        self._ids[row] = None
        if len(self._ids) > 1024 and len(self._row) < len(self._ids) // 2:
            self._compact()

    def search(self, query: np.ndarray, k: int, filters: Filters, min_score: float | None) -> list[tuple[str, float]]:
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        self._write_pending()
        scores = query @ self._matrix[:, :n]
        mask = self._alive[:n].copy()
        for values, wanted in ((self._tenant, filters.tenant), (self._collection, filters.collection)):
            if wanted is not None:
                code = self._codes.get(wanted)
                if code is None:
                    return []
                mask &= values[:n] == code
        if filters.exclude_id is not None and filters.exclude_id in self._row:
            mask[self._row[filters.exclude_id]] = False
        if min_score is not None:
            mask &= scores >= min_score
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        if candidates.size > k:
            top = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[top]
        # Stable order for equal scores: by row, i.e. insertion order.
        order = candidates[np.lexsort((candidates, -scores[candidates]))]
        return [(self._ids[i], float(scores[i])) for i in order]  # type: ignore[misc]

    def _write_pending(self) -> None:
        if self._pending:
            start = len(self._ids) - self._pending
            self._matrix[:, start:len(self._ids)] = self._staging[: self._pending].T
            self._pending = 0

    def _grow(self, capacity: int) -> None:
        self._write_pending()
        matrix = np.zeros((self.dim, capacity), dtype=np.float32)
        matrix[:, : self._matrix.shape[1]] = self._matrix
        self._matrix = matrix
        for name in ("_alive", "_tenant", "_collection"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def _compact(self) -> None:
        self._write_pending()
        keep = np.flatnonzero(self._alive[: len(self._ids)])
        size = _larger(keep.size)
        matrix = np.zeros((self.dim, size), dtype=np.float32)
        matrix[:, : keep.size] = self._matrix[:, keep]
        self._matrix = matrix
        for name in ("_alive", "_tenant", "_collection"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: keep.size] = old[keep]
            setattr(self, name, new)
        self._ids = [self._ids[i] for i in keep]
        self._row = {image_id: i for i, image_id in enumerate(self._ids)}  # type: ignore[misc]
