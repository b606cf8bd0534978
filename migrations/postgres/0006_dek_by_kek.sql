-- Which agents' DEKs a KEK wraps: the console serves a KEK's private key file only to a
-- reviewer granted one of them, and asks this on every key file fetch.
CREATE INDEX IF NOT EXISTS encryption_dek_kek ON encryption_dek (kek_fingerprint, agent_id);
