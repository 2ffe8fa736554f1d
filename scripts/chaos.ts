// `npm run chaos [-- --cycles N --users N --cycle-seconds S]`: fleet-sync under the faults production meets, then
// checked. On services of its own (scripts/services in .services/chaos): a fleet of parks in two projects, a
// steady write load, two sources (one stands by) and two sink members as processes, the call center failing 30%
// of calls with 5xx and 429 throughout. Each cycle kills a random stage with -9 (and starts it again, as a
// supervisor would); every 5th cycle the broker is killed with -9 and restarted with its data, every 7th
// PostgreSQL stops in immediate mode and starts again. At the end the load stops and it checks: the call center
// equals the database by SPEC §5 for every user of every enabled park, no committed change is missing from Kafka,
// none was streamed twice, and no dead letter beyond the injected bad message. Exits 1 when a check fails.
//
// `npm run chaos -- --model [--seeds N | --seed S [--path P --replay-path R]]`: the model test of who holds which
// call-center role (scripts/lib/model.ts), on the services DATABASE_URL and KAFKA_BROKERS name (else
// `scripts/services up`). Each seed is a generated sequence of operations and faults, checked against SPEC §5;
// a failing seed is shrunk within --shrink-s and printed with the command that replays it. Exits 1 when one fails.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomInt, randomUUID } from 'node:crypto';
import { appendFileSync, closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { Kafka, logLevel, type KafkaMessage } from 'kafkajs';
import pg from 'pg';
import { loadSchemaRegistry } from '../connector/avro/registry.js';
import { topicFor, type DecodedEnvelope } from '../connector/events.js';
import { deadLetterTopic } from '../connector/kafka/topics.js';
import { sleep as sleepUnless } from '../connector/time.js';
import { createSimulator } from '../simulator/simulator.js';
import { fmt, freshDatabase } from './bench/common.js';
import { formatFailure, MODEL_LOG_FILE, replayCommand, runModelSeed, type SeedResult } from './lib/model.js';
import { canonical, expectedGrants, grantDiff, nonEmpty } from './lib/oracle.js';
import { brokerAnswers, formatTimeline, stageMarks, watchRecovery, type Mark } from './lib/recovery.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const SERVICES = `${root}scripts/services`;
const BIN = `${root}bin/fleet-sync.js`;
const servicesEnv = { ...process.env, FLEET_SYNC_SERVICES_DIR: process.env.FLEET_SYNC_SERVICES_DIR ?? `${root}.services/chaos` };

const { values: args } = parseArgs({
  options: {
    cycles: { type: 'string', default: '20' },
    users: { type: 'string', default: '20000' },
    'cycle-seconds': { type: 'string', default: '8' },
    'converge-timeout-s': { type: 'string', default: '300' },
    keep: { type: 'boolean', default: false },
    // Replays a fault sequence: the stages killed in cycles 1, 2, … (0 source, 1 standby source, 2 sink 1, 3 sink 2).
    kills: { type: 'string' },
    // The model test (scripts/lib/model.ts) instead of the load run.
    model: { type: 'boolean', default: false },
    seed: { type: 'string' },
    seeds: { type: 'string', default: '5' },
    'first-seed': { type: 'string' },
    path: { type: 'string' },
    'replay-path': { type: 'string' },
    'max-commands': { type: 'string', default: '20' },
    'shrink-s': { type: 'string', default: '300' },
    'settle-s': { type: 'string', default: '45' },
    simple: { type: 'boolean', default: false },
    trace: { type: 'boolean', default: false },
  },
});
const KILLS = args.kills?.split(',').map(Number);
const CYCLES = Number(args.cycles);
const USERS = Number(args.users);
const CYCLE_MS = Number(args['cycle-seconds']) * 1000;
for (const [name, v] of [['cycles', CYCLES], ['users', USERS], ['cycle-seconds', CYCLE_MS]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`chaos: --${name} must be a positive whole number`);
    process.exit(2);
  }
}

const log = (line: string) => console.log(`[chaos ${new Date().toISOString().slice(11, 19)}] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function services(...verb: string[]): Promise<string> {
  const { stdout } = await run(SERVICES, verb, { env: servicesEnv });
  return stdout;
}

// Parks: p1, p2 → proj-a; p3, p4 → proj-b; p5 (→ proj-a) is toggled off with revoke and on again; p6 never syncs.
const PARKS = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
const PROJECT: Record<string, string> = { p1: 'proj-a', p2: 'proj-a', p3: 'proj-b', p4: 'proj-b', p5: 'proj-a' };
const roleOf = (park: string, i: number) => `${park}-r${i}`;

async function seed(db: pg.Pool) {
  for (const park of PARKS) {
    await db.query('INSERT INTO parks (id, name) VALUES ($1, $1)', [park]);
    await db.query(`INSERT INTO roles (id, park_id, name) VALUES ($1, $4, 'Dispatcher'), ($2, $4, 'Senior'), ($3, $4, 'Unmapped')`, [roleOf(park, 1), roleOf(park, 2), roleOf(park, 3), park]);
  }
  // Users spread over the parks; some share a uid across parks, some are yandex-team, some have no uid.
  await db.query(
    `INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_enabled, is_yandex_team)
     SELECT park, CASE WHEN g % 50 = 0 THEN NULL WHEN g % 97 = 0 THEN 'uid-' || (g - 1) ELSE 'uid-' || g END,
            'login-' || g, 'seed-' || g, park || '-r' || (1 + g % 3), g % 13 <> 0, g % 41 = 0
     FROM (SELECT g, (ARRAY['p1','p2','p3','p4','p5','p6'])[1 + g % 6] AS park FROM generate_series(1, $1::int) g) s`,
    [USERS],
  );
  for (const [park, project] of Object.entries(PROJECT)) {
    await db.query(
      `INSERT INTO call_center_parks (park_id, project_id, role_map, yandex_team_role_id, enabled, enabled_at) VALUES ($1, $2, $3, 'cc-support', true, now())`,
      [park, project, JSON.stringify({ [roleOf(park, 1)]: 'cc-operator', [roleOf(park, 2)]: 'cc-lead' })],
    );
  }
  // The chaos log: every write transaction records its change tokens here, in the same transaction, so a commit
  // whose answer was lost in a restart is known for what it is. Not captured.
  await db.query('CREATE TABLE chaos_log (token text PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())');
}

/** One write transaction of 1–5 random changes; its tokens are logged in the same transaction. */
async function writeOnce(db: pg.Pool, seq: { n: number }): Promise<void> {
  const client = await db.connect();
  client.on('error', () => {});
  try {
    await client.query('BEGIN');
    const tokens: [string, string][] = [];
    for (let k = 1 + Math.floor(Math.random() * 5); k > 0; k--) {
      const token = `chg-${seq.n++}`;
      const park = PARKS[Math.floor(Math.random() * 5)]!;
      const op = Math.random();
      if (op < 0.2) {
        await client.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, $3, $3, $4)`, [park, `uid-new-${token}`, token, roleOf(park, 1 + Math.floor(Math.random() * 3))]);
        tokens.push([token, 'upsert']);
      } else if (op < 0.27) {
        const { rows } = await client.query<{ id: string }>(`DELETE FROM users WHERE id = (SELECT id FROM users WHERE park_id = $1 ORDER BY random() LIMIT 1) RETURNING id::text`, [park]);
        if (rows[0]) tokens.push([`del:${rows[0].id}`, 'delete']);
      } else {
        const pick = `(SELECT id FROM users WHERE park_id = $1 ORDER BY random() LIMIT 1)`;
        const to = PARKS[Math.floor(Math.random() * 6)]!;
        const role = (parkId: string) => roleOf(parkId, 1 + Math.floor(Math.random() * 3));
        const { rowCount } =
          op < 0.35
            ? await client.query(`UPDATE users SET name = $2, park_id = $3, role_id = $4 WHERE id = ${pick}`, [park, token, to, role(to)])
            : op < 0.6
              ? await client.query(`UPDATE users SET name = $2, is_enabled = NOT is_enabled WHERE id = ${pick}`, [park, token])
              : await client.query(`UPDATE users SET name = $2, role_id = $3 WHERE id = ${pick}`, [park, token, role(park)]);
        if (rowCount) tokens.push([token, 'upsert']);
      }
    }
    if (tokens.length > 0) await client.query('INSERT INTO chaos_log (token, kind) SELECT * FROM unnest($1::text[], $2::text[])', [tokens.map((t) => t[0]), tokens.map((t) => t[1])]);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release(true);
  }
}

/**
 * Reads a topic from its start to the end it had when the read began (read committed), message by message;
 * rejects if that end is not reached within `timeoutMs`, so a check never counts from half a topic.
 */
async function readToEnd(kafka: Kafka, topic: string, onMessage: (m: KafkaMessage) => void, timeoutMs = 120_000): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic).finally(() => admin.disconnect());
  const pending = new Set(ends.filter((e) => BigInt(e.high) > BigInt(e.low)).map((e) => e.partition));
  if (pending.size === 0) return;
  const target = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
  const consumer = kafka.consumer({ groupId: `chaos-check-${randomUUID()}`, maxWaitTimeInMs: 200 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (BigInt(payload.lastOffset) + 1n >= (target.get(payload.partition) ?? 0n)) pending.delete(payload.partition);
      if (pending.size === 0) done();
    });
    await consumer.run({
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) onMessage(m);
      },
    });
    const timedOut = await Promise.race([finished.then(() => false), sleep(timeoutMs).then(() => true)]);
    if (timedOut) throw new Error(`could not read ${topic} to its end within ${timeoutMs / 1000} s (partitions ${[...pending].join(', ')} short)`);
  } finally {
    await consumer.disconnect();
  }
}

/** The stage processes running now, killed if chaos itself fails. */
const children = new Set<ChildProcess>();

interface Stage {
  name: string;
  command: string;
  child: ChildProcess | null;
  unexpectedExits: number;
}

async function main() {
  log(`services in ${servicesEnv.FLEET_SYNC_SERVICES_DIR}`);
  const out = await services('up');
  const env: Record<string, string> = {};
  for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) env[m[1]!] = m[2]!;
  const name = `chaos_${Date.now().toString(36)}`;
  // Each stage's log (pino JSON, INFO and up unless LOG_LEVEL says otherwise) in a file of its own, kept after the
  // run: the last fault's timeline is read from them.
  const logDir = join(root, 'test-output', 'chaos', name);
  mkdirSync(logDir, { recursive: true });
  const database = await freshDatabase(env.DATABASE_URL!, name);
  const db = new pg.Pool({ connectionString: database.url, max: 6 });
  db.on('error', () => {});
  await seed(db);
  log(`seeded ${fmt(USERS)} users in 6 parks (4 enabled in 2 projects, 1 toggled, 1 never synced)`);

  const sim = createSimulator({ token: 'chaos-token', faults: { errorRate: 0.3, rateLimitRate: 0.05, retryAfterS: 1 } });
  const simUrl = await sim.start();
  const stageEnv = {
    ...process.env,
    DATABASE_URL: database.url,
    KAFKA_BROKERS: env.KAFKA_BROKERS!,
    TOPIC_PREFIX: name,
    CDC_SLOT: name,
    CDC_PUBLICATION: name,
    SINK_GROUP_ID: name,
    SINK_SESSION_TIMEOUT_MS: '10000',
    CDC_STANDBY_POLL_MS: '500',
    CALL_CENTER_URL: simUrl,
    CALL_CENTER_TOKEN: 'chaos-token',
    RECONCILE_INTERVAL_S: '60',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    NODE_OPTIONS: '--trace-warnings',
  };
  const stages: Stage[] = [
    { name: 'source', command: 'source', child: null, unexpectedExits: 0 },
    { name: 'standby source', command: 'source', child: null, unexpectedExits: 0 },
    { name: 'sink 1', command: 'sink', child: null, unexpectedExits: 0 },
    { name: 'sink 2', command: 'sink', child: null, unexpectedExits: 0 },
  ];
  let finishing = false;
  const start = (stage: Stage) => {
    const fd = openSync(join(logDir, `${stage.name.replace(/ /g, '-')}.log`), 'a');
    const child = spawn(process.execPath, [BIN, stage.command], { env: stageEnv, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    children.add(child);
    child.once('exit', () => children.delete(child));
    stage.child = child;
    child.once('exit', (code, signal) => {
      if (stage.child !== child || signal === 'SIGKILL' || finishing) return;
      // A stage that stops on its own is a finding: counted, and started again as a supervisor would.
      stage.unexpectedExits++;
      log(`${stage.name} exited on its own (code ${code}): starting it again`);
      start(stage);
    });
  };
  for (const stage of stages) start(stage);
  log(`stage logs in ${logDir}`);

  let walPeak = 0;
  const walSampler = setInterval(() => {
    db.query<{ lag: string | null }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots WHERE slot_name = $1`, [name])
      .then(({ rows }) => (walPeak = Math.max(walPeak, Number(rows[0]?.lag ?? 0))))
      .catch(() => {});
  }, 500);

  // The load starts once the snapshot is taken: every change after it is a streamed event, exactly once.
  for (let waited = 0; ; waited += 500) {
    const { rows } = await db.query('SELECT 1 FROM fleet_sync_source_state WHERE slot_name = $1 AND snapshot_done_at IS NOT NULL', [name]);
    if (rows.length > 0) break;
    if (waited > 300_000) throw new Error('the source did not finish its snapshot within 5 minutes');
    await sleep(500);
  }
  log('snapshot taken: write load and faults start');
  // One undecodable message, the injected bad input the dead-letter topic may hold.
  const kafka = new Kafka({ brokers: env.KAFKA_BROKERS!.split(','), logLevel: logLevel.NOTHING });
  const seq = { n: 0 };
  let writing = true;
  let writeErrors = 0;
  const writer = (async () => {
    while (writing) {
      try {
        await writeOnce(db, seq);
      } catch {
        writeErrors++;
        await sleep(200);
      }
      await sleep(10);
    }
  })();
  // Ends its wait when the load stops: the last toggle is the final one below, not one up to 1.5 cycles later.
  const loadStopping = new AbortController();
  const toggler = (async () => {
    for (let on = false; writing; on = !on) {
      await sleepUnless(CYCLE_MS * 1.5, loadStopping.signal);
      if (!writing) break;
      await db.query(`UPDATE call_center_parks SET enabled = $1, revoke_on_disable = true, ${on ? 'enabled_at' : 'disabled_at'} = now() WHERE park_id = 'p5'`, [on]).catch(() => {});
    }
  })();

  const faults: Record<string, number> = { 'stage kill -9': 0, 'broker kill -9': 0, 'postgres immediate restart': 0 };
  let lastFaultAt = Date.now();
  // The last fault's own moments (its stage kill, and for a broker restart: the kill, the restart, the broker
  // answering again), for its timeline.
  let lastFault: Mark[] = [];
  let brokerAnsweredAt: number | null = null;
  const capturedTopics = (['users', 'roles', 'call_center_parks'] as const).map((t) => topicFor(name, t));
  let watch: ReturnType<typeof watchRecovery> | null = null;
  let injected = false;
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    await sleep(CYCLE_MS);
    if (!injected) {
      try {
        const producer = kafka.producer();
        await producer.connect();
        await producer.send({ topic: topicFor(name, 'users'), acks: -1, messages: [{ key: 'chaos', value: Buffer.from('not an event') }] });
        await producer.disconnect();
        injected = true;
      } catch {
        /* the topic may not exist yet: next cycle */
      }
    }
    const stage = stages[KILLS ? KILLS[(cycle - 1) % KILLS.length]! : Math.floor(Math.random() * stages.length)]!;
    lastFault = [{ at: Date.now(), who: 'chaos', what: `kill -9 ${stage.name}` }];
    brokerAnsweredAt = null;
    // The last cycle is watched from its first fault on: the group's state, then the catching up.
    if (cycle === CYCLES) watch = watchRecovery({ brokers: env.KAFKA_BROKERS!.split(','), db, groupId: name, slot: name, topics: capturedTopics, marks: lastFault });
    stage.child?.kill('SIGKILL');
    faults['stage kill -9']!++;
    log(`cycle ${cycle}/${CYCLES}: kill -9 ${stage.name} (${new Date().toISOString().slice(11, 23)})`);
    await sleep(300);
    start(stage);
    if (cycle % 5 === 0) {
      log(`cycle ${cycle}/${CYCLES}: broker kill -9 and restart`);
      lastFault.push({ at: Date.now(), who: 'chaos', what: 'broker kill -9' });
      await services('stop', 'kafka', '--kill');
      lastFault.push({ at: Date.now(), who: 'chaos', what: 'broker process gone; starting it again' });
      const probing = new AbortController();
      const answers = brokerAnswers(env.KAFKA_BROKERS!.split(','), capturedTopics, probing.signal);
      // On a machine this busy the broker can take longer to start than the script waits: it goes on starting.
      const started = await services('start', 'kafka').then(
        () => true,
        (e: Error) => (log(`the broker is slow to start (${e.message.split('\n')[1] ?? e.message}): waiting for it to answer`), false),
      );
      if (started) lastFault.push({ at: Date.now(), who: 'chaos', what: 'broker started (its log says STARTED, its port takes connections)' });
      const answered = await Promise.race([answers, sleep(180_000).then(() => null)]);
      probing.abort();
      if (answered !== null) {
        brokerAnsweredAt = answered;
        lastFault.push({ at: answered, who: 'chaos', what: 'broker answers (metadata names a leader for every partition)' });
      }
      faults['broker kill -9']!++;
    }
    if (cycle % 7 === 0) {
      log(`cycle ${cycle}/${CYCLES}: PostgreSQL immediate stop and start`);
      await services('restart', 'postgres', '--kill');
      lastFault.push({ at: Date.now(), who: 'chaos', what: 'PostgreSQL restarted' });
      faults['postgres immediate restart']!++;
    }
    lastFaultAt = Date.now();
  }
  writing = false;
  loadStopping.abort();
  await writer;
  await toggler;
  // The toggled park ends on, so the check covers it.
  await db.query(`UPDATE call_center_parks SET enabled = true, enabled_at = now() WHERE park_id = 'p5'`);
  const loadStoppedAt = Date.now();
  lastFault.push({ at: loadStoppedAt, who: 'chaos', what: 'load stopped' });
  await watch?.loadStopped();
  log(`load stopped: ${fmt(seq.n)} change attempts, ${writeErrors} failed transactions (database restarting)`);

  // Convergence: the call center equals the database by SPEC §5.
  let converged = false;
  let diff: string[] = [];
  const deadline = Date.now() + Number(args['converge-timeout-s']) * 1000;
  while (Date.now() < deadline) {
    const expected = await expectedGrants(db).catch(() => null);
    if (expected) {
      const held = nonEmpty(sim.state().projects);
      if (canonical(held) === canonical(expected)) {
        converged = true;
        break;
      }
      diff = grantDiff(held, expected);
    }
    await sleep(500);
  }
  const convergedAt = Date.now();
  if (converged) lastFault.push({ at: convergedAt, who: 'chaos', what: 'converged (the call center equals the database)' });
  await watch?.stop();
  // The last fault's timeline, from its first moment, counted from the broker answering again (else the fault's end).
  const timeline = formatTimeline([...lastFault, ...stageMarks(logDir, lastFault[0]!.at)], brokerAnsweredAt ?? lastFaultAt);
  writeFileSync(join(logDir, 'timeline.txt'), `${timeline.join('\n')}\n`);

  // Kafka: every committed change exactly once (streamed events; the snapshot's reads are not exactly-once).
  const committed = (await db.query<{ token: string; kind: string; at: Date }>('SELECT token, kind, at FROM chaos_log')).rows;
  const registry = loadSchemaRegistry();
  const seen = new Map<string, number>();
  let dlqCount = 0;
  {
    await readToEnd(kafka, topicFor(name, 'users'), (m) => {
      if (!m.value) return;
      let env: DecodedEnvelope;
      try {
        env = registry.decode<DecodedEnvelope>(m.value).value;
      } catch {
        return; // the injected bad message
      }
      if (env.op === 'r') return;
      const key = env.op === 'd' ? `del:${String(env.before?.id)}` : String(env.after?.name);
      seen.set(key, (seen.get(key) ?? 0) + 1);
    });
    // Dead letters by the event they carry (original topic, partition, offset): a sink member that dies after
    // dead-lettering and before committing hands the event to another, which dead-letters it again (at least once).
    const origins = new Set<string>();
    await readToEnd(kafka, deadLetterTopic(name), (m) => {
      const h = (k: string) => String(m.headers?.[k] ?? '');
      origins.add(`${h('fleet-sync.original.topic')}/${h('fleet-sync.original.partition')}/${h('fleet-sync.original.offset')}`);
    });
    dlqCount = origins.size;
  }
  const missing = committed.filter((c) => !seen.has(c.token));
  const twice = committed.filter((c) => (seen.get(c.token) ?? 0) > 1);

  clearInterval(walSampler);
  finishing = true;
  for (const stage of stages) stage.child?.kill('SIGTERM');
  await sleep(1_000);
  for (const stage of stages) stage.child?.kill('SIGKILL');
  await sim.stop();
  await db.end();
  if (!args.keep) {
    await database.drop().catch(() => {});
  }

  const exits = stages.reduce((n, s) => n + s.unexpectedExits, 0);
  console.log('chaos  (fleet-sync under faults; services and processes on this machine)');
  console.log(`  cycles ${CYCLES}, faults: ${Object.entries(faults).map(([k, v]) => `${v} ${k}`).join(', ')}; call center failing 30% (5xx) + 5% (429) throughout`);
  console.log(`  changes committed ${fmt(committed.length)} (${fmt(USERS)} users seeded); stages that stopped on their own: ${exits}`);
  console.log(
    `  convergence after the last fault: ${converged ? `${fmt((convergedAt - lastFaultAt) / 1000, 1)} s (${fmt((convergedAt - loadStoppedAt) / 1000, 1)} s after the load stopped)` : 'NOT REACHED'}`,
  );
  if (brokerAnsweredAt !== null) {
    // The broker answers: the first metadata answer after its restart that names a leader for every partition of
    // the captured topics (a fresh connection every 100 ms, no client retries).
    console.log(
      `  convergence after the broker answered again: ${converged ? `${fmt((convergedAt - brokerAnsweredAt) / 1000, 1)} s` : 'NOT REACHED'} ` +
        `(the broker answered ${fmt((brokerAnsweredAt - lastFault.find((m) => m.what === 'broker kill -9')!.at) / 1000, 1)} s after its kill)`,
    );
  }
  console.log(`  last fault's timeline (s from ${brokerAnsweredAt !== null ? 'the broker answering again' : 'the end of the fault'}; stage logs in ${logDir}):`);
  for (const line of timeline) console.log(`  ${line}`);
  console.log(`  Kafka: ${missing.length} committed changes missing, ${twice.length} streamed twice; dead-lettered events ${dlqCount} (1 injected)`);
  console.log(`  slot WAL peak ${fmt(walPeak / 1024 / 1024, 1)} MiB`);
  const failures = [
    ...(converged ? [] : [`the call center did not converge: ${diff.slice(0, 10).join('; ')}${diff.length > 10 ? ` (+${diff.length - 10} more)` : ''}`]),
    ...(missing.length ? [`${missing.length} committed changes missing from Kafka, e.g. ${missing.slice(0, 5).map((m) => `${m.token} (${m.kind}, committed ${m.at.toISOString().slice(11, 23)})`).join(', ')}`] : []),
    ...(twice.length ? [`${twice.length} changes streamed twice, e.g. ${twice.slice(0, 5).map((m) => m.token).join(', ')}`] : []),
    ...(dlqCount > 1 ? [`${dlqCount - 1} dead letters beyond the injected one`] : []),
  ];
  if (!args.keep) await services('down').catch(() => {});
  if (failures.length > 0) {
    console.log(`chaos: FAILED\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.log('chaos: passed');
  process.exit(0);
}

/** The model test's services: the ones the environment names, else the development ones (started if need be). */
async function modelServices(): Promise<{ databaseUrl: string; kafkaBrokers: string }> {
  if (!process.env.DATABASE_URL || !process.env.KAFKA_BROKERS) {
    const { stdout } = await run(SERVICES, ['up'], { env: process.env });
    for (const m of stdout.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]!] = m[2]!;
  }
  return { databaseUrl: process.env.DATABASE_URL!, kafkaBrokers: process.env.KAFKA_BROKERS! };
}

async function modelMain(): Promise<number> {
  const whole = (name: string, min: number) => {
    const v = Number(args[name as keyof typeof args]);
    if (!Number.isInteger(v) || v < min) {
      console.error(`chaos: --${name} must be a whole number >= ${min}`);
      process.exit(2);
    }
    return v;
  };
  const maxCommands = whole('max-commands', 1);
  const shrinkBudgetMs = whole('shrink-s', 0) * 1000;
  const settleTimeoutMs = whole('settle-s', 1) * 1000;
  if (args.path !== undefined && args.seed === undefined) {
    console.error('chaos: --path replays one seed: give its --seed too');
    process.exit(2);
  }
  // Without --seed: random seeds, or counting up from --first-seed (repeatable).
  const first = args['first-seed'] !== undefined ? whole('first-seed', 0) : undefined;
  const seeds = args.seed !== undefined ? [whole('seed', 0)] : Array.from({ length: whole('seeds', 1) }, (_, i) => (first !== undefined ? first + i : randomInt(1, 2 ** 31)));
  const services = await modelServices();
  // Appended, not emptied: another model run may be writing to it (warn and above, or LOG_LEVEL).
  mkdirSync(dirname(MODEL_LOG_FILE), { recursive: true });
  appendFileSync(MODEL_LOG_FILE, `${JSON.stringify({ msg: 'chaos --model starts', pid: process.pid, seeds, time: new Date().toISOString() })}\n`);
  const options = { maxCommands, simple: args.simple, shrinkBudgetMs, settleTimeoutMs, ...(args.path ? { path: args.path } : {}), ...(args['replay-path'] ? { replayPath: args['replay-path'] } : {}) };
  log(
    `model test: ${seeds.length} seed(s), up to ${maxCommands} commands each${args.simple ? ' (simple operations only, no faults)' : ''}; settle limit ${settleTimeoutMs / 1000} s; ` +
      `shrinking ${args.path ? 'off (replaying a path)' : shrinkBudgetMs > 0 ? `bounded to ${shrinkBudgetMs / 1000} s per failing seed` : 'off'}; logs in ${MODEL_LOG_FILE}`,
  );
  const results: SeedResult[] = [];
  const startedAt = Date.now();
  for (const seed of seeds) {
    const result = await runModelSeed({ seed, services, ...options, log });
    results.push(result);
    if (args.trace && result.passed && result.first) console.log(result.first.trace.map((t) => `    ${t}`).join('\n'));
    if (!result.passed) console.log(`\n${formatFailure(result, options)}\n`);
    // A race found once may not come back on every run: the same sequence passing now is worth saying as such.
    else if (args.path) log(`seed ${seed}: the replayed sequence passed this time (its failure depends on timing)`);
  }
  const firsts = results.flatMap((r) => (r.first ? [r.first] : []));
  const failed = results.filter((r) => !r.passed);
  const longest = Math.max(0, ...firsts.filter((f) => f.passed && f.settleMs !== null).map((f) => f.settleMs!));
  console.log('model  (who holds which call-center role; real PostgreSQL, Kafka, sink processes, simulator)');
  console.log(`  seeds ${results.length}: ${results.length - failed.length} passed, ${failed.length} failed${failed.length ? ` (${failed.map((r) => r.seed).join(', ')})` : ''}`);
  console.log(`  commands ${firsts.reduce((n, f) => n + f.commands, 0)}: operations ${firsts.reduce((n, f) => n + f.ops, 0)}, faults ${firsts.reduce((n, f) => n + f.faults, 0)} (as generated, shrink runs not counted)`);
  console.log(`  longest settle of a passing seed ${fmt(longest / 1000, 1)} s; ${fmt((Date.now() - startedAt) / 1000)} s in all`);
  for (const r of failed) console.log(`  replay seed ${r.seed}: ${replayCommand({ seed: r.seed, maxCommands, simple: args.simple, path: r.failure?.path, replayPath: r.failure?.replayPath })}`);
  console.log(failed.length ? 'model: FAILED' : 'model: passed');
  return failed.length ? 1 : 0;
}

if (args.model) {
  modelMain().then(
    (code) => process.exit(code),
    (e) => {
      console.error('chaos --model failed to run:', e);
      process.exit(1);
    },
  );
} else {
  main().catch((e) => {
    console.error('chaos failed to run:', e);
    // The stages are not left running behind it.
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  });
}
