-- Agent certificates as nodes see them. A node records every CA-signed agent certificate it
-- admits: one from an offline agent CA (`agents csr` + `ca sign`) was never enrolled here, and
-- gets its row at its first connection. `serial` is the certificate's serial number (hex);
-- `first_seen_us` and `last_seen_us` when a node admitted it first and last (each node writes
-- last_seen_us at most once a minute).
ALTER TABLE agent_credential ADD COLUMN IF NOT EXISTS serial TEXT;
ALTER TABLE agent_credential ADD COLUMN IF NOT EXISTS first_seen_us BIGINT;
ALTER TABLE agent_credential ADD COLUMN IF NOT EXISTS last_seen_us BIGINT;
