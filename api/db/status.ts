// SQL of the status route: every park in call_center_parks with its grants, last applied event and last sweep.
// The sink and the sweep write these tables (migrations/002); the api only reads them.
import type pg from 'pg';
import type { SweepCounts } from '../../connector/sync/reconciler.js';
import { SYNC_COLUMNS, type SyncRow } from './parks.js';

export interface ParkStatusRow extends SyncRow {
  users_granted: number;
  last_event_at: Date | null;
  last_event_lsn: string | null;
  last_commit_ts: Date | null;
  events_applied: string | null;
  skipped_no_uid: string | null;
  dead_lettered: string | null;
  lag_seconds: number | null;
  sweep: SweepRow | null;
}

export interface SweepRow extends SweepCounts {
  id: number;
  reason: string;
  started_at: string;
  finished_at: string | null;
  error: string | null;
}

export async function parkStatuses(pool: pg.Pool): Promise<ParkStatusRow[]> {
  const columns = SYNC_COLUMNS.split(', ').map((c) => `p.${c}`).join(', ');
  const { rows } = await pool.query<ParkStatusRow>(
    `SELECT ${columns},
            (SELECT count(*)::int FROM call_center_grants g WHERE g.park_id = p.park_id AND cardinality(g.role_ids) > 0) AS users_granted,
            s.last_event_at, s.last_event_lsn, s.last_commit_ts,
            s.events_applied::text, s.skipped_no_uid::text, s.dead_lettered::text,
            extract(epoch FROM s.last_event_at - s.last_commit_ts)::float8 AS lag_seconds,
            (SELECT to_jsonb(r) - 'park_id' - 'project_id' FROM reconcile_runs r WHERE r.park_id = p.park_id ORDER BY r.id DESC LIMIT 1) AS sweep
       FROM call_center_parks p
       LEFT JOIN call_center_sync_progress s ON s.park_id = p.park_id
      ORDER BY p.park_id`,
  );
  return rows;
}

/** The source's replication slot as PostgreSQL sees it, whichever process streams it. */
export interface SourceStatusRow {
  slot: string;
  /** streaming: a source holds the slot; stopped: the slot waits with no source; missing: no source ever created it. */
  state: 'streaming' | 'stopped' | 'missing';
  confirmed_lsn: string | null;
  /** WAL bytes the slot holds past its confirmed position; null on a standby server. */
  lag_bytes: number | null;
  wal_status: string | null;
}

export async function sourceStatus(pool: pg.Pool, slot: string): Promise<SourceStatusRow> {
  const { rows } = await pool.query<{ active: boolean; confirmed_lsn: string | null; lag_bytes: number | null; wal_status: string | null }>(
    `SELECT active, confirmed_flush_lsn::text AS confirmed_lsn, wal_status,
            CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 END AS lag_bytes
       FROM pg_replication_slots
      WHERE slot_name = $1 AND database = current_database()`,
    [slot],
  );
  const row = rows[0];
  if (!row) return { slot, state: 'missing', confirmed_lsn: null, lag_bytes: null, wal_status: null };
  return { slot, state: row.active ? 'streaming' : 'stopped', confirmed_lsn: row.confirmed_lsn, lag_bytes: row.lag_bytes, wal_status: row.wal_status };
}
