// Work kept apart from the stream, in PostgreSQL: uids whose call-center change failed for now (call_center_retries)
// and parks waiting for their sweep (call_center_park_sweeps). Written before the offsets of the events that asked
// for them are committed; taken with leases, so a sink member that dies leaves its share to the others.
import type pg from 'pg';
import type { EventCause } from '../audit/trail.js';

/** An event as it was on its topic, kept with a parked uid: dead-lettered if the call center refuses the uid for good. */
export interface ParkedEvent {
  topic: string;
  partition: number;
  offset: string;
  /** base64, null when absent */
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  /** The event as the audit trail tells it (absent in rows parked before the trail existed). */
  cause?: EventCause;
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
export async function parkUids(db: pg.Pool | pg.PoolClient, parked: ParkedUid[], backoff: { baseMs: number; maxDelayMs: number }): Promise<void> {
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
export async function clearRetries(db: pg.Pool | pg.PoolClient, done: { uid: string; generation: string }[]): Promise<void> {
  if (done.length === 0) return;
  await db.query(
    `DELETE FROM call_center_retries r USING jsonb_to_recordset($1::jsonb) AS d(uid text, generation bigint)
     WHERE r.uid = d.uid AND r.generation = d.generation`,
    [JSON.stringify(done)],
  );
}

/** Drops events just dead-lettered from a parked uid that stays parked, so they are never dead-lettered twice. */
export async function forgetRetryEvents(db: pg.Pool, uid: string, events: ParkedEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(
    `UPDATE call_center_retries SET events = (
       SELECT coalesce(jsonb_agg(e), '[]'::jsonb) FROM jsonb_array_elements(events) AS e
       WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements($2::jsonb) AS d
                         WHERE d->>'topic' = e->>'topic' AND d->>'partition' = e->>'partition' AND d->>'offset' = e->>'offset'))
     WHERE uid = $1`,
    [uid, JSON.stringify(events)],
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

/**
 * A park's sweep, asked for durably before the offset of the park change that asks for it is committed. A request
 * made while the park's sweep runs waits for it (the lease) and runs right after, with the newer settings. A
 * request with a `cause` already pending (a truncate's copy on another partition) changes nothing.
 */
export async function requestParkSweeps(db: pg.Pool, requests: { parkId: string; reason: string; cause?: string }[]): Promise<void> {
  if (requests.length === 0) return;
  await db.query(
    `INSERT INTO call_center_park_sweeps AS s (park_id, reason, cause)
     SELECT DISTINCT ON (r.park_id) r.park_id, r.reason, r.cause FROM jsonb_to_recordset($1::jsonb) AS r(park_id text, reason text, cause text)
     ON CONFLICT (park_id) DO UPDATE SET reason = EXCLUDED.reason, cause = EXCLUDED.cause, attempts = 0, generation = s.generation + 1,
       next_at = now(), requested_at = now(), last_error = NULL
     WHERE EXCLUDED.cause IS NULL OR s.cause IS DISTINCT FROM EXCLUDED.cause`,
    [JSON.stringify(requests.map((r) => ({ park_id: r.parkId, reason: r.reason, cause: r.cause ?? null })))],
  );
}

export interface ParkSweepRequest {
  park_id: string;
  reason: string;
  generation: string;
  lease_token: string;
}

/**
 * Leases the most urgent due sweep no member runs: revocations (a park turned off, a truncate) first, then
 * backfills, then the interval's, so a turned-off park never waits behind another park's long backfill and a park
 * just turned on never waits behind the interval's pass over every park. `interval: false` leaves the interval's
 * requests to others (a member runs one of them at a time).
 */
export async function claimDueParkSweep(db: pg.Pool, leaseMs: number, options: { interval?: boolean } = {}): Promise<ParkSweepRequest | null> {
  const { rows } = await db.query<ParkSweepRequest>(
    `UPDATE call_center_park_sweeps SET leased_until = now() + make_interval(secs => $1::float8 / 1000.0), lease_token = md5(random()::text || clock_timestamp()::text)
     WHERE park_id = (SELECT park_id FROM call_center_park_sweeps
                      WHERE next_at <= now() AND (leased_until IS NULL OR leased_until < now()) AND ($2::boolean OR reason <> 'interval')
                      ORDER BY CASE WHEN reason IN ('park_off', 'truncate') THEN 0 WHEN reason = 'interval' THEN 2 ELSE 1 END, next_at
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING park_id, reason, generation::text, lease_token`,
    [leaseMs, options.interval ?? true],
  );
  return rows[0] ?? null;
}

/** Keeps a running sweep's lease; false when the park was asked for again meanwhile (the running sweep is superseded). */
export async function renewParkSweep(db: pg.Pool, request: ParkSweepRequest, leaseMs: number): Promise<boolean> {
  const { rows } = await db.query<{ generation: string }>(
    `UPDATE call_center_park_sweeps SET leased_until = now() + make_interval(secs => $3::float8 / 1000.0) WHERE park_id = $1 AND lease_token = $2
     RETURNING generation::text`,
    [request.park_id, request.lease_token, leaseMs],
  );
  return rows[0]?.generation === request.generation;
}

/** Done: forgotten unless asked for again meanwhile (then the lease is given up and the newer request runs). */
export async function finishParkSweep(db: pg.Pool, request: ParkSweepRequest): Promise<void> {
  await db.query(
    `WITH done AS (DELETE FROM call_center_park_sweeps WHERE park_id = $1 AND generation = $2 AND lease_token = $3 RETURNING 1)
     UPDATE call_center_park_sweeps SET leased_until = NULL, lease_token = NULL WHERE park_id = $1 AND lease_token = $3 AND NOT EXISTS (SELECT 1 FROM done)`,
    [request.park_id, request.generation, request.lease_token],
  );
}

/** Failed for now: tried again after a backoff, unless asked for again meanwhile (then the newer request runs now). */
export async function deferParkSweep(db: pg.Pool, request: ParkSweepRequest, error: string, backoff: { baseMs: number; maxDelayMs: number }): Promise<void> {
  await db.query(
    `UPDATE call_center_park_sweeps SET leased_until = NULL, lease_token = NULL, last_error = $4,
       attempts = CASE WHEN generation = $2 THEN attempts + 1 ELSE attempts END,
       next_at = CASE WHEN generation = $2
                 THEN now() + make_interval(secs => least($6::float8, $5::float8 * power(2, least(attempts, 20))) / 1000.0 * (0.5 + random() / 2))
                 ELSE next_at END
     WHERE park_id = $1 AND lease_token = $3`,
    [request.park_id, request.generation, request.lease_token, error, backoff.baseMs, backoff.maxDelayMs],
  );
}

/** Gives a sweep back unfinished (its member is stopping): due again at once, for any member. */
export async function releaseParkSweep(db: pg.Pool, request: ParkSweepRequest): Promise<void> {
  await db.query(`UPDATE call_center_park_sweeps SET leased_until = NULL, lease_token = NULL WHERE park_id = $1 AND lease_token = $2`, [
    request.park_id,
    request.lease_token,
  ]);
}

const INTERVAL_SWEEP = 'interval_sweep';

/**
 * The interval's pass, claimed by one member of the group at a time: when the schedule is due, it moves on by the
 * interval and every park with work (see parksWithWork) gets an 'interval' sweep request, in one transaction, so
 * a member that dies between the two leaves neither. A park whose sweep is already asked for (a toggle's, or the
 * last interval's still running or waiting out a failure) keeps that request. A schedule further off than one
 * interval (the interval was shortened) is brought in without a pass. Returns the parks asked for; null when the
 * pass was not due or another member took it.
 */
export async function claimIntervalSweep(db: pg.Pool, intervalS: number): Promise<string[] | null> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query(
      `INSERT INTO fleet_sync_schedule (name, next_at) VALUES ($1, now() + make_interval(secs => $2::float8)) ON CONFLICT (name) DO NOTHING`,
      [INTERVAL_SWEEP, intervalS],
    );
    const { rows } = await client.query<{ claimed: boolean }>(
      `UPDATE fleet_sync_schedule SET next_at = now() + make_interval(secs => $2::float8),
         claims = claims + CASE WHEN next_at <= now() THEN 1 ELSE 0 END,
         claimed_at = CASE WHEN next_at <= now() THEN now() ELSE claimed_at END
       WHERE name = $1 AND (next_at <= now() OR next_at > now() + make_interval(secs => $2::float8))
       RETURNING claimed_at = now() AS claimed`,
      [INTERVAL_SWEEP, intervalS],
    );
    if (!rows[0]?.claimed) {
      await client.query('COMMIT');
      client.release();
      return null;
    }
    const parks = await parksWithWork(client);
    await client.query(
      `INSERT INTO call_center_park_sweeps (park_id, reason) SELECT park_id, 'interval' FROM unnest($1::text[]) AS park_id ON CONFLICT (park_id) DO NOTHING`,
      [parks],
    );
    await client.query('COMMIT');
    client.release();
    return parks;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    // A connection that failed is closed rather than handed to the next caller.
    client.release(e as Error);
    throw e;
  }
}

/**
 * Every park the interval sweeps: each that syncs, and each fleet-sync still holds grants for that does not (off
 * with revoke, off without revoke: what its users no longer earn by its last mapping goes; or no sync row at all).
 */
export async function parksWithWork(db: pg.Pool | pg.PoolClient): Promise<string[]> {
  const { rows } = await db.query<{ park_id: string }>(
    `SELECT park_id FROM call_center_parks WHERE enabled
     UNION SELECT DISTINCT g.park_id FROM call_center_grants g LEFT JOIN call_center_parks p USING (park_id)
     WHERE g.managed AND g.park_id <> '' AND (p.park_id IS NULL OR NOT p.enabled)`,
  );
  return rows.map((r) => r.park_id);
}
