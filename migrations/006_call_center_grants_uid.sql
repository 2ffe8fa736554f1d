-- The applier reads a uid's records in every project (WHERE uid = ANY(...)) for each batch it applies: without an
-- index of its own that read scans every record, and a large park's records make every stream batch slower.
CREATE INDEX IF NOT EXISTS call_center_grants_uid_idx ON call_center_grants (uid);
