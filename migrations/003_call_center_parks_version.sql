-- A version for call_center_parks rows that follows commit order: the trigger runs after the row lock is taken,
-- so of two concurrent writers of one park the one that commits last gets the larger number. updated_at
-- (transaction start time) cannot order them, and the sink must know which version of a park is the newer.
CREATE SEQUENCE IF NOT EXISTS call_center_parks_version_seq;
ALTER TABLE call_center_parks ADD COLUMN IF NOT EXISTS version bigint;
UPDATE call_center_parks SET version = nextval('call_center_parks_version_seq') WHERE version IS NULL;
ALTER TABLE call_center_parks ALTER COLUMN version SET NOT NULL;

CREATE OR REPLACE FUNCTION call_center_parks_next_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := nextval('call_center_parks_version_seq');
  RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS call_center_parks_version ON call_center_parks;
CREATE TRIGGER call_center_parks_version BEFORE INSERT OR UPDATE ON call_center_parks
  FOR EACH ROW EXECUTE FUNCTION call_center_parks_next_version();
