"""An in-memory matrix of unit vectors with exact cosine top-k and tenant/collection filters."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from imagesearch.stores.base import Filters

# Vectors per block of columns (32 MiB at 512 dims). Only the last block grows, so growing copies
# at most one block and spare capacity never exceeds one block.
_BLOCK = 16384
_FIRST_BLOCK = 1024
# Appends staged before they are written as columns; bounds what a large load holds meanwhile.
_PENDING_BLOCK = 4096


class VectorTable:
    """Rows are appended; removals leave holes that are compacted once they outnumber live rows.

    Vectors are stored as columns (blocks of dim x _BLOCK): scoring is then query @ columns, which
    streams long contiguous rows, and one thread runs it at memory bandwidth (8 ms for 100,000 x
    512 here, against 15.6 ms for one row per vector; bench/RESULTS.md, "Query"). Appends are
    staged and written as one block before the next search, since a single column write touches
    `dim` cache lines.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._blocks: list[np.ndarray] = []  # all but the last are _BLOCK columns wide
        # The last `_pending` rows' vectors, staged row by row until they are written as columns.
        self._staging = np.empty((0, dim), dtype=np.float32)
        self._pending = 0
        self._alive = np.zeros(_FIRST_BLOCK, dtype=bool)
        self._tenant = np.zeros(_FIRST_BLOCK, dtype=np.int32)
        self._collection = np.zeros(_FIRST_BLOCK, dtype=np.int32)
        self._ids: list[str | None] = []
        self._row: dict[str, int] = {}
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    @property
    def capacity(self) -> int:
        """Vectors the allocated columns hold before another block is needed."""
        return sum(block.shape[1] for block in self._blocks)

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def add(self, image_id: str, vector: np.ndarray, tenant: str, collection: str) -> None:
        self.remove(image_id)
        n = len(self._ids)
        if n == self._alive.shape[0]:
            self._grow_rows(2 * n)
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

    def get(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The vectors of those of ``ids`` held here, as copies (the columns move on compaction)."""
        wanted = {i: self._row[i] for i in dict.fromkeys(ids) if i in self._row}
        if not wanted:
            return {}
        self._write_pending()
        rows = np.fromiter(wanted.values(), dtype=np.intp, count=len(wanted))
        order = np.argsort(rows, kind="stable")
        # One gather for all of them, then rows of one contiguous (n, dim) array.
        vectors = np.empty((rows.size, self.dim), dtype=np.float32)
        vectors[order] = self._gather(self._blocks, rows[order]).T
        return dict(zip(wanted, vectors, strict=True))

    def search(self, query: np.ndarray, k: int, filters: Filters, min_score: float | None,
               allowed: Collection[str] | None = None) -> list[tuple[str, float]]:
        """Exact top ``k``; ``allowed``: the only ids that may be hits (the filter language's
        pre-filter mask, computed by the store), None for any."""
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        scores = self._scores(np.asarray(query, dtype=np.float32), n)
        mask = self._alive[:n].copy()
        for values, wanted in ((self._tenant, filters.tenant), (self._collection, filters.collection)):
            if wanted is not None:
                code = self._codes.get(wanted)
                if code is None:
                    return []
                mask &= values[:n] == code
        excluded = [self._row[i] for i in filters.exclude_ids if i in self._row]
        if excluded:
            mask[excluded] = False
        if min_score is not None:
            mask &= scores >= min_score
        if allowed is not None:
            admitted = np.zeros(n, dtype=bool)
            rows = [row for i in allowed if (row := self._row.get(i)) is not None]
            admitted[rows] = True
            mask &= admitted
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        if candidates.size > k:
            top = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[top]
        # Stable order for equal scores: by row, i.e. insertion order.
        order = candidates[np.lexsort((candidates, -scores[candidates]))]
        return [(self._ids[i], float(scores[i])) for i in order]  # type: ignore[misc]

    def _scores(self, query: np.ndarray, n: int) -> np.ndarray:
        self._write_pending()
        scores = np.empty(n, dtype=np.float32)
        for index, block in enumerate(self._blocks):
            start = index * _BLOCK
            if start >= n:
                break
            stop = min(n, start + block.shape[1])
            np.matmul(query, block[:, : stop - start], out=scores[start:stop])
        return scores

    def _write_pending(self) -> None:
        if self._pending:
            start = len(self._ids) - self._pending
            self._write_columns(start, self._staging[: self._pending].T)
            self._pending = 0

    def _write_columns(self, start: int, columns: np.ndarray) -> None:
        end = start + columns.shape[1]
        self._reserve_columns(end)
        position = start
        while position < end:
            index, offset = divmod(position, _BLOCK)
            block = self._blocks[index]
            take = min(end - position, block.shape[1] - offset)
            block[:, offset:offset + take] = columns[:, position - start:position - start + take]
            position += take

    def _reserve_columns(self, end: int) -> None:
        while self.capacity < end:
            last = self._blocks[-1] if self._blocks else None
            if last is not None and last.shape[1] < _BLOCK:
                needed = end - (self.capacity - last.shape[1])
                grown = np.empty((self.dim, min(_BLOCK, max(2 * last.shape[1], needed))), dtype=np.float32)
                grown[:, : last.shape[1]] = last
                self._blocks[-1] = grown
            else:
                needed = end - self.capacity
                self._blocks.append(np.empty((self.dim, min(_BLOCK, max(_FIRST_BLOCK, needed))), dtype=np.float32))

    def _gather(self, blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
        """The columns of `rows` (ascending) from `blocks`, in that order."""
        parts = []
        for index, block in enumerate(blocks):
            start = index * _BLOCK
            lo, hi = np.searchsorted(rows, (start, start + block.shape[1]))
            if hi > lo:
                parts.append(block[:, rows[lo:hi] - start])
        return np.concatenate(parts, axis=1) if parts else np.empty((self.dim, 0), dtype=np.float32)

    def _grow_rows(self, capacity: int) -> None:
        for name in ("_alive", "_tenant", "_collection"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def _compact(self) -> None:
        self._write_pending()
        keep = np.flatnonzero(self._alive[: len(self._ids)])
        old_blocks, self._blocks = self._blocks, []
        for start in range(0, keep.size, _BLOCK):
            self._write_columns(start, self._gather(old_blocks, keep[start:start + _BLOCK]))
        size = max(_FIRST_BLOCK, 2 * keep.size)
        for name in ("_alive", "_tenant", "_collection"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: keep.size] = old[keep]
            setattr(self, name, new)
        self._ids = [self._ids[i] for i in keep]
        self._row = {image_id: i for i, image_id in enumerate(self._ids)}  # type: ignore[misc]
