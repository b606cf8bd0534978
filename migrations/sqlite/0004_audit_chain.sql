-- A tamper-evident audit log (see migrations/postgres/0004_audit_chain.sql for the chain's
-- definition). SQLite has no SHA-256: the trigger numbers each row as it is inserted (by
-- anyone: sealstream, the sqlite3 shell, the how-to's KEK insert) and sealstream hashes the
-- numbered rows at the end of the chain, in order (metadata/sqlite.rs
-- `chain_pending_audit_rows`): right after each of its own audit writes, and before each
-- signed checkpoint.
ALTER TABLE audit_log ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_log ADD COLUMN at_us INTEGER;
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN row_hash BLOB;
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_chain_seq ON audit_log (chain_seq);

-- Rows written before this migration, in the order they were written.
UPDATE audit_log SET
  chain_seq = (SELECT count(*) FROM audit_log b WHERE b.id <= audit_log.id),
  at_us = CAST(unixepoch(at) AS INTEGER) * 1000000;
-- Their prev_hash and row_hash are filled in, in chain order, right after this migration.

CREATE TRIGGER IF NOT EXISTS audit_log_chain AFTER INSERT ON audit_log
BEGIN
  UPDATE audit_log SET
    chain_seq = coalesce((SELECT max(chain_seq) FROM audit_log), 0) + 1,
    at_us = CAST(unixepoch('subsec') * 1000000 AS INTEGER)
  WHERE id = NEW.id;
END;

CREATE TRIGGER IF NOT EXISTS encryption_kek_audit_insert AFTER INSERT ON encryption_kek
BEGIN
  INSERT INTO audit_log (actor, action, detail) VALUES ('database', 'kek_insert',
    printf('id=%d active=%s fingerprint=%s pub_datafile=%s priv_datafile=%s', NEW.id,
      CASE WHEN NEW.active THEN 'true' ELSE 'false' END, coalesce(NEW.fingerprint, '-'),
      NEW.pub_datafile, coalesce(NEW.priv_datafile, '-')));
END;
CREATE TRIGGER IF NOT EXISTS encryption_kek_audit_update AFTER UPDATE ON encryption_kek
BEGIN
  INSERT INTO audit_log (actor, action, detail) VALUES ('database', 'kek_update',
    printf('id=%d active=%s fingerprint=%s pub_datafile=%s priv_datafile=%s', NEW.id,
      CASE WHEN NEW.active THEN 'true' ELSE 'false' END, coalesce(NEW.fingerprint, '-'),
      NEW.pub_datafile, coalesce(NEW.priv_datafile, '-')));
END;
CREATE TRIGGER IF NOT EXISTS encryption_kek_audit_delete AFTER DELETE ON encryption_kek
BEGIN
  INSERT INTO audit_log (actor, action, detail) VALUES ('database', 'kek_delete',
    printf('id=%d active=%s fingerprint=%s pub_datafile=%s priv_datafile=%s', OLD.id,
      CASE WHEN OLD.active THEN 'true' ELSE 'false' END, coalesce(OLD.fingerprint, '-'),
      OLD.pub_datafile, coalesce(OLD.priv_datafile, '-')));
END;
