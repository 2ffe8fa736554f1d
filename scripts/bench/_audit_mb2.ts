import pg from 'pg';
import { freshDatabase } from './common.js';
import { auditPayload, insertAuditSql, type AuditEntry } from '../../connector/audit/trail.js';
const db = await freshDatabase(process.env.DATABASE_URL!, `mb_${Date.now().toString(36)}`);
const pool = new pg.Pool({ connectionString: db.url, max: 1 });
const N = 256;
const cause = (i: number) => ({ kind: 'event' as const, events: [{ topic: 'fleet.public.users', partition: i % 6, offset: String(i * 7), lsn: '00000000/07E25268', tx_id: 812 + i, commit_ts: new Date().toISOString(), op: 'u', park_id: 'p1', role_id: 'r2', user_id: '00000000-0000-4000-8000-000000000008' }] });
let round = 0;
const entries = () => Array.from({ length: N }, (_, i): AuditEntry => ({ projectId: 'proj-1', uid: `tp-${++round}`, parkId: 'p1', action: 'roles', rolesBefore: i % 3 ? ['cc-1'] : null, rolesAfter: ['cc-2'], outcome: 'applied', cause: cause(i) }));
async function time(label: string, sql: string, rounds = 80) {
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) await pool.query(sql, [auditPayload(entries())]);
  console.log(`${label}: ${((performance.now() - t0) / rounds).toFixed(2)} ms per ${N}`);
}
const COLS = 'project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause';
const typed = (fn: string, cast: string) => `INSERT INTO call_center_audit (${COLS}) SELECT ${COLS} FROM ${fn}($1::${cast}) AS a(project_id text, uid text, park_id text, action text, roles_before text[], roles_after text[], outcome text, error text, cause_kind text, cause jsonb)`;
const populate = `INSERT INTO call_center_audit (${COLS}) SELECT ${COLS} FROM jsonb_populate_recordset(NULL::call_center_audit, $1::jsonb)`;
const parseOnly = `SELECT count(*) FROM jsonb_to_recordset($1::jsonb) AS a(project_id text, uid text, park_id text, action text, roles_before text[], roles_after text[], outcome text, error text, cause_kind text, cause jsonb)`;
const castOnly = `SELECT length($1::jsonb::text)`;
for (let k = 0; k < 2; k++) {
  await time('parse only (jsonb_to_recordset, no insert)', parseOnly);
  await time('cast to jsonb only', castOnly);
  await time('SELECT 1 with the payload', 'SELECT length($1)');
  await time('current (ARRAY subqueries)', insertAuditSql('$1'));
  await time('jsonb_to_recordset, text[] columns', typed('jsonb_to_recordset', 'jsonb'));
  await time('json_to_recordset, text[] columns', typed('json_to_recordset', 'json'));
  await time('jsonb_populate_recordset', populate);
}
const check = await pool.query(`SELECT roles_before, roles_after, cause->'events'->0->>'op' AS op FROM call_center_audit ORDER BY id DESC LIMIT 3`);
console.log(check.rows);
await pool.end();
await db.drop();
