// Benchmark of the api (npm run bench:api [-- --audit-rows N]): users/list pages and park/on toggles against a seeded
// park of 100,000 users; then GET /v1/audit?uid= over an audit trail of N rows (default 10,000,000; 0 skips it).
// Uses DATABASE_URL if set, else starts scripts/services; works in a throwaway database it drops at the end.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { request } from 'undici';
import { auditPageSql } from '../../api/db/audit.js';
import { startApi } from '../../api/main.js';
import { loadConfig } from '../../connector/config.js';
import { migrate } from '../../connector/db/migrate.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { cpuMeter, ensureServices, fmt, median, postgresPids } from './common.js';

const USERS = 100_000;
const PAGE = 100;
const DURATION_S = 10;
// Rounds of the audit phase are shorter: its figure is the median over rounds.
const AUDIT_ROUND_S = 5;
// The audit trail's spread: uids (a tenth of the rows on 2,000 busy ones), projects, parks, days (SPEC retention).
const AUDIT_UIDS = 200_000;
const AUDIT_BUSY_UIDS = 2_000;
const AUDIT_PROJECTS = 50;
const AUDIT_PARKS = 500;
const AUDIT_DAYS = 90;
// autocannon's default: enough to keep the one process busy without measuring a queue.
const CONNECTIONS = 10;
const TOKEN = 'bench-token';
const PARK = 'bench-park';

// autocannon ships no types: this is the part of its API the benchmark uses.
interface AutocannonStats {
  mean: number;
  p50: number;
  p99: number;
}
interface AutocannonResult {
  requests: AutocannonStats & { total: number };
  latency: AutocannonStats;
  non2xx: number;
  errors: number;
  timeouts: number;
}
type Autocannon = (options: {
  url: string;
  connections: number;
  duration: number;
  workers?: number;
  requests: Array<{ method: string; path: string; headers: Record<string, string>; body?: string }>;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

interface Load {
  result: AutocannonResult;
  /** The api's event-loop busy time per request (ms) and share of the load's time busy. */
  busyMsPerRequest: number;
  busyShare: number;
}

/**
 * Runs one load. The api's event-loop busy time per request is measured too: on a shared machine the requests/s say
 * how much CPU the benchmark got, the busy time says what one request costs the api.
 */
async function load(options: Parameters<Autocannon>[0]): Promise<Load> {
  const before = performance.eventLoopUtilization();
  const result = await autocannon(options);
  const elu = performance.eventLoopUtilization(before);
  return { result, busyMsPerRequest: elu.active / Math.max(1, result.requests.total), busyShare: elu.utilization };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds of this process's main thread, the api's event loop (autocannon runs in a worker thread); NaN off Linux. */
function mainThreadCpuSeconds(): number {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    // Fields after the command's closing parenthesis: utime is the 14th field, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Runs one load and prints it, with the CPU a request cost the api's event loop, the rest of this process (the load
 * generator's worker and V8's helper threads) and PostgreSQL: the three share the machine's cores, so the sum says
 * how many requests a second the machine could serve at all.
 */
async function measure(name: string, postgres: () => number[], options: Parameters<Autocannon>[0]): Promise<void> {
  const used = cpuMeter({ postgres }, 'process');
  const apiBefore = mainThreadCpuSeconds();
  const { result: r, busyMsPerRequest, busyShare } = await load(options);
  const api = mainThreadCpuSeconds() - apiBefore;
  const cpu = used();
  const perRequest = (seconds: number) => ((seconds * 1000) / Math.max(1, r.requests.total)).toFixed(2);
  console.log(
    `${name}: ${r.requests.total} requests in ${options.duration} s; req/s mean ${r.requests.mean.toFixed(0)} median ${r.requests.p50.toFixed(0)}; ` +
      `latency p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms; non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}; ` +
      `api event loop ${(busyShare * 100).toFixed(0)}% busy, ${busyMsPerRequest.toFixed(2)} ms a request; ` +
      `CPU a request: api ${perRequest(api)} ms, load generator and helper threads ${perRequest(cpu.process! - api)} ms, ` +
      `PostgreSQL ${perRequest(cpu.postgres!)} ms`,
  );
}

/** Runs the load `rounds` times after a warm-up round, prints each, then the medians over the rounds. */
async function measureRounds(name: string, rounds: number, options: Parameters<Autocannon>[0]): Promise<void> {
  await load({ ...options, duration: 2 });
  const loads: Load[] = [];
  for (let i = 1; i <= rounds; i++) {
    const l = await load(options);
    loads.push(l);
    const r = l.result;
    console.log(
      `  round ${i}: ${r.requests.total} requests; req/s mean ${r.requests.mean.toFixed(0)}; latency p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms; ` +
        `non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`,
    );
  }
  const med = (f: (l: Load) => number) => median(loads.map(f));
  const failed = loads.reduce((a, l) => a + l.result.non2xx + l.result.errors + l.result.timeouts, 0);
  console.log(
    `${name} (medians of ${rounds} rounds of ${options.duration} s): req/s mean ${med((l) => l.result.requests.mean).toFixed(0)}; ` +
      `latency p50 ${med((l) => l.result.latency.p50)} ms p99 ${med((l) => l.result.latency.p99)} ms; non-2xx, errors and timeouts ${failed}; ` +
      `api event loop ${(med((l) => l.busyShare) * 100).toFixed(0)}% busy, ${med((l) => l.busyMsPerRequest).toFixed(2)} ms a request`,
  );
}

/** Distinct causes the trail's rows draw from: building a jsonb per row would cost more than the rest of the row. */
const CAUSE_VARIANTS = 40;

/**
 * An audit trail of `rows` rows in one INSERT … SELECT: timestamps over AUDIT_DAYS days increasing with id, pseudo-random
 * uids (hashint4, so a rerun makes the same trail) with a tenth of the rows on a few busy uids, a uid's park and
 * project fixed by the uid, every action, outcome and cause kind (80% events, 15% sweeps, 3% retries, 2% replays),
 * each cause one of a few thousand built beforehand. The secondary indexes are dropped for the load and built after
 * it from their own definitions, two at a time (building is several times faster than 10 million insertions into
 * three btrees); then ANALYZE.
 */
export async function seedAudit(databaseUrl: string, rows: number): Promise<void> {
  const started = Date.now();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const { rows: indexes } = await db.query<{ name: string; def: string }>(
      `SELECT indexname AS name, indexdef AS def FROM pg_indexes
        WHERE schemaname = 'public' AND tablename = 'call_center_audit' AND indexname <> 'call_center_audit_pkey'
        ORDER BY indexname`,
    );
    for (const i of indexes) await db.query(`DROP INDEX ${i.name}`);
    // Causes by c (0..99, which also decides the kind) and a variant: 100 × CAUSE_VARIANTS of them.
    await db.query(`
      CREATE TEMP TABLE bench_causes AS
      SELECT c * ${CAUSE_VARIANTS} + v AS k, kind,
             CASE kind
               WHEN 'sweep' THEN jsonb_build_object('kind', 'sweep', 'run_id', (1000 + k)::text, 'reason', CASE WHEN v % 4 = 0 THEN 'park_on' ELSE 'interval' END,
                                   'park_id', 'park-' || (k % ${AUDIT_PARKS}))
                                 || CASE WHEN v % 4 = 0 THEN jsonb_build_object('toggle', jsonb_build_object('id', k::text, 'at', '2026-09-01T10:00:00.000Z',
                                      'enabled', true, 'revoke', NULL, 'token_name', 'ops', 'request_id', 'req-' || k)) ELSE '{}' END
               ELSE jsonb_build_object('kind', kind, 'events', jsonb_build_array(jsonb_build_object('topic', 'fleet.public.users', 'partition', k % 6,
                      'offset', (k * 7919)::text, 'lsn', '0/' || upper(to_hex(k::bigint * 977)), 'tx_id', 1000 + k, 'commit_ts', '2026-09-01T10:00:00.000Z',
                      'op', 'u', 'park_id', 'park-' || (k % ${AUDIT_PARKS}), 'role_id', 'r' || (k % 7), 'user_id', md5(k::text)::uuid)))
                    || CASE WHEN kind = 'retry' THEN jsonb_build_object('attempts', 1 + v % 5) ELSE '{}' END
             END AS cause
        FROM (SELECT c, v, c * ${CAUSE_VARIANTS} + v AS k,
                     CASE WHEN c < 80 THEN 'event' WHEN c < 95 THEN 'sweep' WHEN c < 98 THEN 'retry' ELSE 'replay' END AS kind
                FROM generate_series(0, 99) c, generate_series(0, ${CAUSE_VARIANTS - 1}) v) s;
      ANALYZE bench_causes;`);
    await db.query(`
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause)
      SELECT t.at,
             CASE WHEN t.action = 'profile' THEN NULL ELSE 'proj-' || (t.u % ${AUDIT_PROJECTS}) END,
             (1120000000 + t.u)::text, 'park-' || (t.u % ${AUDIT_PARKS}), t.action,
             CASE WHEN t.action = 'profile' OR t.c % 10 = 0 THEN NULL ELSE ARRAY['role-' || ((t.u + t.g) % 7)] END,
             CASE t.action WHEN 'profile' THEN NULL WHEN 'revoke' THEN '{}'::text[] ELSE ARRAY['role-' || (t.u % 7)] END,
             t.outcome,
             CASE WHEN t.outcome <> 'applied' THEN 'CALL_CENTER_TRANSIENT: 503 Service Unavailable' END,
             b.kind, b.cause
        FROM (SELECT g, u, c, at,
                     CASE WHEN g % 100 < 20 THEN 'profile' WHEN g % 100 < 30 THEN 'revoke' WHEN g % 100 < 40 THEN 'adopt' ELSE 'roles' END AS action,
                     CASE WHEN o < 95 THEN 'applied' WHEN o < 98 THEN 'parked' WHEN o < 99 THEN 'dead_lettered' ELSE 'refused' END AS outcome
                FROM (SELECT g,
                             CASE WHEN g % 10 = 0 THEN abs(hashint4(g)) % ${AUDIT_BUSY_UIDS} ELSE abs(hashint4(g)) % ${AUDIT_UIDS} END AS u,
                             abs(hashint4(g + 1000000007)) % 100 AS c,
                             abs(hashint4(g + 2000000011)) % 100 AS o,
                             now() - make_interval(days => ${AUDIT_DAYS}) + make_interval(secs => g * (${AUDIT_DAYS} * 86400.0 / ${rows})) AS at
                        FROM generate_series(1, ${rows}) g) r) t
        JOIN bench_causes b ON b.k = t.c * ${CAUSE_VARIANTS} + t.g % ${CAUSE_VARIANTS}`);
    // No ORDER BY: PostgreSQL does not know generate_series is ordered and would sort 10 million rows. The hash join
    // on the small table streams the series in its order (one batch), so ids follow g; checked on a sample of pairs.
    const { rows: ordered } = await db.query<{ ok: boolean | null }>(
      `SELECT bool_and(a.at <= b.at) AS ok FROM call_center_audit a JOIN call_center_audit b ON b.id = a.id + 1 WHERE a.id IN (SELECT generate_series(1, $1::bigint, 9973))`,
      [rows],
    );
    if (ordered[0]?.ok === false) throw new Error('the audit rows were not inserted in time order: their ids do not follow their times');
    const inserted = Date.now();
    // Two builds at once (a CPU each); the brin index takes a moment, the btrees most of the time.
    const queue = [...indexes];
    await Promise.all(
      [0, 1].map(async () => {
        const c = new pg.Client({ connectionString: databaseUrl });
        await c.connect();
        try {
          await c.query(`SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0`);
          for (let i = queue.shift(); i; i = queue.shift()) await c.query(i.def);
        } finally {
          await c.end();
        }
      }),
    );
    const indexed = Date.now();
    await db.query('ANALYZE call_center_audit');
    const { rows: size } = await db.query<{ bytes: string }>(`SELECT pg_total_relation_size('call_center_audit')::text AS bytes`);
    console.log(
      `seeded ${fmt(rows)} audit rows in ${fmt((Date.now() - started) / 1000, 1)} s (insert ${fmt((inserted - started) / 1000, 1)} s, ` +
        `${indexes.length} indexes ${fmt((indexed - inserted) / 1000, 1)} s, analyze ${fmt((Date.now() - indexed) / 1000, 1)} s); ` +
        `table and indexes ${fmt(Number(size[0]!.bytes) / 2 ** 30, 2)} GiB`,
    );
  } finally {
    await db.end();
  }
}

/** The command line: `--audit-rows N` (0 skips the audit phase), `--audit-rounds N`. */
function options(): { auditRows: number; auditRounds: number } {
  const { values } = parseArgs({
    options: {
      // The audit phase generates its trail first (about two minutes for 10 million rows on 2 cores).
      'audit-rows': { type: 'string', default: '10000000' },
      'audit-rounds': { type: 'string', default: '5' },
    },
  });
  const auditRows = Number(values['audit-rows']);
  const auditRounds = Number(values['audit-rounds']);
  if (!Number.isInteger(auditRows) || auditRows < 0) throw new Error(`--audit-rows must be a whole number (0 skips the audit phase), not ${values['audit-rows']}`);
  if (!Number.isInteger(auditRounds) || auditRounds < 1) throw new Error(`--audit-rounds must be a positive whole number, not ${values['audit-rounds']}`);
  return { auditRows, auditRounds };
}

async function main(): Promise<void> {
  const { auditRows, auditRounds } = options();
  const { databaseUrl, kafkaBrokers } = ensureServices();
  const dbName = `fs_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const url = new URL(databaseUrl);
  url.pathname = `/${dbName}`;
  const log = createLogger('warn');
  let api: Awaited<ReturnType<typeof startApi>> | undefined;
  // One connection, only to find PostgreSQL's processes for the CPU figures.
  const meterPool = new pg.Pool({ connectionString: url.toString(), max: 1 });
  try {
    const db = new pg.Client({ connectionString: url.toString() });
    await db.connect();
    await migrate(db);
    const seeded = Date.now();
    await db.query(`
      INSERT INTO parks (id, name) VALUES ('${PARK}', 'Benchmark park');
      INSERT INTO roles (id, park_id, name) VALUES ('bench-op', '${PARK}', 'operator'), ('bench-admin', '${PARK}', 'admin');
      INSERT INTO users (park_id, yandex_uid, login, name, phone, email, role_id, is_enabled)
        SELECT '${PARK}', 'uid' || i, 'login' || i, 'User ' || i, '+7900' || lpad(i::text, 7, '0'), 'u' || i || '@example.com',
               CASE WHEN i % 2 = 0 THEN 'bench-op' ELSE 'bench-admin' END, i % 50 <> 0
          FROM generate_series(1, ${USERS}) i;
      ANALYZE users;`);
    await db.end();
    console.log(`seeded ${USERS} users in ${Date.now() - seeded} ms`);

    const config = loadConfig({
      DATABASE_URL: url.toString(),
      KAFKA_BROKERS: kafkaBrokers,
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      API_TOKENS: `${TOKEN}=sync:write,users:read,audit:read`,
      // The benchmark measures the api, not the rate limit.
      API_RATE_LIMIT_PER_MINUTE: '100000000',
      LOG_LEVEL: 'warn',
    });
    api = await startApi({ config, log, metrics: createMetrics() });
    const postgres = await postgresPids(meterPool);
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

    // Real cursors from one walk of the park, so the load reads pages all over the index, not only the first.
    const bodies: string[] = [JSON.stringify({ park_id: PARK, limit: PAGE })];
    let cursor: string | undefined;
    do {
      const body = JSON.stringify({ park_id: PARK, limit: PAGE, ...(cursor ? { cursor } : {}) });
      const res = await request(`${api.url}/v1/users/list`, { method: 'POST', headers, body });
      const page = (await res.body.json()) as { cursor?: string };
      cursor = page.cursor;
      if (cursor) bodies.push(JSON.stringify({ park_id: PARK, limit: PAGE, cursor }));
    } while (cursor);
    console.log(`walked ${bodies.length} pages of ${PAGE}`);
    const pages = bodies.filter((_, i) => i % 10 === 0); // 100 pages spread over the park

    await measure('users/list (pages of 100)', postgres, {
      url: api.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      workers: 1,
      requests: pages.map((body) => ({ method: 'POST', path: '/v1/users/list', headers, body })),
    });

    const mapping = (callCenterRole: string) =>
      JSON.stringify({ park_id: PARK, project_id: 'bench-project', roles: [{ role_id: 'bench-op', call_center_role_id: callCenterRole }, { role_id: 'bench-admin', call_center_role_id: 'cc-admin' }] });
    await measure('park/on (alternating two mappings)', postgres, {
      url: api.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      workers: 1,
      requests: [mapping('cc-op-a'), mapping('cc-op-b')].map((body) => ({ method: 'POST', path: '/v1/sync/call_center/park/on', headers, body })),
    });

    if (auditRows > 0) await auditPhase(url.toString(), api.url, { authorization: headers.authorization }, auditRows, auditRounds);
    else console.log('audit phase skipped (--audit-rows 0)');
  } finally {
    await api?.close();
    await meterPool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }
}

/** GET /v1/audit?uid= for random existing uids over a trail of `rows` rows: its plan, then the load by rounds. */
async function auditPhase(databaseUrl: string, apiUrl: string, headers: Record<string, string>, rows: number, rounds: number): Promise<void> {
  await seedAudit(databaseUrl, rows);
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    // Existing uids, drawn from random blocks of the table.
    const { rows: sampled } = await db.query<{ uid: string }>(
      `SELECT uid FROM (SELECT DISTINCT uid FROM call_center_audit TABLESAMPLE SYSTEM (0.2) REPEATABLE (7)) u ORDER BY md5(uid) LIMIT 2000`,
    );
    const uids = sampled.map((r) => r.uid);
    const page = auditPageSql({ uid: uids[0]!, projectId: null, parkId: null, since: null, until: null, beforeId: null, limit: 100 });
    const plan = await db.query(`EXPLAIN ${page.text}`, page.values);
    const scan = plan.rows.map((r: Record<string, string>) => r['QUERY PLAN']!.trim()).filter((line) => /Scan/.test(line));
    console.log(`plan of a page by uid: ${scan.join(' ← ')}`);
    const hourly: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const res = await request(`${apiUrl}/v1/audit/hourly?hours=24`, { headers });
      await res.body.dump();
      hourly.push(performance.now() - t);
    }
    console.log(`audit/hourly (24 h, one request at a time): median ${fmt(median(hourly), 1)} ms of 5`);
    const requests = uids.map((uid) => ({ method: 'GET', path: `/v1/audit?uid=${encodeURIComponent(uid)}`, headers }));
    const name = `audit?uid= (${fmt(uids.length)} random uids of ${fmt(rows)} rows, pages of 100)`;
    // As the other phases load the api (10 connections, saturating it), then one request at a time: on 2 cores shared
    // by the load generator, the api and PostgreSQL the first is mostly queueing, the second what one request takes.
    await measureRounds(`${name} at ${CONNECTIONS} connections`, rounds, { url: apiUrl, connections: CONNECTIONS, duration: AUDIT_ROUND_S, workers: 1, requests });
    await measureRounds(`${name} at 1 connection`, rounds, { url: apiUrl, connections: 1, duration: AUDIT_ROUND_S, workers: 1, requests });
  } finally {
    await db.end();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
