-- sealstream metadata, embedded SQLite: the same tables and columns as
-- migrations/postgres/0001_init.sql, in SQLite's types.
CREATE TABLE IF NOT EXISTS encryption_kek (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    priv_encrypted  BOOLEAN NOT NULL DEFAULT TRUE,
    pub_datafile    TEXT NOT NULL,
    priv_datafile   TEXT,
    fingerprint     TEXT,
    agent_id        TEXT,
    created_at      TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    retired_at      TEXT
);

CREATE TABLE IF NOT EXISTS encryption_dek (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dek_id          BLOB NOT NULL UNIQUE,
    kek_fingerprint TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_session   BLOB NOT NULL,
    wrapped_dek     BLOB NOT NULL,
    record          BLOB NOT NULL,
    object_key      TEXT NOT NULL,
    creation_time   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS segments (
    segment_id      BLOB PRIMARY KEY,
    object_key      TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    sha256          BLOB NOT NULL,
    chunk_count     INTEGER NOT NULL,
    created_at      TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS chunks (
    agent_id        TEXT NOT NULL,
    session_id      BLOB NOT NULL,
    stream_id       INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    segment_id      BLOB NOT NULL REFERENCES segments (segment_id),
    digest          BLOB NOT NULL,
    PRIMARY KEY (agent_id, session_id, stream_id, seq)
);

CREATE TABLE IF NOT EXISTS streams (
    agent_id        TEXT NOT NULL,
    session_id      BLOB NOT NULL,
    stream_id       INTEGER NOT NULL,
    kind            INTEGER NOT NULL,
    next_seq        INTEGER NOT NULL,
    final_seq       INTEGER,
    PRIMARY KEY (agent_id, session_id, stream_id)
);

CREATE TABLE IF NOT EXISTS audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    detail          TEXT NOT NULL
);
