// Work kept apart from the stream, in PostgreSQL: uids whose call-center change failed for now (call_center_retries)
// and parks waiting for their sweep (call_center_park_sweeps). Written before the offsets of the events that asked
// for them are committed; taken with leases, so a sink member that dies leaves its share to the others.
import type pg from 'pg';

/** An event as it was on its topic, kept with a parked uid: dead-lettered if the call center refuses the uid for good. */
export interface ParkedEvent {
  topic: string;
  partition: number;
  offset: string;
  /** base64, null when absent */
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

export interface ParkedUid {
  uid: string;
  /** Projects to settle even without a row there (from the events or the revocation that asked). */
  projects: string[];
  profile: boolean;
  error: string;
  /** The events that asked for the change (none when a sweep or a replay parked it). */
  events: ParkedEvent[];
}

export interface RetryRow {
  uid: string;
  projects: string[];
  profile: boolean;
  generation: string;
  attempts: number;
  events: ParkedEvent[];
  last_error: string | null;
}

/**
 * Parks uids whose change the call center did not take: the next try waits base · 2^attempts (with jitter), at
 * most maxDelayMs. A uid parked again keeps the projects and profile flag it had, and its generation grows.
 */
export async function parkUids(db: pg.Pool, parked: ParkedUid[], backoff: { baseMs: number; maxDelayMs: number }): Promise<void> {
  if (parked.length === 0) return;
  await db.query(
    `INSERT INTO call_center_retries AS r (uid, projects, profile, attempts, next_at, last_error, events)
     SELECT p.uid, ARRAY(SELECT jsonb_array_elements_text(p.projects)), p.profile, 1,
            now() + make_interval(secs => $2::float8 / 1000.0 * (0.5 + random() / 2)), p.error, p.events
     FROM jsonb_to_recordset($1::jsonb) AS p(uid text, projects jsonb, profile boolean, error text, events jsonb)
     ON CONFLICT (uid) DO UPDATE SET
       projects = ARRAY(SELECT DISTINCT x FROM unnest(r.projects || EXCLUDED.projects) AS x),
       profile = r.profile OR EXCLUDED.profile,
       -- an event parked twice (its batch redone) is kept once
       events = (SELECT coalesce(jsonb_agg(e ORDER BY e->>'topic', (e->>'partition')::int, (e->>'offset')::bigint), '[]'::jsonb)
                 FROM (SELECT DISTINCT e FROM jsonb_array_elements(r.events || EXCLUDED.events) AS e) AS d),
       attempts = r.attempts + 1,
       generation = r.generation + 1,
       next_at = now() + make_interval(secs => least($3::float8, $2::float8 * power(2, least(r.attempts, 20))) / 1000.0 * (0.5 + random() / 2)),
       last_error = EXCLUDED.last_error,
       updated_at = now()`,
    [JSON.stringify(parked), backoff.baseMs, backoff.maxDelayMs],
  );
}

/** Forgets parked uids that are now done: only the generation that was read, never a parking made since. */
export async function clearRetries(db: pg.Pool, done: { uid: string; generation: string }[]): Promise<void> {
  if (done.length === 0) return;
  await db.query(
    `DELETE FROM call_center_retries r USING jsonb_to_recordset($1::jsonb) AS d(uid text, generation bigint)
     WHERE r.uid = d.uid AND r.generation = d.generation`,
    [JSON.stringify(done)],
  );
}

/**
 * Takes up to `limit` parked uids whose time has come, leasing them for `leaseMs` (another sink member skips
 * them meanwhile; a crashed one's lease runs out and the uid is taken again).
 */
export async function claimDueRetries(db: pg.Pool, limit: number, leaseMs: number): Promise<string[]> {
  const { rows } = await db.query<{ uid: string }>(
    `UPDATE call_center_retries SET next_at = now() + make_interval(secs => $2::float8 / 1000.0)
     WHERE uid IN (SELECT uid FROM call_center_retries WHERE next_at <= now() ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING uid`,
    [limit, leaseMs],
  );
  return rows.map((r) => r.uid);
}

export async function countRetries(db: pg.Pool): Promise<number> {
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM call_center_retries');
  return Number(rows[0]!.n);
}

/** A park's sweep, asked for durably before the offset of the park change that asks for it is committed. */
export async function requestParkSweeps(db: pg.Pool, requests: { parkId: string; reason: string }[]): Promise<void> {
  if (requests.length === 0) return;
  await db.query(
    `INSERT INTO call_center_park_sweeps AS s (park_id, reason)
     SELECT r.park_id, r.reason FROM jsonb_to_recordset($1::jsonb) AS r(park_id text, reason text)
     ON CONFLICT (park_id) DO UPDATE SET reason = EXCLUDED.reason, attempts = 0, generation = s.generation + 1, next_at = now(), requested_at = now()`,
    [JSON.stringify(requests.map((r) => ({ park_id: r.parkId, reason: r.reason })))],
  );
}

export interface ParkSweepRequest {
  park_id: string;
  reason: string;
  generation: string;
}

export async function claimDueParkSweep(db: pg.Pool, leaseMs: number): Promise<ParkSweepRequest | null> {
  const { rows } = await db.query<ParkSweepRequest>(
    `UPDATE call_center_park_sweeps SET next_at = now() + make_interval(secs => $1::float8 / 1000.0)
     WHERE park_id = (SELECT park_id FROM call_center_park_sweeps WHERE next_at <= now() ORDER BY next_at LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING park_id, reason, generation::text`,
    [leaseMs],
  );
  return rows[0] ?? null;
}

/** Keeps a running sweep's lease. */
export async function renewParkSweep(db: pg.Pool, request: ParkSweepRequest, leaseMs: number): Promise<void> {
  await db.query(`UPDATE call_center_park_sweeps SET next_at = now() + make_interval(secs => $3::float8 / 1000.0) WHERE park_id = $1 AND generation = $2`, [
    request.park_id,
    request.generation,
    leaseMs,
  ]);
}

/** Done: forgotten unless asked for again meanwhile (then the newer request runs too). */
export async function finishParkSweep(db: pg.Pool, request: ParkSweepRequest): Promise<void> {
  await db.query('DELETE FROM call_center_park_sweeps WHERE park_id = $1 AND generation = $2', [request.park_id, request.generation]);
}

export async function deferParkSweep(db: pg.Pool, request: ParkSweepRequest, error: string, backoff: { baseMs: number; maxDelayMs: number }): Promise<void> {
  await db.query(
    `UPDATE call_center_park_sweeps SET attempts = attempts + 1, last_error = $3,
       next_at = now() + make_interval(secs => least($5::float8, $4::float8 * power(2, least(attempts, 20))) / 1000.0 * (0.5 + random() / 2))
     WHERE park_id = $1 AND generation = $2`,
    [request.park_id, request.generation, error, backoff.baseMs, backoff.maxDelayMs],
  );
}
