-- The KEK audit trigger spells `active` as `true`/`false`, as SQLite's does (format('%s') of
-- a boolean gave `t`/`f`). Rows already written stay as they are: they are hash-chained.
CREATE OR REPLACE FUNCTION sealstream_audit_kek() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE r encryption_kek;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  INSERT INTO audit_log (actor, action, detail) VALUES (
    'database:' || current_user, 'kek_' || lower(TG_OP),
    format('id=%s active=%s fingerprint=%s pub_datafile=%s priv_datafile=%s',
           r.id, CASE WHEN r.active THEN 'true' ELSE 'false' END, coalesce(r.fingerprint, '-'),
           r.pub_datafile, coalesce(r.priv_datafile, '-')));
  RETURN NULL;
END
$$;
