
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
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_seq ON images(seq);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS tombstones (id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones(seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('seq', 0);
CREATE VIRTUAL TABLE IF NOT EXISTS captions_fts USING fts5(id UNINDEXED, caption, tokenize='porter unicode61');
