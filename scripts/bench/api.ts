// Benchmark of the api (npm run bench:api): users/list pages and park/on toggles against a seeded park of 100,000 users.
// Uses DATABASE_URL if set, else starts scripts/services; works in a throwaway database it drops at the end.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { request } from 'undici';
import { startApi } from '../../api/main.js';
import { loadConfig } from '../../connector/config.js';
import { migrate } from '../../connector/db/migrate.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { ensureServices } from './common.js';

const USERS = 100_000;
const PAGE = 100;
const DURATION_S = 10;
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
  requests: Array<{ method: string; path: string; headers: Record<string, string>; body: string }>;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

/**
 * Runs one load and prints it. The api's event-loop busy time per request is printed too: on a shared machine the
 * requests/s say how much CPU the benchmark got, the busy time says what one request costs the api.
 */
async function measure(name: string, options: Parameters<Autocannon>[0]): Promise<void> {
  const before = performance.eventLoopUtilization();
  const r = await autocannon(options);
  const elu = performance.eventLoopUtilization(before);
  console.log(
    `${name}: ${r.requests.total} requests in ${DURATION_S} s; req/s mean ${r.requests.mean.toFixed(0)} median ${r.requests.p50.toFixed(0)}; ` +
      `latency p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms; non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}; ` +
      `api event loop ${(elu.utilization * 100).toFixed(0)}% busy, ${(elu.active / Math.max(1, r.requests.total)).toFixed(2)} ms a request`,
  );
}

async function main(): Promise<void> {
  const { databaseUrl, kafkaBrokers } = ensureServices();
  const dbName = `fs_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  const url = new URL(databaseUrl);
  url.pathname = `/${dbName}`;
  const log = createLogger('warn');
  let api: Awaited<ReturnType<typeof startApi>> | undefined;
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
      API_TOKENS: `${TOKEN}=sync:write,users:read`,
      // The benchmark measures the api, not the rate limit.
      API_RATE_LIMIT_PER_MINUTE: '100000000',
      LOG_LEVEL: 'warn',
    });
    api = await startApi({ config, log, metrics: createMetrics() });
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

    await measure('users/list (pages of 100)', {
      url: api.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      workers: 1,
      requests: pages.map((body) => ({ method: 'POST', path: '/v1/users/list', headers, body })),
    });

    const mapping = (callCenterRole: string) =>
      JSON.stringify({ park_id: PARK, project_id: 'bench-project', roles: [{ role_id: 'bench-op', call_center_role_id: callCenterRole }, { role_id: 'bench-admin', call_center_role_id: 'cc-admin' }] });
    await measure('park/on (alternating two mappings)', {
      url: api.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      workers: 1,
      requests: [mapping('cc-op-a'), mapping('cc-op-b')].map((body) => ({ method: 'POST', path: '/v1/sync/call_center/park/on', headers, body })),
    });
  } finally {
    await api?.close();
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
