-- A tamper-evident audit log: every row enters a hash chain as it is inserted (by anyone: our
-- code, the how-to's SQL, psql). chain_seq numbers the rows 1, 2, 3, ...; row_hash =
-- SHA-256("sealstream audit v1" || prev_hash || chain_seq || at_us || actor || action ||
-- detail || address), each text as a u32 byte length and its UTF-8 bytes (a NULL address as
-- length 0xFFFFFFFF). `sealstream audit verify` recomputes the chain; the server signs its head
-- (docs/threat-model.md "Audit log").
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS chain_seq BIGINT UNIQUE;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS at_us BIGINT;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS prev_hash BYTEA;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS row_hash BYTEA;

CREATE OR REPLACE FUNCTION sealstream_audit_field(t TEXT) RETURNS BYTEA
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN t IS NULL THEN '\xffffffff'::bytea
              ELSE int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') END
$$;

CREATE OR REPLACE FUNCTION sealstream_audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  last_seq BIGINT;
  last_hash BYTEA;
BEGIN
  -- One writer at a time; the SELECT below runs after the lock, on a fresh snapshot.
  PERFORM pg_advisory_xact_lock(7243911);
  SELECT chain_seq, row_hash INTO last_seq, last_hash
    FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1;
  NEW.chain_seq := coalesce(last_seq, 0) + 1;
  NEW.prev_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
  NEW.at_us := floor(extract(epoch FROM NEW.at) * 1000000)::BIGINT;
  NEW.row_hash := sha256(convert_to('sealstream audit v1', 'UTF8') || NEW.prev_hash
      || int8send(NEW.chain_seq) || int8send(NEW.at_us)
      || sealstream_audit_field(NEW.actor) || sealstream_audit_field(NEW.action)
      || sealstream_audit_field(NEW.detail) || sealstream_audit_field(NEW.address));
  RETURN NEW;
END
$$;

-- Rows written before this migration enter the chain now, in the order they were written.
DO $$
DECLARE r RECORD;
BEGIN
  FOR r IN SELECT id FROM audit_log WHERE chain_seq IS NULL ORDER BY id LOOP
    -- Re-insert through the chain function's rules.
    UPDATE audit_log a SET
      chain_seq = c.seq, prev_hash = c.prev, at_us = c.at_us,
      row_hash = sha256(convert_to('sealstream audit v1', 'UTF8') || c.prev || int8send(c.seq)
        || int8send(c.at_us) || sealstream_audit_field(a.actor) || sealstream_audit_field(a.action)
        || sealstream_audit_field(a.detail) || sealstream_audit_field(a.address))
    FROM (
      SELECT coalesce((SELECT max(chain_seq) FROM audit_log), 0) + 1 AS seq,
             coalesce((SELECT row_hash FROM audit_log WHERE chain_seq IS NOT NULL
                       ORDER BY chain_seq DESC LIMIT 1), decode(repeat('00', 32), 'hex')) AS prev,
             floor(extract(epoch FROM (SELECT at FROM audit_log WHERE id = r.id)) * 1000000)::BIGINT AS at_us
    ) c
    WHERE a.id = r.id;
  END LOOP;
END
$$;

DROP TRIGGER IF EXISTS audit_log_chain ON audit_log;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
  FOR EACH ROW EXECUTE FUNCTION sealstream_audit_chain();

-- KEK changes are audited however they are made (sealstream, the how-to's INSERT, psql).
CREATE OR REPLACE FUNCTION sealstream_audit_kek() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE r encryption_kek;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  INSERT INTO audit_log (actor, action, detail) VALUES (
    'database:' || current_user, 'kek_' || lower(TG_OP),
    format('id=%s active=%s fingerprint=%s pub_datafile=%s priv_datafile=%s',
           r.id, r.active, coalesce(r.fingerprint, '-'), r.pub_datafile, coalesce(r.priv_datafile, '-')));
  RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS encryption_kek_audit ON encryption_kek;
CREATE TRIGGER encryption_kek_audit AFTER INSERT OR UPDATE OR DELETE ON encryption_kek
  FOR EACH ROW EXECUTE FUNCTION sealstream_audit_kek();
