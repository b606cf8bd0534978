-- Review console. Each chunk's place in its segment (so the console serves one chunk as a byte
-- range, never a whole segment) and what a reviewer sees without keys; one summary row per
-- recorded user session, kept by the segment commit, so listing stays fast at millions of
-- chunks; console accounts and their logins. Rows indexed before this migration have no byte
-- range (NULL); the console says so for them and `sealstream export` still reads them.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS chunk_offset BIGINT;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS chunk_len INTEGER;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS capture_us BIGINT;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS flags SMALLINT;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS dek_id BYTEA;

CREATE TABLE IF NOT EXISTS recording_session (
    agent_id          TEXT NOT NULL,
    session_id        BYTEA NOT NULL,
    first_capture_us  BIGINT NOT NULL,
    last_capture_us   BIGINT NOT NULL,
    chunks            BIGINT NOT NULL,
    bytes             BIGINT NOT NULL,
    gaps              BIGINT NOT NULL DEFAULT 0,
    last_dek_id       BYTEA,
    updated_us        BIGINT NOT NULL,
    PRIMARY KEY (agent_id, session_id)
);
-- Newest-first pages and their cursors read this index; one agent's sessions use the primary
-- key (an agent has few enough sessions to sort). Every segment commit moves these rows'
-- last_capture_us, so each further index here is written on every commit.
CREATE INDEX IF NOT EXISTS recording_session_recent ON recording_session (last_capture_us, agent_id, session_id);

-- Console accounts: argon2id password hashes (PHC strings), a role, and for reviewers the agent
-- patterns they may see (one per line; `*` matches any run of characters).
CREATE TABLE IF NOT EXISTS console_user (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'reviewer')),
    password_hash   TEXT NOT NULL,
    agents          TEXT NOT NULL DEFAULT '',
    created_us      BIGINT NOT NULL,
    disabled_us     BIGINT
);

-- Console logins: only the SHA-256 of the cookie's token is kept.
CREATE TABLE IF NOT EXISTS console_login (
    token_sha256    BYTEA PRIMARY KEY,
    user_name       TEXT NOT NULL,
    csrf            TEXT NOT NULL,
    address         TEXT NOT NULL,
    created_us      BIGINT NOT NULL,
    last_seen_us    BIGINT NOT NULL
);

ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS address TEXT;

-- Sessions indexed before this migration: listed (their chunks counted, their times taken from
-- the segments' write times, their bytes unknown); the console cannot play them (no byte
-- ranges) and says to use `sealstream export`.
INSERT INTO recording_session (agent_id, session_id, first_capture_us, last_capture_us, chunks, bytes, gaps, last_dek_id, updated_us)
SELECT c.agent_id, c.session_id,
       (extract(epoch FROM min(s.created_at)) * 1000000)::bigint,
       (extract(epoch FROM max(s.created_at)) * 1000000)::bigint,
       count(*), 0, 0, NULL,
       (extract(epoch FROM max(s.created_at)) * 1000000)::bigint
FROM chunks c JOIN segments s ON s.segment_id = c.segment_id
GROUP BY c.agent_id, c.session_id
ON CONFLICT (agent_id, session_id) DO NOTHING;
