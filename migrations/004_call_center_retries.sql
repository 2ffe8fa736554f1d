-- Work the call center did not take yet, kept apart so that one project's outage never holds the stream of the
-- others. A uid is parked here by the applier when a call fails transiently, and the sink's retry loop brings it
-- to what the database says (the rows are re-read: the parked row is a trigger, not a payload). A park whose
-- sync settings changed waits here for its sweep (the backfill, or the revocation), so a long sweep never runs
-- inside a consumer batch. Both rows are written before the offsets of their events are committed.
CREATE TABLE IF NOT EXISTS call_center_retries (
  uid         text PRIMARY KEY,
  -- Projects to settle for this uid even where no row of an enabled park shows it now (a delete, a move out).
  projects    text[] NOT NULL DEFAULT '{}',
  -- The profile changed and must be sent again.
  profile     boolean NOT NULL DEFAULT false,
  attempts    integer NOT NULL DEFAULT 0,
  -- Grows with every parking: a retry that succeeded clears only the generation it read.
  generation  bigint NOT NULL DEFAULT 1,
  next_at     timestamptz NOT NULL DEFAULT now(),
  last_error  text,
  parked_at   timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS call_center_retries_next_idx ON call_center_retries (next_at);

CREATE TABLE IF NOT EXISTS call_center_park_sweeps (
  park_id      text PRIMARY KEY,
  reason       text NOT NULL,
  attempts     integer NOT NULL DEFAULT 0,
  generation   bigint NOT NULL DEFAULT 1,
  next_at      timestamptz NOT NULL DEFAULT now(),
  last_error   text,
  requested_at timestamptz NOT NULL DEFAULT now()
);
