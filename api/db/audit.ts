// SQL of the audit routes: one keyset page of the trail, newest first, over the index its filter names ((uid, id),
// (project_id, id), (park_id, id), else the primary key), and the applied changes per park and hour (brin on at).
// PostgreSQL renders the page as JSON text, as the users list does.
import type pg from 'pg';
import { auditRowJsonSql, isoSql } from '../../connector/audit/rows.js';

export interface AuditPageQuery {
  uid: string | null;
  projectId: string | null;
  parkId: string | null;
  /** since ≤ at < until */
  since: Date | null;
  until: Date | null;
  /** The last id of the previous page: this page holds ids below it. */
  beforeId: string | null;
  limit: number;
}

export interface AuditPage {
  /** JSON array text of the page's entries, newest first. */
  entriesJson: string;
  /** Id of the page's last entry when another page follows, else null. */
  nextBeforeId: string | null;
  empty: boolean;
}

/**
 * The statement of one page: up to `limit` rows with id < beforeId, in descending id, and one more to tell whether
 * another page follows. Ids only grow, so a row appended during a walk is above its first page and never shifts the
 * pages after it: every row that existed when the walk began is returned once.
 */
export function auditPageSql(q: AuditPageQuery): { text: string; values: unknown[] } {
  const values: unknown[] = [q.limit];
  const where: string[] = [];
  // Equality on an index's leading column and `id <` on its second: a backward scan of (uid, id), (project_id, id) or
  // (park_id, id) that stops after limit + 1 rows; without those filters, of the primary key.
  if (q.uid !== null) where.push(`uid = $${values.push(q.uid)}`);
  if (q.projectId !== null) where.push(`project_id = $${values.push(q.projectId)}`);
  if (q.parkId !== null) where.push(`park_id = $${values.push(q.parkId)}`);
  if (q.beforeId !== null) where.push(`id < $${values.push(q.beforeId)}::bigint`);
  if (q.since !== null) where.push(`at >= $${values.push(q.since.toISOString())}::timestamptz`);
  if (q.until !== null) where.push(`at < $${values.push(q.until.toISOString())}::timestamptz`);
  const text = `SELECT count(*)::int AS fetched,
            (array_agg(a.id ORDER BY a.id DESC))[$1::int]::text AS last_id,
            coalesce(json_agg(${auditRowJsonSql('a')} ORDER BY a.id DESC) FILTER (WHERE a.n <= $1::int), '[]')::text AS entries
       FROM (SELECT *, row_number() OVER (ORDER BY id DESC) AS n
               FROM (SELECT * FROM call_center_audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $1::int + 1) page) a`;
  return { text, values };
}

export async function auditPage(pool: pg.Pool, q: AuditPageQuery): Promise<AuditPage> {
  const { text, values } = auditPageSql(q);
  const { rows } = await pool.query<{ fetched: number; last_id: string | null; entries: string }>(text, values);
  const row = rows[0]!;
  return { entriesJson: row.entries, nextBeforeId: row.fetched > q.limit ? row.last_id : null, empty: row.fetched === 0 };
}

export interface HourlyChanges {
  /** Start of the first hour (UTC, on the hour); the last of the `hours` buckets is the hour in progress. */
  start: string;
  parks: { park_id: string; changes: number[]; total: number }[];
}

/**
 * Changes made in the call center (applied rows; an adoption changes nothing there) per park and hour, for the
 * last `hours` hours including the current one. The time bound is what the brin index on `at` answers.
 */
export async function hourlyChanges(pool: pg.Pool, hours: number): Promise<HourlyChanges> {
  const { rows } = await pool.query<{ start: string; parks: { park_id: string; buckets: [number, number][] }[] | null }>(
    `WITH bounds AS (SELECT date_trunc('hour', now(), 'UTC') - make_interval(hours => $1::int - 1) AS start),
          counted AS (
            SELECT a.park_id, floor(extract(epoch FROM a.at - b.start) / 3600)::int AS slot, count(*)::int AS n
              FROM call_center_audit a, bounds b
             WHERE a.at >= b.start AND a.outcome = 'applied' AND a.action <> 'adopt'
             GROUP BY 1, 2)
     SELECT ${isoSql('(SELECT start FROM bounds)')} AS start,
            (SELECT json_agg(json_build_object('park_id', park_id, 'buckets', buckets) ORDER BY park_id)
               FROM (SELECT park_id, json_agg(json_build_array(slot, n)) AS buckets FROM counted GROUP BY park_id) per_park) AS parks`,
    [hours],
  );
  const row = rows[0]!;
  return {
    start: row.start,
    parks: (row.parks ?? []).map(({ park_id, buckets }) => {
      const changes = new Array<number>(hours).fill(0);
      // A row stamped after now() (another transaction's clock_timestamp) belongs to the current hour.
      for (const [slot, n] of buckets) changes[Math.min(Math.max(slot, 0), hours - 1)]! += n;
      return { park_id, changes, total: changes.reduce((a, b) => a + b, 0) };
    }),
  };
}
