// The access audit trail (call_center_audit): what each row says and how a cause is recorded. Rows are written
// by the applier in the statement that settles fleet-sync's grant records (store.ts: settleGrants), pruned here,
// read by the api (GET /v1/audit) and by `fleet-sync why`.
import type pg from 'pg';
import type { DecodedEnvelope } from '../events.js';

/** profile: the user was created or updated; roles: a non-empty role set was set; revoke: [] was set; adopt: found in sync, recorded without a call. */
export type AuditAction = 'profile' | 'roles' | 'revoke' | 'adopt';

/** dead_lettered: refused for good and its events went to the dead-letter topic; refused: the same with no event to send. */
export type AuditOutcome = 'applied' | 'parked' | 'dead_lettered' | 'refused';

/** One change event behind a change, as far as the audit trail tells it. */
export interface EventCause {
  topic: string;
  partition: number;
  offset: string;
  /** Commit LSN of the event's transaction. */
  lsn: string;
  tx_id: number | null;
  /** Commit time, ISO 8601 (null for a snapshot row). */
  commit_ts: string | null;
  op: string;
  /** The row's park and dispatcher role, after the change (before it for a delete). */
  park_id: string | null;
  role_id: string | null;
  /** The users row's id. */
  user_id: string | null;
}

/** The api request that turned a park on or off (call_center_toggles). */
export interface ToggleCause {
  id: string;
  at: string;
  enabled: boolean;
  revoke: boolean | null;
  token_name: string;
  request_id: string;
}

export type AuditCause =
  | { kind: 'event'; events: EventCause[]; more?: number }
  /** A park's sweep: its run (reconcile_runs.id), its reason, and the toggle behind a park_on or park_off sweep. */
  | { kind: 'sweep'; run_id: string; reason: string; park_id: string; toggle?: ToggleCause }
  /** The retry loop taking a parked uid: how many tries, and the events parked with it. */
  | { kind: 'retry'; attempts: number; events: EventCause[]; more?: number }
  /** `fleet-sync replay --to callcenter`: the replayed events. */
  | { kind: 'replay'; events: EventCause[]; more?: number };

export interface AuditEntry {
  /** Null for a profile put (a call-center user is one across projects). */
  projectId: string | null;
  uid: string;
  parkId: string;
  action: AuditAction;
  /** What fleet-sync knew the call center held before: null when it did not know. */
  rolesBefore: readonly string[] | null;
  rolesAfter: readonly string[] | null;
  outcome: AuditOutcome;
  error?: string;
  cause: AuditCause;
}

/** Events named in a cause: the first ones, and how many more there were (a uid rewritten a thousand times in one batch stays one small row). */
export const CAUSE_EVENTS_MAX = 10;

/** The first CAUSE_EVENTS_MAX events, and how many more there were. */
export function capEvents(events: readonly EventCause[]): { events: EventCause[]; more?: number } {
  return events.length > CAUSE_EVENTS_MAX ? { events: events.slice(0, CAUSE_EVENTS_MAX), more: events.length - CAUSE_EVENTS_MAX } : { events: [...events] };
}

/** A decoded users event as its cause. */
export function eventCause(env: DecodedEnvelope, at: { topic: string; partition: number; offset: string }): EventCause {
  const row = (env.after ?? env.before) as Record<string, unknown> | null;
  const text = (v: unknown) => (v === null || v === undefined ? null : String(v));
  return {
    topic: at.topic,
    partition: at.partition,
    offset: at.offset,
    lsn: env.source.lsn,
    tx_id: env.source.tx_id,
    commit_ts: env.source.commit_ts_ms === null ? null : new Date(env.source.commit_ts_ms).toISOString(),
    op: env.op,
    park_id: text(row?.park_id),
    role_id: text(row?.role_id),
    user_id: text(row?.id),
  };
}

/** The audit rows as the settle statement's second parameter (jsonb_to_recordset). */
export function auditPayload(entries: readonly AuditEntry[]): string {
  return JSON.stringify(
    entries.map((e) => ({
      project_id: e.projectId,
      uid: e.uid,
      park_id: e.parkId,
      action: e.action,
      roles_before: e.rolesBefore,
      roles_after: e.rolesAfter,
      outcome: e.outcome,
      error: e.error ?? null,
      cause_kind: e.cause.kind,
      cause: e.cause,
    })),
  );
}

/**
 * The INSERT of audit rows from `$n` (auditPayload), for a data-modifying CTE beside the grant records' upsert.
 * json_to_recordset with typed columns turns the role arrays into text[] itself: cheaper, on the sink's path
 * under the uid locks, than a jsonb payload and a subquery per array.
 */
export const insertAuditSql = (param: string) =>
  `INSERT INTO call_center_audit (project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause)
   SELECT a.project_id, a.uid, a.park_id, a.action, a.roles_before, a.roles_after, a.outcome, a.error, a.cause_kind, a.cause
   FROM json_to_recordset(${param}::json) AS a(project_id text, uid text, park_id text, action text, roles_before text[], roles_after text[],
                                              outcome text, error text, cause_kind text, cause jsonb)`;

/** Rows examined per pruning statement: the oldest by id, so a statement never scans the whole table. */
const PRUNE_BATCH = 5_000;

/**
 * Deletes audit rows older than `retentionDays`, oldest first, a small batch per statement (each a short
 * transaction beside the sink's writes), at most `maxBatches` batches a call. Returns the rows deleted.
 */
export async function pruneAudit(db: pg.Pool, retentionDays: number, maxBatches = 20): Promise<number> {
  let deleted = 0;
  for (let i = 0; i < maxBatches; i++) {
    const { rowCount } = await db.query(
      `DELETE FROM call_center_audit WHERE id IN (
         SELECT id FROM (SELECT id, at FROM call_center_audit ORDER BY id LIMIT $2) AS oldest
         WHERE at < now() - make_interval(days => $1::int))`,
      [retentionDays, PRUNE_BATCH],
    );
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < PRUNE_BATCH) break;
  }
  return deleted;
}

/**
 * The toggle that wrote the park's current settings (who turned it on or off, by which request), for the cause
 * of its sweep; none when the row was written otherwise (by a script) since the last toggle, or is gone.
 */
export async function latestToggle(db: pg.Pool | pg.PoolClient, parkId: string): Promise<ToggleCause | undefined> {
  const { rows } = await db.query<ToggleCause>(
    `SELECT t.id::text, to_char(t.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at, t.enabled, t.revoke, t.token_name, t.request_id
     FROM call_center_toggles t JOIN call_center_parks p USING (park_id)
     WHERE t.park_id = $1 AND t.at >= p.updated_at ORDER BY t.id DESC LIMIT 1`,
    [parkId],
  );
  return rows[0];
}
