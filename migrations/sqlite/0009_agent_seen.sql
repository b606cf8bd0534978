-- Agent certificates as nodes see them (SQLite; the same as migrations/postgres/0009_agent_seen.sql).
-- A node records every CA-signed agent certificate it admits: one from an offline agent CA
-- (`agents csr` + `ca sign`) was never enrolled here, and gets its row at its first connection.
-- `serial` is the certificate's serial number (hex); `first_seen_us` and `last_seen_us` when a
-- node admitted it first and last (a node writes last_seen_us at most once a minute).
ALTER TABLE agent_credential ADD COLUMN serial TEXT;
ALTER TABLE agent_credential ADD COLUMN first_seen_us INTEGER;
ALTER TABLE agent_credential ADD COLUMN last_seen_us INTEGER;
