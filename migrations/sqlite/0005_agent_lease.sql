-- The lease table of migrations/postgres/0005_agent_lease.sql, for an identical schema. SQLite
-- is single-node (a second `serve` on the same file refuses to start), so nothing fences on it.
CREATE TABLE IF NOT EXISTS agent_lease (
    agent_id        TEXT PRIMARY KEY,
    epoch           INTEGER NOT NULL,
    node            TEXT NOT NULL,
    since_us        INTEGER NOT NULL
);
