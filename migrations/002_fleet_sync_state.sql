-- fleet-sync's own bookkeeping: source snapshot state, what the sink granted, sweep runs, per-park progress.
CREATE TABLE IF NOT EXISTS fleet_sync_source_state (
  slot_name        text PRIMARY KEY,
  snapshot_lsn     text,
  snapshot_done_at timestamptz
);

-- Every role grant fleet-sync made, so a revocation removes only what fleet-sync gave. A grant is written
-- (pending) before the call that makes it, so a crash between the two can never leave an unrecorded grant.
CREATE TABLE IF NOT EXISTS call_center_grants (
  project_id text NOT NULL,
  uid        text NOT NULL,
  park_id    text NOT NULL,
  role_ids   text[] NOT NULL,
  pending    boolean NOT NULL DEFAULT true,
  granted_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, uid)
);
CREATE INDEX IF NOT EXISTS call_center_grants_park_idx ON call_center_grants (park_id);

CREATE TABLE IF NOT EXISTS reconcile_runs (
  id                 bigserial PRIMARY KEY,
  park_id            text NOT NULL,
  project_id         text NOT NULL,
  reason             text NOT NULL,
  started_at         timestamptz NOT NULL DEFAULT now(),
  finished_at        timestamptz,
  checked            integer NOT NULL DEFAULT 0,
  in_sync            integer NOT NULL DEFAULT 0,
  corrected_profiles integer NOT NULL DEFAULT 0,
  corrected_grants   integer NOT NULL DEFAULT 0,
  revoked            integer NOT NULL DEFAULT 0,
  skipped_no_uid     integer NOT NULL DEFAULT 0,
  failed             integer NOT NULL DEFAULT 0,
  error              text
);
CREATE INDEX IF NOT EXISTS reconcile_runs_park_idx ON reconcile_runs (park_id, id DESC);

CREATE TABLE IF NOT EXISTS call_center_sync_progress (
  park_id            text PRIMARY KEY,
  last_event_at      timestamptz,
  last_event_lsn     text,
  last_commit_ts     timestamptz,
  events_applied     bigint NOT NULL DEFAULT 0,
  skipped_no_uid     bigint NOT NULL DEFAULT 0,
  dead_lettered      bigint NOT NULL DEFAULT 0
);
