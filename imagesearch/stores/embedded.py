"""The default store: SQLite (WAL) for records, NumPy for exact cosine kNN, FTS5 for keywords.

Several worker and API processes open the same file. SQLite serialises writers; every write
transaction bumps a sequence number and stamps the rows it touches (or a tombstone for deletes),
so each process refreshes its in-memory vector matrices incrementally before a search instead of
reloading everything.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from imagesearch.memtrim import release_freed_memory
from imagesearch.records import ImageRecord, VectorField
from imagesearch.stores.base import CaptionUpdate, Filters, ImageVectorUpdate, Page, RecordPatch, StoreUnavailable
from imagesearch.stores.sql_filters import filters_sql
from imagesearch.stores.vector_table import VectorTable
from imagesearch.text import cjk_bigrams
from imagesearch.vocab import CaptionStatus, Status

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    external_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    caption TEXT,
    caption_status TEXT NOT NULL,
    thumb_key TEXT,
    width INTEGER,
    height INTEGER,
    image_model TEXT,
    caption_model TEXT,
    text_model TEXT,
    image_vec BLOB,
    caption_vec BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    seq INTEGER NOT NULL,
    title TEXT,
    description TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    taken_at REAL
);
CREATE INDEX IF NOT EXISTS images_seq ON images(seq);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE INDEX IF NOT EXISTS images_created ON images(created_at, id);
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones(seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('seq', 0);
CREATE VIRTUAL TABLE IF NOT EXISTS texts_fts USING fts5(id UNINDEXED, caption, title, description,
                                                         tokenize='porter unicode61');
"""
# Columns later versions added, with their definitions: a store file an older version wrote gets
# them on open (ALTER TABLE ADD COLUMN is cheap: it rewrites no rows).
_ADDED_COLUMNS = (("title", "TEXT"), ("description", "TEXT"), ("attributes", "TEXT NOT NULL DEFAULT '{}'"),
                  ("taken_at", "REAL"))

_RECORD_COLUMNS = (
    "id", "tenant", "collection", "status", "source", "blob_key", "content_hash", "external_id", "tags",
    "error", "caption", "caption_status", "thumb_key", "width", "height", "image_model", "caption_model",
    "text_model", "created_at", "updated_at", "title", "description", "attributes", "taken_at",
)
_SELECT_RECORD = f"SELECT {', '.join(_RECORD_COLUMNS)} FROM images"
_WORD = re.compile(r"\w+", re.UNICODE)
# Rows applied in one refresh past which freed heap memory is handed back (a process's first load).
_LARGE_REFRESH = 10_000


class EmbeddedStore:
    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._index_lock = threading.Lock()
        self._tables: dict[tuple[VectorField, str], VectorTable] = {}
        self._where: dict[str, tuple[VectorField, str]] = {}  # "field:id" -> table key
        self._seen_seq = 0
        try:
            # Creating or upgrading the schema takes the write lock; opening a current store must not.
            if not self._schema_is_current():
                self._upgrade_schema()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot create the schema in {self.path}: {exc}") from exc

    def _schema_is_current(self) -> bool:
        db = self._conn()
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'texts_fts'").fetchone():
            return False
        columns = {row[1] for row in db.execute("PRAGMA table_info(images)")}
        return all(name in columns for name, _ in _ADDED_COLUMNS)

    def _upgrade_schema(self) -> None:
        """Create the schema, or bring an older store file up to it (in one write transaction, so
        a second process opening the file at the same moment waits and then finds it done)."""
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'images'").fetchone()
            if exists:
                columns = {row[1] for row in db.execute("PRAGMA table_info(images)")}
                for name, definition in _ADDED_COLUMNS:
                    if name not in columns:
                        db.execute(f"ALTER TABLE images ADD COLUMN {name} {definition}")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'captions_fts'").fetchone():
                # The caption-only index of older versions: its text was not CJK-aware.
                db.execute("DROP TABLE captions_fts")
                for (image_id,) in db.execute("SELECT id FROM images").fetchall():
                    _index_texts(db, image_id)

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked past the busy timeout
            raise StoreUnavailable(str(exc)) from exc
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        return db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- records -------------------------------------------------------------------------------

    def put(self, record: ImageRecord) -> None:
        now = time.time()
        with self._write() as db:
            seq = self._next_seq(db)
            db.execute("DELETE FROM tombstones WHERE id = ?", (record.id,))
            db.execute(
                f"INSERT OR REPLACE INTO images ({', '.join(_RECORD_COLUMNS)}, seq) "
                f"VALUES ({', '.join('?' * len(_RECORD_COLUMNS))}, ?)",
                (record.id, record.tenant, record.collection, Status.QUEUED, record.source, record.blob_key,
                 record.content_hash, record.external_id, json.dumps(record.tags), None, None, CaptionStatus.PENDING,
                 None, None, None, None, None, None, record.created_at, now, record.title, record.description,
                 json.dumps(record.attributes), None, seq),
            )
            _index_texts(db, record.id)

    def get(self, image_id: str) -> ImageRecord | None:
        return self.get_many([image_id]).get(image_id)

    def get_many(self, ids: Iterable[str]) -> dict[str, ImageRecord]:
        ids = list(dict.fromkeys(ids))
        out: dict[str, ImageRecord] = {}
        db = self._conn()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows = db.execute(f"{_SELECT_RECORD} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
            for row in rows:
                record = _to_record(row)
                out[record.id] = record
        return out

    def delete(self, image_id: str) -> ImageRecord | None:
        with self._write() as db:
            row = db.execute(f"{_SELECT_RECORD} WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                return None
            seq = self._next_seq(db)
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            db.execute("DELETE FROM texts_fts WHERE id = ?", (image_id,))
            db.execute("INSERT OR REPLACE INTO tombstones(id, seq) VALUES (?, ?)", (image_id, seq))
        return _to_record(row)

    def set_image_vectors(self, updates: list[ImageVectorUpdate]) -> list[str]:
        return self._update_versions(
            "UPDATE images SET status = 'indexed', error = NULL, image_vec = ?, image_model = ?, thumb_key = ?, "
            "width = ?, height = ?, taken_at = ?, updated_at = ?, seq = ? WHERE id = ? AND content_hash = ?",
            updates, lambda u: (_blob(u.vector), u.model, u.thumb_key, u.width, u.height, u.taken_at))

    def set_captions(self, updates: list[CaptionUpdate]) -> list[str]:
        def index_caption(db: sqlite3.Connection, u: CaptionUpdate) -> None:
            _index_texts(db, u.id)

        return self._update_versions(
            "UPDATE images SET caption = ?, caption_status = 'done', caption_vec = ?, caption_model = ?, "
            "text_model = ?, updated_at = ?, seq = ? WHERE id = ? AND content_hash = ?",
            updates, lambda u: (u.caption, _blob(u.vector), u.caption_model, u.text_model), index_caption)

    def _update_versions(self, sql: str, updates: list, values: Callable[[Any], tuple],
                         after: Callable[[sqlite3.Connection, Any], None] | None = None) -> list[str]:
        """Run ``sql`` for each update whose record still has the content hash it was computed for
        (``values`` + updated_at, seq, id, content_hash), in one write; returns the ids written."""
        done: list[str] = []
        if not updates:
            return done
        now = time.time()
        with self._write() as db:
            seq = self._next_seq(db)
            for u in updates:
                if db.execute(sql, (*values(u), now, seq, u.id, u.content_hash)).rowcount:
                    if after is not None:
                        after(db, u)
                    done.append(u.id)
        return done

    def set_failed(self, image_id: str, content_hash: str, stage: str, error: str) -> None:
        column = "status" if stage == "embed" else "caption_status"
        with self._write() as db:
            seq = self._next_seq(db)
            db.execute(
                f"UPDATE images SET {column} = 'failed', error = ?, updated_at = ?, seq = ? "
                "WHERE id = ? AND content_hash = ?",
                (f"{stage}: {error}", time.time(), seq, image_id, content_hash),
            )

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall()
        out = {str(status): 0 for status in Status}
        out.update({status: n for status, n in rows})
        pending = self._conn().execute(
            "SELECT COUNT(*) FROM images WHERE status = 'indexed' AND caption_status = 'pending'").fetchone()[0]
        out["caption_pending"] = pending
        return out

    def stale_queued(self, before: float, limit: int = 1000) -> list[str]:
        rows = self._conn().execute(
            "SELECT id FROM images WHERE status = 'queued' AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (before, limit))
        return [row[0] for row in rows]

    def iter_records(self, batch_size: int = 500) -> Iterator[ImageRecord]:
        """Every record, in id order, read in pages (no vectors)."""
        last = ""
        while True:
            rows = self._conn().execute(f"{_SELECT_RECORD} WHERE id > ? ORDER BY id LIMIT ?", (last, batch_size))
            page = [_to_record(row) for row in rows]
            if not page:
                return
            yield from page
            last = page[-1].id

    def ids_not_embedded_by(self, model: str) -> list[str]:
        """Records without an image vector from ``model`` (failed ones excluded): what a reindex re-queues."""
        rows = self._conn().execute(
            "SELECT id FROM images WHERE status != 'failed' AND (image_model IS NULL OR image_model != ?) "
            "ORDER BY created_at", (model,))
        return [row[0] for row in rows]

    # -- search --------------------------------------------------------------------------------

    def vector(self, image_id: str, field: VectorField) -> tuple[np.ndarray, str] | None:
        column, model = ("image_vec", "image_model") if field == VectorField.IMAGE else ("caption_vec", "text_model")
        row = self._conn().execute(f"SELECT {column}, {model} FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return np.frombuffer(row[0], dtype=np.float32), row[1]

    def vectors(self, ids: Iterable[str], field: VectorField, model: str) -> dict[str, np.ndarray]:
        # From the in-memory table, not SQLite: it holds exactly the indexed records' vectors per
        # model, as knn sees them, without reading a blob per id.
        self._refresh()
        with self._index_lock:
            table = self._tables.get((field, model))
            return {} if table is None else table.get(ids)

    def knn(self, field: VectorField, query: np.ndarray, k: int, model: str, filters: Filters,
            min_score: float | None = None) -> list[tuple[str, float]]:
        self._refresh()
        allowed = self._matching_ids(filters) if filters.where else None
        with self._index_lock:
            table = self._tables.get((field, model))
            if table is None:
                return []
            return table.search(np.asarray(query, dtype=np.float32), k, filters, min_score, allowed)

    def _matching_ids(self, filters: Filters) -> list[str]:
        """Indexed records the filter language admits: the pre-filter mask of a filtered kNN."""
        sql, params = filters_sql(Filters(tenant=filters.tenant, collection=filters.collection, where=filters.where),
                                  status=Status.INDEXED)
        return [row[0] for row in self._conn().execute(f"SELECT i.id FROM images i WHERE {sql}", params)]

    def keyword(self, text: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        """BM25 over caption, title and description, with CJK runs as bigrams on both sides."""
        words = _WORD.findall(cjk_bigrams(text).lower())
        if not words:
            return []
        # Quoted terms joined by OR: user text can never be parsed as FTS5 syntax.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
        where, params = filters_sql(filters, status=Status.INDEXED)
        sql = ("SELECT f.id, bm25(texts_fts) AS rank FROM texts_fts f JOIN images i ON i.id = f.id "
               f"WHERE texts_fts MATCH ? AND {where} ORDER BY rank LIMIT ?")
        # bm25() is lower-is-better and negative; report a positive score.
        return [(row[0], -float(row[1])) for row in self._conn().execute(sql, [match, *params, k])]

    def patch(self, image_id: str, changes: RecordPatch) -> ImageRecord | None:
        sets: list[str] = []
        values: list[object] = []
        for name in ("collection", "title", "description"):
            value = getattr(changes, name)
            if value is not None or name in changes.clear:
                sets.append(f"{name} = ?")
                values.append(value)
        if changes.tags is not None:
            sets.append("tags = ?")
            values.append(json.dumps(changes.tags))
        if changes.attributes is not None:
            sets.append("attributes = ?")
            values.append(json.dumps(changes.attributes))
        with self._write() as db:
            seq = self._next_seq(db)
            updated = db.execute(f"UPDATE images SET {', '.join([*sets, 'updated_at = ?', 'seq = ?'])} WHERE id = ?",
                                 (*values, time.time(), seq, image_id)).rowcount
            if not updated:
                return None  # gone: an UPDATE never inserts, so a deleted record stays deleted
            _index_texts(db, image_id)
        return self.get(image_id)

    def list_records(self, filters: Filters, status: str | None, after: tuple[float, str] | None,
                     limit: int) -> Page:
        where, params = filters_sql(filters, status=status)
        if after is not None:
            where += " AND (i.created_at > ? OR (i.created_at = ? AND i.id > ?))"
            params += [after[0], after[0], after[1]]
        columns = ", ".join(f"i.{c}" for c in _RECORD_COLUMNS)
        rows = self._conn().execute(f"SELECT {columns} FROM images i WHERE {where} ORDER BY i.created_at, i.id "
                                    "LIMIT ?", [*params, limit + 1]).fetchall()
        records = [_to_record(row) for row in rows[:limit]]
        more = len(rows) > limit and records
        return Page(records, (records[-1].created_at, records[-1].id) if more else None)

    def _refresh(self) -> None:
        """Apply every change committed since this process last looked (any process's)."""
        db = self._conn()
        latest = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        with self._index_lock:
            if latest == self._seen_seq:
                return
            since = self._seen_seq
            for (image_id,) in db.execute("SELECT id FROM tombstones WHERE seq > ? AND seq <= ?", (since, latest)):
                self._drop(image_id)
            rows = db.execute(
                "SELECT id, tenant, collection, status, image_model, image_vec, text_model, caption_vec "
                "FROM images WHERE seq > ? AND seq <= ?", (since, latest))
            applied = 0
            for image_id, tenant, collection, status, image_model, image_vec, text_model, caption_vec in rows:
                applied += 1
                self._drop(image_id)
                if status != Status.INDEXED:
                    continue
                for field, model, blob in ((VectorField.IMAGE, image_model, image_vec),
                                           (VectorField.CAPTION, text_model, caption_vec)):
                    if blob is not None and model:
                        vector = np.frombuffer(blob, dtype=np.float32)
                        key = (field, model)
                        table = self._tables.get(key)
                        if table is None:
                            table = self._tables[key] = VectorTable(vector.shape[0])
                        if table.dim != vector.shape[0]:
                            continue  # a model cannot change its dimension; ignore a corrupt row
                        table.add(image_id, vector, tenant, collection)
                        self._where[f"{field}:{image_id}"] = key
            self._seen_seq = latest
        if applied >= _LARGE_REFRESH:
            release_freed_memory()  # the rows' blobs churned through the heap: 25 MiB per 100,000 kept

    def _drop(self, image_id: str) -> None:
        for field in VectorField:
            key = self._where.pop(f"{field}:{image_id}", None)
            if key is not None:
                self._tables[key].remove(image_id)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _to_record(row: tuple) -> ImageRecord:
    values = dict(zip(_RECORD_COLUMNS, row))
    values["tags"] = json.loads(values["tags"] or "[]")
    values["attributes"] = json.loads(values["attributes"] or "{}")
    return ImageRecord(**values)


def _index_texts(db: sqlite3.Connection, image_id: str) -> None:
    """(Re)write the record's row in the text index from its caption, title and description."""
    db.execute("DELETE FROM texts_fts WHERE id = ?", (image_id,))
    row = db.execute("SELECT caption, title, description FROM images WHERE id = ?", (image_id,)).fetchone()
    if row is not None and any(row):
        db.execute("INSERT INTO texts_fts(id, caption, title, description) VALUES (?, ?, ?, ?)",
                   (image_id, *(cjk_bigrams(text) if text else None for text in row)))
