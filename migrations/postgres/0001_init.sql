-- sealstream metadata, PostgreSQL. Applied once at start-up (schema_migrations records it).

-- KEKs. The first four columns are the E2EE how-to's, so its own statement works verbatim:
--   insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile)
--   values (true, true, '/etc/sealstream/publickey.crt', '/etc/sealstream/keypair.pem');
-- The server reads pub_datafile, fills in the fingerprint, and picks rows up without a restart.
CREATE TABLE IF NOT EXISTS encryption_kek (
    id              BIGSERIAL PRIMARY KEY,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    priv_encrypted  BOOLEAN NOT NULL DEFAULT TRUE,
    pub_datafile    TEXT NOT NULL,
    priv_datafile   TEXT,
    fingerprint     TEXT,
    agent_id        TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at      TIMESTAMPTZ
);

-- Wrapped DEKs, one row per DEK (the same record is also an object in the store).
CREATE TABLE IF NOT EXISTS encryption_dek (
    id              BIGSERIAL PRIMARY KEY,
    dek_id          BYTEA NOT NULL UNIQUE,
    kek_fingerprint TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    agent_session   BYTEA NOT NULL,
    wrapped_dek     BYTEA NOT NULL,
    record          BYTEA NOT NULL,
    object_key      TEXT NOT NULL,
    creation_time   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Segment objects and their checksums.
CREATE TABLE IF NOT EXISTS segments (
    segment_id      BYTEA PRIMARY KEY,
    object_key      TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    sha256          BYTEA NOT NULL,
    chunk_count     INTEGER NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every stored chunk: where it is and the SHA-256 of its bytes (deduplication of resends).
CREATE TABLE IF NOT EXISTS chunks (
    agent_id        TEXT NOT NULL,
    session_id      BYTEA NOT NULL,
    stream_id       BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    segment_id      BYTEA NOT NULL REFERENCES segments (segment_id),
    digest          BYTEA NOT NULL,
    PRIMARY KEY (agent_id, session_id, stream_id, seq)
);

-- Per stream: its kind, the next sequence number expected, and the final one once seen.
CREATE TABLE IF NOT EXISTS streams (
    agent_id        TEXT NOT NULL,
    session_id      BYTEA NOT NULL,
    stream_id       BIGINT NOT NULL,
    kind            SMALLINT NOT NULL,
    next_seq        BIGINT NOT NULL,
    final_seq       BIGINT,
    PRIMARY KEY (agent_id, session_id, stream_id)
);

-- Key use and exports, written before any key is unwrapped.
CREATE TABLE IF NOT EXISTS audit_log (
    id              BIGSERIAL PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    detail          TEXT NOT NULL
);
