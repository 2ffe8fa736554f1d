// npm run bench:peer [-- --users 300000 --server-users 30000 --no-server --node-arg=--cpu-prof ...]
// fleet-sync's source against Debezium's PostgreSQL connector, side by side on the same PostgreSQL, the same broker
// and the same backlog: N users inserted (transactions of 1-100 rows) while every connector is stopped, then each
// connector drains its own slot's copy of that backlog in its own process. Round 1: fleet-sync, then the peer; a new
// backlog; round 2: the peer, then fleet-sync. Each run is measured the same way, by reading its topic afterwards:
// records between the first and the last record's timestamp (changes/s), the first record's timestamp less the
// process's start (time to first record), and the process's peak RSS (VmHWM).
//
// The peer that counts is Debezium 2.7 on a Kafka Connect standalone worker (scripts/debezium/pom.xml), configured
// for throughput as an operator would (debezium.ts): pgoutput, its own slot and publication on `users`, JSON values
// without schemas, acks=all with idempotence, producer batching as the worker's `producer.*` settings (linger.ms,
// batch.size, 5 requests in flight; peerProducer), and a larger max.batch.size / max.queue.size than Debezium's
// defaults (2,048 / 8,192; PEER_CONNECTOR). Debezium Server's Kafka sink waits for each record's acknowledgement
// (DBZ-7575), so it is measured on its own smaller backlog and not in the ratio.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { Admin } from 'kafkajs';
import { loadConfig } from '../../connector/config.js';
import { createKafka } from '../../connector/kafka/client.js';
import { ensureTopics } from '../../connector/kafka/topics.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { startSource } from '../../connector/source/source.js';
import { topicFor } from '../../connector/events.js';
import { ensureServices, fmt, freshDatabase, stageEnv } from './common.js';
import { PEER_CONNECTOR, peerProducer, startConnect, startServer, type PeerRun } from './debezium.js';

const { values: args } = parseArgs({
  options: {
    users: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '2' },
    // Debezium Server drains a few thousand changes/s: its own, smaller backlog.
    'server-users': { type: 'string', default: '30000' },
    'no-server': { type: 'boolean', default: false },
    // Keeps the connectors' configuration and logs (in a temporary folder, printed) after a successful run.
    'keep-logs': { type: 'boolean', default: false },
    // Producer compression of the Connect worker (none, lz4, zstd, ...). In one try side by side, lz4 drained 300k
    // changes no faster (29.4 and 24.0 s from the JVM's start, against 26.0 and 19.8 s without) on this machine,
    // where the broker shares the two cores. The topic reader below has no kafkajs codec but gzip's: it stops on others.
    'peer-compression': { type: 'string', default: 'none' },
    // Passed to the fleet-sync source process, e.g. --node-arg=--cpu-prof --node-arg=--cpu-prof-dir=/tmp/prof.
    'node-arg': { type: 'string', multiple: true, default: [] },
  },
});
const N = Number(args.users);
const ROUNDS = Number(args.rounds);
const SERVER_N = Number(args['server-users']);
const BIN = fileURLToPath(new URL('../../bin/fleet-sync.js', import.meta.url));
const FETCH = fileURLToPath(new URL('../debezium/fetch', import.meta.url));

const { databaseUrl, kafkaBrokers } = ensureServices();
const dbName = `bench_peer_${Date.now().toString(36)}`;
const db = await freshDatabase(databaseUrl, dbName);
const pool = new pg.Pool({ connectionString: db.url, max: 4 });
const env = stageEnv(db.url, kafkaBrokers, dbName);
const config = loadConfig(env);
const log = createLogger('warn');
const work = mkdtempSync(join(tmpdir(), `${dbName}-`));
const kafka = createKafka(config, log, '-bench');
const admin = kafka.admin();

interface Run {
  round: number;
  who: string;
  records: number;
  changesPerS: number;
  firstRecordS: number;
  drainS: number;
  peakRssMb: number;
}

const waitUntil = async (check: () => Promise<boolean>, intervalMs = 100) => {
  while (!(await check())) await new Promise((r) => setTimeout(r, intervalMs));
};

/** N users of park p1, committed in transactions of 1-100 rows; returns the WAL position after the last. */
async function insertBacklog(n: number): Promise<string> {
  const client = await pool.connect();
  try {
    for (let written = 0; written < n; ) {
      const size = Math.min(1 + Math.floor(Math.random() * 100), n - written);
      const ids = Array.from({ length: size }, () => randomUUID());
      await client.query(`INSERT INTO users (id, park_id, login, name) SELECT id::uuid, 'p1', 'l', 'n' FROM unnest($1::text[]) AS t(id)`, [ids]);
      written += size;
    }
  } finally {
    client.release();
  }
  return (await pool.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string;
}

async function slotConfirmed(slot: string, lsn: string): Promise<boolean> {
  const { rows } = await pool.query('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [slot, lsn]);
  return rows[0]?.ok === true;
}

async function highWatermarks(a: Admin, topic: string): Promise<Map<number, bigint>> {
  return new Map((await a.fetchTopicOffsets(topic)).map((p) => [p.partition, BigInt(p.high)]));
}
const sum = (m: Map<number, bigint>) => [...m.values()].reduce((a, b) => a + b, 0n);

/** A slot and publication of the peer's own on `users`, created before the backlog so it holds all of it. */
async function peerSlot(name: string) {
  await pool.query(`CREATE PUBLICATION ${name} FOR TABLE users`);
  await pool.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
  await ensureTopics(admin, config, [topicFor(name, 'users')]);
}

/** Reads the records a run added to its topic: how many, and the first and last record timestamps. */
async function readRun(topic: string, from: Map<number, bigint>, expected: number): Promise<{ records: number; firstMs: number; lastMs: number }> {
  const consumer = kafka.consumer({ groupId: `${dbName}-reader-${randomUUID()}`, maxBytes: 16 << 20, maxBytesPerPartition: 4 << 20 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let records = 0;
  let firstMs = Infinity;
  let lastMs = -Infinity;
  let lastProgress = Date.now();
  let crash: Error | null = null;
  consumer.on(consumer.events.CRASH, ({ payload }) => (crash = payload.error));
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const ts = Number(m.timestamp);
        records++;
        if (ts < firstMs) firstMs = ts;
        if (ts > lastMs) lastMs = ts;
      }
      lastProgress = Date.now();
    },
  });
  for (const [partition, offset] of from) consumer.seek({ topic, partition, offset: offset.toString() });
  await waitUntil(async () => records >= expected || crash !== null || Date.now() - lastProgress > 15_000, 100);
  await consumer.disconnect();
  if (crash) throw new Error(`could not read ${topic}: ${(crash as Error).message}`);
  return { records, firstMs, lastMs };
}

/**
 * Starts a connector process, waits until `drained` says its backlog is in Kafka, stops it, then reads what it
 * wrote. `expected` records are looked for in `topic` past the offsets it had before the start.
 */
async function measure(
  round: number,
  who: string,
  topic: string,
  expected: number,
  start: () => Promise<ChildProcess>,
  drained: (from: Map<number, bigint>) => Promise<boolean>,
  timeoutS: number,
): Promise<Run> {
  const from = await highWatermarks(admin, topic);
  const startedMs = Date.now();
  const child = await start();
  let peakRssKb = 0;
  const rssTimer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakRssKb = Math.max(peakRssKb, Number(m[1]));
    } catch {
      /* process gone */
    }
  }, 200);
  try {
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`${who} exited with ${child.exitCode} before draining its backlog (logs in ${work})`);
      if (Date.now() - startedMs > timeoutS * 1000) throw new Error(`${who} did not drain its backlog within ${timeoutS} s (logs in ${work})`);
      return drained(from);
    }, 100);
  } finally {
    clearInterval(rssTimer);
  }
  const drainS = (Date.now() - startedMs) / 1000;
  child.kill('SIGTERM');
  const exited = new Promise((r) => child.once('exit', r));
  const killTimer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(killTimer);
  const { records, firstMs, lastMs } = await readRun(topic, from, expected);
  const run: Run = {
    round,
    who,
    records,
    changesPerS: records > 1 && lastMs > firstMs ? ((records - 1) * 1000) / (lastMs - firstMs) : NaN,
    firstRecordS: (firstMs - startedMs) / 1000,
    drainS,
    peakRssMb: peakRssKb / 1024,
  };
  console.log(
    `  ${round > 0 ? `round ${round}` : 'alone  '}  ${who.padEnd(28)} ${fmt(run.records).padStart(9)} records  ${fmt(run.changesPerS).padStart(7)} changes/s  ` +
      `first record after ${fmt(run.firstRecordS, 1)} s  drained in ${fmt(run.drainS, 1)} s  peak RSS ${fmt(run.peakRssMb)} MB  (load ${fmt(loadavg()[0]!, 1)})`,
  );
  if (records < expected) console.log(`    (${who} wrote ${fmt(records)} of the ${fmt(expected)} changes to ${topic})`);
  return run;
}

const peerRun = (name: string): PeerRun => ({ dir: work, kafkaBrokers, databaseUrl: db.url, name, topics: config });

function logTo(name: string) {
  return createWriteStream(join(work, name), { flags: 'a' });
}

async function startFleetSync(): Promise<ChildProcess> {
  const out = logTo('fleet-sync.log');
  const child = spawn(process.execPath, [...args['node-arg'], BIN, 'source'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  return child;
}

/** The median; the mean of the middle two for an even count. */
function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function printMedians(runs: Run[]) {
  const of = (ours: boolean, pick: (r: Run) => number) => median(runs.filter((r) => (r.who === 'fleet-sync') === ours).map(pick));
  const ours = of(true, (r) => r.changesPerS);
  const theirs = of(false, (r) => r.changesPerS);
  console.log(
    `  medians: fleet-sync ${fmt(ours)} changes/s, ${fmt(of(true, (r) => r.peakRssMb))} MB; ` +
      `Debezium on Kafka Connect ${fmt(theirs)} changes/s, ${fmt(of(false, (r) => r.peakRssMb))} MB ` +
      `-> fleet-sync / Debezium = ${fmt(ours / theirs, 2)}x the throughput (target >= 3)`,
  );
}

let failed = false;
try {
  const connectJars = execFileSync(FETCH, ['connect'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const serverDist = args['no-server'] ? '' : execFileSync(FETCH, ['server'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  await admin.connect();
  await pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);

  // fleet-sync's first start: snapshot of the empty tables, slot, publication and topics; stopped before the backlog.
  const first = startSource({ config, log, metrics: createMetrics({ defaultMetrics: false }) });
  await waitUntil(async () => (await pool.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [dbName])).rows[0]?.active === true);
  await first.stop();
  const peer = `${dbName}_connect`;
  await peerSlot(peer);

  console.log(`bench:peer  (${fmt(N)} users inserted per backlog in transactions of 1-100 rows; PostgreSQL -> Kafka, ${config.TOPIC_PARTITIONS} partitions, acks=all)`);
  console.log(`  fleet-sync: source process as bench:source starts it, Avro values, ${config.CDC_EXACTLY_ONCE ? 'a Kafka transaction per batch (exactly once)' : 'idempotent producer'}`);
  console.log(
    `  Debezium 2.7.3.Final on a Kafka Connect 3.9.1 standalone worker: pgoutput, JSON values without schemas, ` +
      `producer ${Object.entries(peerProducer(args['peer-compression'])).map(([k, v]) => `${k}=${v}`).join(' ')}, ` +
      `connector ${Object.entries(PEER_CONNECTOR).map(([k, v]) => `${k}=${v}`).join(' ')}, heap -Xmx2G`,
  );
  console.log('  measured from each topic: records between the first and last record timestamps; first record after the process started; load = 1-minute load average of the machine after the run');
  const runs: Run[] = [];
  const fleetSync = (round: number, endLsn: string) =>
    measure(round, 'fleet-sync', topicFor(dbName, 'users'), N, startFleetSync, () => slotConfirmed(dbName, endLsn), 600);
  const connect = (round: number) =>
    measure(round, 'Debezium on Kafka Connect', topicFor(peer, 'users'), N, () => startConnect(connectJars, peerRun(peer), args['peer-compression']), async (from) => {
      return sum(await highWatermarks(admin, topicFor(peer, 'users'))) - sum(from) >= BigInt(N);
    }, 900);
  for (let round = 1; round <= ROUNDS; round++) {
    process.stderr.write(`round ${round}: committing ${fmt(N)} users...\n`);
    const endLsn = await insertBacklog(N);
    if (round % 2 === 1) {
      runs.push(await fleetSync(round, endLsn));
      runs.push(await connect(round));
    } else {
      runs.push(await connect(round));
      runs.push(await fleetSync(round, endLsn));
    }
  }
  if (runs.length > 0) printMedians(runs);

  if (!args['no-server']) {
    const server = `${dbName}_server`;
    await peerSlot(server);
    process.stderr.write(`Debezium Server: committing ${fmt(SERVER_N)} users...\n`);
    await insertBacklog(SERVER_N);
    const topic = topicFor(server, 'users');
    await measure(0, 'Debezium Server (Kafka sink)', topic, SERVER_N, () => startServer(serverDist, peerRun(server)), async (from) => {
      return sum(await highWatermarks(admin, topic)) - sum(from) >= BigInt(SERVER_N);
    }, 900);
    console.log(`    (Debezium Server 2.7.3.Final, Kafka sink with linger.ms=0, acks=all: it waits for each record's acknowledgement; its own ${fmt(SERVER_N)}-user backlog, not in the ratio)`);
  }
} catch (e) {
  failed = true;
  console.error('bench:peer failed:', e);
  process.exitCode = 1;
} finally {
  // The bench's topics go with its database.
  const topics = await admin.listTopics().catch(() => [] as string[]);
  await admin.deleteTopics({ topics: topics.filter((t) => t.startsWith(dbName)) }).catch(() => {});
  await admin.disconnect().catch(() => {});
  await pool.end();
  await db.drop().catch((e: Error) => console.error(`could not drop ${dbName}: ${e.message}`));
  if (failed || args['keep-logs']) console.error(`logs kept in ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
