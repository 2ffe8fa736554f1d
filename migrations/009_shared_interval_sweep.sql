-- The interval sweep is the sink group's work, not each member's. One member at a time finds the schedule due,
-- moves it on by the interval and asks for every park's sweep in call_center_park_sweeps (reason 'interval') in
-- the same transaction; the members then share those sweeps by lease, like the sweeps of a toggle.
CREATE TABLE IF NOT EXISTS fleet_sync_schedule (
  name        text PRIMARY KEY,
  next_at     timestamptz NOT NULL,
  -- passes started so far, and the latest one's start
  claims      bigint NOT NULL DEFAULT 0,
  claimed_at  timestamptz
);
