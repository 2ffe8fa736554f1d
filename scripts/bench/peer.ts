// npm run bench:peer [-- --users 300000 --peers 3.6.1,2.7.3 --tx-rows 1-100,1 --server-users 30000 --no-server
//                        --node-arg=--cpu-prof ...]
// fleet-sync's source against Debezium's PostgreSQL connector, side by side on the same PostgreSQL, the same broker
// and the same backlog: N users inserted while every connector is stopped, then each connector drains its own slot's
// copy of that backlog in its own process. Each workload (--tx-rows: transactions of 1-100 rows, and of one row, the
// dispatcher's own pattern) gets ROUNDS backlogs; in odd rounds fleet-sync drains first and the peers after it, in
// even rounds the other way round. Each run is measured the same way, by reading its topic afterwards: records
// between the first and the last record's timestamp (changes/s), the first record's timestamp less the process's
// start (time to first record), and the process's peak RSS (VmHWM).
//
// The peers (--peers) are Debezium releases on Kafka Connect standalone workers of their own line (PEERS in
// debezium.ts: 3.6.1 on Connect 4.1.1 with Java 21+, 2.7.3 on Connect 3.9.1), configured for throughput as an
// operator would, the same for both: pgoutput, its own slot and publication on `users`, JSON values without schemas,
// acks=all with idempotence, producer batching as the worker's `producer.*` settings (linger.ms, batch.size, 5
// requests in flight; peerProducer), and a larger max.batch.size / max.queue.size than Debezium's defaults (2,048 /
// 8,192; PEER_CONNECTOR). Debezium Server's Kafka sink waits for each record's acknowledgement (DBZ-7575), so it is
// measured on its own smaller backlog and not in the ratio.
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
import { PEER_CONNECTOR, PEERS, javaFor, peerProducer, startConnect, startServer, type Java, type Peer, type PeerRun } from './debezium.js';

const { values: args } = parseArgs({
  options: {
    users: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '2' },
    // Debezium releases to measure, by PEERS' names; the first is the one the target is set against.
    peers: { type: 'string', default: '3.6.1,2.7.3' },
    // The workloads: rows per transaction, a range drawn at random for each transaction ("1-100") or a count ("1").
    'tx-rows': { type: 'string', default: '1-100,1' },
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
const TARGET = 5;

/** Rows per transaction of a backlog: each transaction draws its size from min..max. */
interface Workload {
  label: string;
  min: number;
  max: number;
}

function parseWorkload(spec: string): Workload {
  const m = /^(\d+)(?:-(\d+))?$/.exec(spec.trim());
  const min = Number(m?.[1]);
  const max = Number(m?.[2] ?? m?.[1]);
  if (!m || min < 1 || max < min) throw new Error(`--tx-rows ${spec}: a count of rows per transaction ("1") or a range ("1-100")`);
  return { label: min === max ? `${min}-row transactions` : `transactions of ${min}-${max} rows`, min, max };
}
const WORKLOADS = args['tx-rows'].split(',').map(parseWorkload);

const SELECTED: Peer[] = args.peers.split(',').map((name) => {
  const peer = PEERS[name.trim()];
  if (!peer) throw new Error(`--peers ${args.peers}: no peer ${name}; known: ${Object.keys(PEERS).join(', ')}`);
  return peer;
});
// Fails before anything is set up when a peer has no Java it can run on.
const JAVA = new Map(SELECTED.map((p) => [p, javaFor(p)] as const));
const SERVER_PEER = PEERS['2.7.3']!;
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
  workload: Workload;
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

// One CALL commits the whole backlog, a transaction at a time (a procedure may COMMIT since PostgreSQL 11): no round
// trip per transaction, so 300,000 one-row transactions take seconds, not minutes.
const INSERT_BACKLOG = `
  CREATE PROCEDURE bench_insert_users(n int, min_rows int, max_rows int) LANGUAGE plpgsql AS $$
  DECLARE
    written int := 0;
    size int;
  BEGIN
    WHILE written < n LOOP
      size := least(min_rows + floor(random() * (max_rows - min_rows + 1))::int, n - written);
      INSERT INTO users (id, park_id, login, name) SELECT gen_random_uuid(), 'p1', 'l', 'n' FROM generate_series(1, size);
      written := written + size;
      COMMIT;
    END LOOP;
  END $$`;

/** N users of park p1, committed in transactions of the workload's sizes; returns the WAL position after the last. */
async function insertBacklog(n: number, workload: Workload): Promise<string> {
  await pool.query(`CALL bench_insert_users(${Math.trunc(n)}, ${workload.min}, ${workload.max})`);
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
  workload: Workload,
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
    workload,
    who,
    records,
    changesPerS: records > 1 && lastMs > firstMs ? ((records - 1) * 1000) / (lastMs - firstMs) : NaN,
    firstRecordS: (firstMs - startedMs) / 1000,
    drainS,
    peakRssMb: peakRssKb / 1024,
  };
  console.log(
    `  ${round > 0 ? `round ${round}` : 'alone  '}  ${who.padEnd(34)} ${fmt(run.records).padStart(9)} records  ${fmt(run.changesPerS).padStart(7)} changes/s  ` +
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

const range = (values: number[], digits = 0) => {
  const lo = fmt(Math.min(...values), digits);
  const hi = fmt(Math.max(...values), digits);
  return lo === hi ? lo : `${lo}-${hi}`;
};

/** One table per workload: each connector's changes/s per round, its median, fleet-sync's ratio to it, RSS, start. */
function printSummary(runs: Run[], contenders: string[]) {
  for (const workload of WORKLOADS) {
    const of = (who: string) => runs.filter((r) => r.workload === workload && r.who === who);
    const ours = median(of('fleet-sync').map((r) => r.changesPerS));
    console.log(`\n${workload.label}, ${fmt(N)} changes a round (target: fleet-sync >= ${TARGET}x Debezium ${SELECTED[0]!.name}):`);
    console.log('| connector | changes/s per round | median | fleet-sync / it | peak RSS, MB | first record after, s |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const who of contenders) {
      const mine = of(who);
      if (mine.length === 0) continue;
      const m = median(mine.map((r) => r.changesPerS));
      const ratio = who === 'fleet-sync' ? '' : `${fmt(ours / m, 2)}x`;
      console.log(
        `| ${who} | ${mine.map((r) => fmt(r.changesPerS)).join(' / ')} | ${fmt(m)} | ${ratio} | ` +
          `${range(mine.map((r) => r.peakRssMb))} | ${range(mine.map((r) => r.firstRecordS), 1)} |`,
      );
    }
  }
}

let failed = false;
try {
  const fetch = (...what: string[]) => execFileSync(FETCH, what, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const jars = new Map(SELECTED.map((p) => [p, fetch('connect', p.debezium, p.connect)] as const));
  const serverDist = args['no-server'] ? '' : fetch('server', SERVER_PEER.debezium);
  await admin.connect();
  await pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);
  await pool.query(INSERT_BACKLOG);

  // fleet-sync's first start: snapshot of the empty tables, slot, publication and topics; stopped before the backlog.
  const first = startSource({ config, log, metrics: createMetrics({ defaultMetrics: false }) });
  await waitUntil(async () => (await pool.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [dbName])).rows[0]?.active === true);
  await first.stop();
  const slotOf = (p: Peer) => `${dbName}_dbz${p.name.replaceAll('.', '')}`;
  for (const p of SELECTED) await peerSlot(slotOf(p));

  console.log(
    `bench:peer  (${fmt(N)} users inserted per backlog; workloads: ${WORKLOADS.map((w) => w.label).join(', ')}; ` +
      `PostgreSQL -> Kafka, ${config.TOPIC_PARTITIONS} partitions, acks=all)`,
  );
  console.log(`  fleet-sync: source process as bench:source starts it, Avro values, ${config.CDC_EXACTLY_ONCE ? 'a Kafka transaction per batch (exactly once)' : 'idempotent producer'}`);
  for (const p of SELECTED) {
    const java = JAVA.get(p)!;
    console.log(`  Debezium ${p.debezium} on a Kafka Connect ${p.connect} standalone worker, Java ${java.version} (${java.bin})`);
  }
  console.log(
    `  each Debezium: pgoutput, JSON values without schemas, ` +
      `producer ${Object.entries(peerProducer(args['peer-compression'])).map(([k, v]) => `${k}=${v}`).join(' ')}, ` +
      `connector ${Object.entries(PEER_CONNECTOR).map(([k, v]) => `${k}=${v}`).join(' ')}, heap -Xmx2G`,
  );
  console.log('  measured from each topic: records between the first and last record timestamps; first record after the process started; load = 1-minute load average of the machine after the run');
  const runs: Run[] = [];
  const who = (p: Peer) => `Debezium ${p.name} on Connect ${p.connect}`;
  const fleetSync = (round: number, workload: Workload, endLsn: string) => () =>
    measure(round, workload, 'fleet-sync', topicFor(dbName, 'users'), N, startFleetSync, () => slotConfirmed(dbName, endLsn), 600);
  const connect = (p: Peer, round: number, workload: Workload) => () => {
    const topic = topicFor(slotOf(p), 'users');
    return measure(round, workload, who(p), topic, N, () => startConnect(p, JAVA.get(p)!, jars.get(p)!, peerRun(slotOf(p)), args['peer-compression']), async (from) => {
      return sum(await highWatermarks(admin, topic)) - sum(from) >= BigInt(N);
    }, 900);
  };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const workload of WORKLOADS) {
      process.stderr.write(`round ${round}, ${workload.label}: committing ${fmt(N)} users...\n`);
      const endLsn = await insertBacklog(N, workload);
      console.log(` ${workload.label}:`);
      const order = [fleetSync(round, workload, endLsn), ...SELECTED.map((p) => connect(p, round, workload))];
      if (round % 2 === 0) order.reverse();
      for (const run of order) runs.push(await run());
    }
  }
  printSummary(runs, ['fleet-sync', ...SELECTED.map(who)]);

  if (!args['no-server']) {
    const server = `${dbName}_server`;
    await peerSlot(server);
    process.stderr.write(`Debezium Server: committing ${fmt(SERVER_N)} users...\n`);
    const workload = WORKLOADS[0]!;
    await insertBacklog(SERVER_N, workload);
    const topic = topicFor(server, 'users');
    const java: Java = JAVA.get(SERVER_PEER) ?? javaFor(SERVER_PEER);
    console.log('');
    await measure(0, workload, 'Debezium Server (Kafka sink)', topic, SERVER_N, () => startServer(java, serverDist, peerRun(server)), async (from) => {
      return sum(await highWatermarks(admin, topic)) - sum(from) >= BigInt(SERVER_N);
    }, 900);
    console.log(
      `    (Debezium Server ${SERVER_PEER.debezium}, Kafka sink with linger.ms=0, acks=all: it waits for each record's acknowledgement; ` +
        `its own ${fmt(SERVER_N)}-user backlog of ${workload.label}, not in the ratio)`,
    );
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
