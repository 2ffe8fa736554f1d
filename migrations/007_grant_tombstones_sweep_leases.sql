-- A (project, uid) whose access fleet-sync took away and no longer manages keeps its record a while as a tombstone
-- (managed = false, no roles): a call-center listing taken before that revocation is then known to be older than
-- fleet-sync's last call for the uid, and is not trusted over it. Tombstones are pruned after two hours.
ALTER TABLE call_center_grants ADD COLUMN IF NOT EXISTS managed boolean NOT NULL DEFAULT true;

-- A park's sweep is leased by the member running it apart from when it is due: a new request while it runs waits
-- for it (two sweeps of one park never run at once) and runs right after. `cause` names the event that asked
-- (a truncate reaches every partition: its copies ask once).
ALTER TABLE call_center_park_sweeps ADD COLUMN IF NOT EXISTS leased_until timestamptz;
ALTER TABLE call_center_park_sweeps ADD COLUMN IF NOT EXISTS lease_token text;
ALTER TABLE call_center_park_sweeps ADD COLUMN IF NOT EXISTS cause text;
