-- The access audit trail: every change fleet-sync made in the call center (a profile put, a role set set, roles
-- revoked) and every adoption, with roles before and after as fleet-sync knew them, its outcome and its cause.
-- A row of an applied change is written in the same statement as the grant record it settles, so the two never
-- disagree. Rows are pruned after AUDIT_RETENTION_DAYS, oldest first, in small batches.
CREATE TABLE IF NOT EXISTS call_center_audit (
  id           bigserial PRIMARY KEY,
  -- When fleet-sync recorded the call's outcome (the call had landed, or failed): the database's clock.
  at           timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- NULL for a profile put: a call-center user is one across projects.
  project_id   text,
  uid          text NOT NULL,
  -- The park whose rule the change follows ('' when none is known: a revocation of a park-less record).
  park_id      text NOT NULL DEFAULT '',
  -- profile | roles | revoke | adopt
  action       text NOT NULL,
  -- NULL when fleet-sync did not know what the call center held (a call in flight, no record, no listing).
  roles_before text[],
  roles_after  text[],
  -- applied | parked (the retry loop takes it) | dead_lettered (refused for good; its events went to the DLQ) | refused (refused for good, no event to dead-letter)
  outcome      text NOT NULL,
  error        text,
  -- event | sweep | retry | replay: the cause's kind; `cause` holds its details (events, sweep run, toggle).
  cause_kind   text NOT NULL,
  cause        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS call_center_audit_uid_idx ON call_center_audit (uid, id);
CREATE INDEX IF NOT EXISTS call_center_audit_project_idx ON call_center_audit (project_id, id);
CREATE INDEX IF NOT EXISTS call_center_audit_park_idx ON call_center_audit (park_id, id);
-- Rows are appended in time order: a block-range index answers since/until and the pruning for almost nothing.
CREATE INDEX IF NOT EXISTS call_center_audit_at_idx ON call_center_audit USING brin (at);

-- Who turned a park on or off, and with which request: the cause the park's sweep names in the audit trail.
-- Written by the api in the toggle's transaction, only when the toggle changed the park's row.
CREATE TABLE IF NOT EXISTS call_center_toggles (
  id          bigserial PRIMARY KEY,
  park_id     text NOT NULL,
  at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  enabled     boolean NOT NULL,
  project_id  text NOT NULL,
  role_map    jsonb NOT NULL,
  revoke      boolean,
  token_name  text NOT NULL,
  request_id  text NOT NULL
);
CREATE INDEX IF NOT EXISTS call_center_toggles_park_idx ON call_center_toggles (park_id, id);
