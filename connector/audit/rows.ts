// An audit row as its readers see it (GET /v1/audit, GET /v1/why, `fleet-sync why`): one JSON shape, rendered by
// PostgreSQL, and the cause told in a few words for a person on duty.
import type { AuditAction, AuditCause, AuditOutcome, EventCause, ToggleCause } from './trail.js';

/** One call_center_audit row with the api's field names. */
export interface AuditRowView {
  /** bigint, as text. */
  id: string;
  /** ISO 8601, UTC, milliseconds. */
  at: string;
  project_id: string | null;
  uid: string;
  park_id: string;
  action: AuditAction;
  roles_before: string[] | null;
  roles_after: string[] | null;
  outcome: AuditOutcome;
  error: string | null;
  cause: AuditCause;
}

/** A timestamptz column as the api writes times: ISO 8601 in UTC with milliseconds. */
export const isoSql = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** json_build_object of an audit row aliased `alias` (the AuditRowView shape). */
export const auditRowJsonSql = (alias: string) =>
  `json_build_object('id', ${alias}.id::text, 'at', ${isoSql(`${alias}.at`)}, 'project_id', ${alias}.project_id, 'uid', ${alias}.uid,
     'park_id', ${alias}.park_id, 'action', ${alias}.action, 'roles_before', ${alias}.roles_before, 'roles_after', ${alias}.roles_after,
     'outcome', ${alias}.outcome, 'error', ${alias}.error, 'cause', ${alias}.cause)`;

const OPS: Record<string, string> = { c: 'insert', u: 'update', d: 'delete', r: 'snapshot read', t: 'truncate' };

/** `fleet.public.users[3]@118 (lsn 0/1A2B3C, tx 812, committed 2026-…, update)` */
export function eventInWords(e: EventCause): string {
  const details = [`lsn ${e.lsn}`];
  if (e.tx_id !== null && e.tx_id !== undefined) details.push(`tx ${e.tx_id}`);
  if (e.commit_ts) details.push(`committed ${e.commit_ts}`);
  details.push(OPS[e.op] ?? `op ${e.op}`);
  return `${e.topic}[${e.partition}]@${e.offset} (${details.join(', ')})`;
}

/** `turned on by token ops, request req-7, at 2026-…` */
export function toggleInWords(t: Pick<ToggleCause, 'enabled' | 'token_name' | 'request_id' | 'at'>): string {
  return `turned ${t.enabled ? 'on' : 'off'} by token ${t.token_name}, request ${t.request_id}, at ${t.at}`;
}

function eventsInWords(events: EventCause[] | undefined, more: number | undefined): string {
  const list = events ?? [];
  if (list.length === 0) return '(no event recorded)';
  const others = list.length - 1 + (more ?? 0);
  return eventInWords(list[0]!) + (others > 0 ? ` and ${others} more event${others === 1 ? '' : 's'}` : '');
}

/**
 * The cause of an audit row in words. Rows are read back long after they were written, possibly by a newer or older
 * fleet-sync: a cause of a shape this version does not know is shown as its JSON rather than failing the answer.
 */
export function causeInWords(cause: AuditCause): string {
  try {
    switch (cause.kind) {
      case 'event':
        return `event ${eventsInWords(cause.events, cause.more)}`;
      case 'sweep':
        return `sweep run ${cause.run_id} (${cause.reason}${cause.toggle ? `, ${toggleInWords(cause.toggle)}` : ''})`;
      case 'retry':
        return `retry after ${cause.attempts} attempt${cause.attempts === 1 ? '' : 's'}${cause.events?.length ? ` of ${eventsInWords(cause.events, cause.more)}` : ''}`;
      case 'replay':
        return `replay ${cause.events?.length ? 'of ' : ''}${eventsInWords(cause.events, cause.more)}`;
    }
  } catch {
    // fall through to the JSON
  }
  return JSON.stringify(cause);
}

/** `[operator, supervisor]`; `?` when fleet-sync did not know. */
export const rolesInWords = (roles: readonly string[] | null) => (roles === null ? '?' : `[${roles.join(', ')}]`);

/** One history line: `2026-… roles [] → [operator] in proj-a: applied, by event …`. */
export function auditRowInWords(row: AuditRowView): string {
  const where = row.project_id === null ? '' : ` in ${row.project_id}`;
  const what = row.action === 'profile' ? 'profile put' : `${row.action} ${rolesInWords(row.roles_before)} → ${rolesInWords(row.roles_after)}${where}`;
  return `${row.at} ${what}: ${row.outcome}${row.error ? ` (${row.error})` : ''}, by ${causeInWords(row.cause)}`;
}
