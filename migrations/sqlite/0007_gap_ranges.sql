-- A gap record's index row keeps the first number it dropped (it dropped gap_first_seq ..
-- seq - 1), so a chunk in that range stays refused after the agent reconnects or the server
-- restarts; and recent DEK records are found by time, so each agent's new-DEK budget
-- survives a restart.
ALTER TABLE chunks ADD COLUMN gap_first_seq BIGINT;
CREATE INDEX IF NOT EXISTS encryption_dek_recent ON encryption_dek (creation_time);
