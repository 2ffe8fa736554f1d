// npm run bench:source [-- --changes 1000000 --latency-seconds 20 --rate 1000 --node-arg=--cpu-prof ...]
// 1. Throughput: N row changes (transactions of 1–100 rows) committed while the source is stopped, then the
//    source (its own process) drains them; changes/s until the slot confirms the last one, and the process's peak RSS.
// 2. Latency: the source in this process at a fixed rate; commit → Kafka acknowledgement, p50 / p99.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadSchemaRegistry } from '../../connector/avro/registry.js';
import { loadConfig } from '../../connector/config.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { createKafkaPublisher, type Publisher } from '../../connector/source/publisher.js';
import { startSource } from '../../connector/source/source.js';
import { ensureServices, fmt, freshDatabase, percentile, stageEnv } from './common.js';

const { values: args } = parseArgs({
  options: {
    changes: { type: 'string', default: '1000000' },
    'latency-seconds': { type: 'string', default: '20' },
    rate: { type: 'string', default: '1000' },
    // Passed to the source child process, e.g. --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof.
    'node-arg': { type: 'string', multiple: true, default: [] },
  },
});
const N = Number(args.changes);
const RATE = Number(args.rate);
const LATENCY_S = Number(args['latency-seconds']);
const BIN = fileURLToPath(new URL('../../bin/fleet-sync.js', import.meta.url));

const { databaseUrl, kafkaBrokers } = ensureServices();
const dbName = `bench_source_${Date.now().toString(36)}`;
const db = await freshDatabase(databaseUrl, dbName);
const pool = new pg.Pool({ connectionString: db.url, max: 4 });
const env = stageEnv(db.url, kafkaBrokers, dbName);
const config = loadConfig(env);
const log = createLogger('warn');

const slotRow = async () =>
  (await pool.query('SELECT active, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [dbName])).rows[0] as
    | { active: boolean; lsn: string }
    | undefined;
const waitUntil = async (check: () => Promise<boolean>, intervalMs = 20) => {
  while (!(await check())) await new Promise((r) => setTimeout(r, intervalMs));
};

try {
  await pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);
  // First start: snapshot of the empty tables, slot created; then stop so the burst waits in the slot.
  const first = startSource({ config, log, metrics: createMetrics({ defaultMetrics: false }) });
  await waitUntil(async () => (await slotRow())?.active === true);
  await first.stop();

  process.stderr.write(`committing ${fmt(N)} changes in transactions of 1-100 rows...\n`);
  const ids: string[] = [];
  let written = 0;
  const client = await pool.connect();
  while (written < N) {
    const size = Math.min(1 + Math.floor(Math.random() * 100), N - written);
    const inserts = ids.length < 1000 ? size : Math.ceil(size / 2);
    await client.query('BEGIN');
    const newIds = Array.from({ length: inserts }, () => randomUUID());
    await client.query(`INSERT INTO users (id, park_id, login, name) SELECT id::uuid, 'p1', 'l', 'n' FROM unnest($1::text[]) AS t(id)`, [newIds]);
    ids.push(...newIds);
    if (size > inserts) {
      const start = Math.floor(Math.random() * (ids.length - (size - inserts)));
      await client.query(`UPDATE users SET name = name || 'x' WHERE id = ANY($1::uuid[])`, [ids.slice(start, start + size - inserts)]);
    }
    await client.query('COMMIT');
    written += size;
  }
  client.release();
  const endLsn = (await pool.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string;

  const started = Date.now();
  const child = spawn(process.execPath, [...args['node-arg'], BIN, 'source'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  let peakRssKb = 0;
  const rssTimer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakRssKb = Math.max(peakRssKb, Number(m[1]));
    } catch {
      /* process gone */
    }
  }, 200);
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`the source exited with ${child.exitCode} before confirming the burst`);
    return (await pool.query('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [dbName, endLsn])).rows[0]?.ok === true;
  }, 50);
  const seconds = (Date.now() - started) / 1000;
  clearInterval(rssTimer);
  // CPU the source used (user + system, start-up included): steadier than changes/s on a shared machine.
  let cpuSeconds = NaN;
  try {
    const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    cpuSeconds = (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100 on Linux)
  } catch {
    /* not Linux */
  }
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));

  // Latency at a fixed rate: the publisher is wrapped to note when Kafka acknowledged each change.
  const registry = loadSchemaRegistry();
  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  const kafka = createKafkaPublisher({ config, log });
  const timed: Publisher = {
    ensureTopics: () => kafka.ensureTopics(),
    close: () => kafka.close(),
    lastMark: () => kafka.lastMark(),
    async publish(records, mark, signal) {
      await kafka.publish(records, mark, signal);
      const now = performance.now();
      for (const r of records) {
        if (!r.value) continue;
        const login = (registry.decode<{ after: { login: string } | null }>(r.value).value.after?.login) ?? '';
        const t = committedAt.get(login);
        if (t !== undefined) latencies.push(now - t);
      }
    },
  };
  const live = startSource({ config, log, metrics: createMetrics({ defaultMetrics: false }), publisher: timed });
  await waitUntil(async () => (await slotRow())?.active === true);
  // Warm-up: a new session first re-decodes the WAL from the slot's restart_lsn (here, most of the burst above)
  // before it streams anything new, ~0.5 s that is start-up, not the steady-state latency measured below.
  committedAt.set('lat-warmup', performance.now());
  await pool.query(`INSERT INTO users (park_id, login, name) VALUES ('p1', 'lat-warmup', 'n')`);
  await waitUntil(async () => latencies.length > 0);
  latencies.length = 0;
  const perTx = 10;
  const txPerSecond = RATE / perTx;
  const total = Math.round(txPerSecond * LATENCY_S);
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / txPerSecond;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const logins = Array.from({ length: perTx }, (_, k) => `lat-${i}-${k}`);
    // Noted when the INSERT is sent (its commit is a little later, so this errs long): a source that publishes
    // before the commit's answer reaches this loop would otherwise find no time for the change, and the wait below
    // would never end.
    const at = performance.now();
    for (const l of logins) committedAt.set(l, at);
    await pool.query(`INSERT INTO users (park_id, login, name) SELECT 'p1', l, 'n' FROM unnest($1::text[]) AS t(l)`, [logins]);
  }
  await waitUntil(async () => latencies.length >= total * perTx);
  await live.stop();
  latencies.sort((a, b) => a - b);

  console.log(`bench:source  (PostgreSQL -> Kafka, ${config.TOPIC_PARTITIONS} partitions, acks=all, ${config.CDC_EXACTLY_ONCE ? "a Kafka transaction per batch (exactly once)" : "idempotent producer"})`);
  console.log(`  throughput: ${fmt(N)} changes in ${fmt(seconds, 1)} s = ${fmt(N / seconds)} changes/s sustained (target >= 90,000)`);
  console.log(`  CPU of the source process: ${fmt(cpuSeconds, 1)} s = ${fmt((cpuSeconds * 1e6) / N, 1)} µs per change (start-up included)`);
  console.log(`  peak RSS of the source process: ${fmt(peakRssKb / 1024)} MB through the ${fmt(N)}-change burst (target <= 256)`);
  console.log(
    `  latency commit -> Kafka ack at ${fmt(RATE)} changes/s for ${LATENCY_S} s (${fmt(latencies.length)} changes): p50 ${fmt(percentile(latencies, 50), 1)} ms, p99 ${fmt(percentile(latencies, 99), 1)} ms, max ${fmt(latencies.at(-1)!, 1)} ms (target p99 <= 50)`,
  );
} catch (e) {
  console.error('bench:source failed:', e);
  process.exitCode = 1;
} finally {
  await pool.end();
  await db.drop().catch((e: Error) => console.error(`could not drop ${dbName}: ${e.message}`));
}
