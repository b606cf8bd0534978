-- Agent access (SQLite; the same as migrations/postgres/0002_agent_access.sql).
-- Every certificate `sealstream agents enroll` / `renew` issued, and what an
-- operator did to it (`agents revoke`, `disable`, `enable`). The server reads both tables at
-- start and every `access_poll_ms`, refuses a revoked certificate or a disabled agent at the
-- handshake, and closes connections already open.
CREATE TABLE IF NOT EXISTS agent_credential (
    fingerprint     TEXT PRIMARY KEY,            -- sha256:<hex> of the certificate (DER)
    agent_id        TEXT NOT NULL,
    issued_us       INTEGER NOT NULL,
    not_after_us    INTEGER NOT NULL,
    revoked_us      INTEGER,
    revoked_reason  TEXT
);
CREATE INDEX IF NOT EXISTS agent_credential_agent ON agent_credential (agent_id);

-- Per agent: disabled (every certificate refused until enabled), and whether only registered
-- certificates are accepted (set by the first enrolment or revocation; certificates issued
-- before this table existed are accepted until then).
CREATE TABLE IF NOT EXISTS agent_account (
    agent_id        TEXT PRIMARY KEY,
    disabled_us     INTEGER,
    registered_only INTEGER NOT NULL DEFAULT 0
);
