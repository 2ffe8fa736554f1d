// The pipeline heals itself, tried as production meets it: one project's outage, messages nobody can decode, a
// PostgreSQL crash and restart under write load with the stages as separate processes, a broker killed with -9
// and restarted with its data, and a stage of `all` that cannot go on.
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deadLetterTopic } from '../connector/kafka/topics.js';
import { topicFor } from '../connector/events.js';
import { createSimulator, type Simulator } from '../simulator/simulator.js';
import { createTestDatabase, serviceUrls, uniqueName, waitFor, type TestDatabase } from './helpers.js';
import { readTopics } from './kafka-helpers.js';
import { CC_TOKEN, enablePark, seedPark, startPipeline, waitForProject, type Pipeline } from './pipeline.js';
import { crashAndRestart, spawnFleetSync } from './services.js';

/**
 * Role changes on a park's users, `n` transactions, each its own; a failed one (the database restarting) is retried
 * once the database answers again. `progress.done` counts the committed ones as they go.
 */
async function roleChanges(db: TestDatabase, parkId: string, roles: [string, string], n: number, stop?: () => boolean, progress = { done: 0 }): Promise<number> {
  let done = 0;
  while (done < n && !stop?.()) {
    try {
      await db.pool.query(
        `UPDATE users SET role_id = CASE WHEN role_id = $2 THEN $3 ELSE $2 END, is_enabled = random() > 0.1
         WHERE id = (SELECT id FROM users WHERE park_id = $1 ORDER BY random() LIMIT 1)`,
        [parkId, roles[0], roles[1]],
      );
      done++;
      progress.done++;
    } catch {
      // The database is restarting: the change was not committed. Go on once it answers.
      await waitFor(async () => (await db.pool.query('SELECT 1')).rowCount === 1, { what: 'PostgreSQL to answer again', timeoutMs: 120_000, intervalMs: 100 });
    }
  }
  return done;
}

describe('recovery inside one sink', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterEach(() => p.sim.setFaults({ failProjects: [], errorRate: 0 }));
  afterAll(async () => p?.stop());

  it("one project's outage never stalls the others: project B follows its changes while A answers 503, and A catches up once it is back", async () => {
    const [a, b] = [await seedPark(p.db.pool, { users: 100 }), await seedPark(p.db.pool, { users: 100 })];
    await waitForProject(p, a.projectId, 'park a');
    await waitForProject(p, b.projectId, 'park b');
    p.sim.setFaults({ failProjects: [a.projectId] });
    await roleChanges(p.db, a.parkId, a.roles, 50);
    await roleChanges(p.db, b.parkId, b.roles, 50);
    await waitForProject(p, b.projectId, 'project B while A is down');
    const parked = await p.db.pool.query<{ uid: string }>('SELECT uid FROM call_center_retries');
    expect(parked.rows.length).toBeGreaterThan(0);
    expect(parked.rows.every((r) => r.uid.startsWith(a.parkId))).toBe(true);
    p.sim.setFaults({ failProjects: [] });
    await waitForProject(p, a.projectId, 'project A once it is back');
    await waitFor(async () => (await p.db.pool.query('SELECT 1 FROM call_center_retries')).rowCount === 0, { what: 'the parked uids to be done' });
  });

  it('a park backfilled while its project is down waits apart; parks of other projects are turned on and followed meanwhile', async () => {
    const slow = await seedPark(p.db.pool, { users: 50, enable: false });
    const other = await seedPark(p.db.pool, { users: 10, enable: false });
    p.sim.setFaults({ failProjects: [slow.projectId] });
    await enablePark(p.db.pool, slow);
    await enablePark(p.db.pool, other);
    await waitForProject(p, other.projectId, 'the other park backfilled while the first one cannot be');
    await roleChanges(p.db, other.parkId, other.roles, 10);
    await waitForProject(p, other.projectId, 'the other park followed');
    p.sim.setFaults({ failProjects: [] });
    await waitForProject(p, slow.projectId, 'the first park once its project is back', { timeoutMs: 30_000 });
  });

  it('messages that cannot be decoded are dead-lettered with the reason; their partitions and the park directory go on', async () => {
    const kafka = new Kafka({ brokers: p.config.KAFKA_BROKERS, logLevel: logLevel.NOTHING });
    const producer = kafka.producer();
    await producer.connect();
    const dlq = await readTopics(p.config.KAFKA_BROKERS.join(','), [deadLetterTopic(p.config.TOPIC_PREFIX)]);
    try {
      const unknownSchema = Buffer.concat([Buffer.from([0xc3, 0x01]), Buffer.alloc(8, 0xab), Buffer.from('body')]);
      const notAvro = Buffer.from('{"json":"is not an event"}');
      const park = await seedPark(p.db.pool, { users: 3, enable: false });
      // Every partition of both topics gets its bad message, ahead of the good changes that follow.
      for (const [table, value] of [['users', unknownSchema], ['call_center_parks', notAvro]] as const) {
        const topic = topicFor(p.config.TOPIC_PREFIX, table);
        await producer.send({ topic, acks: -1, messages: Array.from({ length: p.config.TOPIC_PARTITIONS }, (_, partition) => ({ partition, key: `bad-${partition}`, value })) });
      }
      await enablePark(p.db.pool, park);
      await waitForProject(p, park.projectId, 'the park turned on after the bad messages');
      await p.db.pool.query(`UPDATE users SET role_id = NULL WHERE yandex_uid = $1`, [park.uids[0]]);
      await waitFor(() => p.sim.rolesOf(park.projectId, park.uids[0]!).length === 0, { what: 'a change after the bad messages' });
      await waitFor(() => dlq.messages.length >= 2 * p.config.TOPIC_PARTITIONS, { what: 'the bad messages dead-lettered' });
      expect(dlq.messages.every((m) => m.headers['fleet-sync.error.code'] === 'EVENT_UNDECODABLE')).toBe(true);
      expect(dlq.messages.filter((m) => m.headers['fleet-sync.error.message']!.includes('unknown schema fingerprint'))).toHaveLength(p.config.TOPIC_PARTITIONS);
      expect(dlq.messages.filter((m) => m.headers['fleet-sync.error.message']!.includes('no C3 01 marker'))).toHaveLength(p.config.TOPIC_PARTITIONS);
      expect(dlq.messages.map((m) => m.raw?.value?.toString()).filter((v) => v === notAvro.toString())).toHaveLength(p.config.TOPIC_PARTITIONS);
    } finally {
      await producer.disconnect();
      await dlq.stop();
    }
  });
});

describe('recovery from a Kafka broker killed with -9 under write load', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('the source and the sink resume: every committed change is in Kafka exactly once, and the call center converges', async () => {
    const park = await seedPark(p.db.pool, { users: 0 });
    // Inserts committed before the slot exists reach Kafka as snapshot reads (op r): the load starts once the source
    // streams, so every insert below must arrive as an insert.
    await waitFor(() => p.source.state() === 'streaming', { what: 'the source to stream' });
    const committed: string[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop || committed.length < 300; i++) {
        const id = randomUUID();
        await p.db.pool.query(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, $3, 'l', 'n', $4)`, [id, park.parkId, `${park.parkId}-w${i}`, park.roles[i % 2]]);
        committed.push(id);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await waitFor(() => committed.length >= 100, { what: 'the write load to run' });
    await crashAndRestart('kafka');
    await waitFor(() => committed.length >= 200, { what: 'writes after the restart' });
    stop = true;
    await writer;

    await waitForProject(p, park.projectId, 'the call center after the broker restart', { timeoutMs: 90_000 });
    const reader = await readTopics<{ op: string; after: { id: string } | null }>(p.config.KAFKA_BROKERS.join(','), [topicFor(p.config.TOPIC_PREFIX, 'users')]);
    try {
      const inserts = () => reader.messages.filter((m) => m.value?.op === 'c').map((m) => m.value!.after!.id);
      await waitFor(() => new Set(inserts()).size >= committed.length, { what: 'every committed insert in Kafka', timeoutMs: 120_000 }).catch(async (e: Error) => {
        // Which ones, and where in the write order (the last ones: still on their way; earlier ones: lost), and how
        // far the slot is confirmed.
        const read = new Set(inserts());
        const missing = committed.flatMap((id, i) => (read.has(id) ? [] : [`#${i} ${id}`]));
        const slot = await p.db.pool.query<{ lsn: string; active: boolean }>('SELECT confirmed_flush_lsn::text AS lsn, active FROM pg_replication_slots WHERE slot_name = $1', [p.config.CDC_SLOT]);
        throw new Error(
          `${e.message}; ${read.size} of ${committed.length} read; missing ${missing.slice(0, 10).join(', ')}; slot ${JSON.stringify(slot.rows[0])}; ${await reader.progress()}`,
        );
      });
      const counts = new Map<string, number>();
      for (const id of inserts()) counts.set(id, (counts.get(id) ?? 0) + 1);
      expect(committed.filter((id) => !counts.has(id))).toEqual([]);
      expect([...counts].filter(([, n]) => n > 1)).toEqual([]);
    } finally {
      await reader.stop();
    }
    // Longer than its waits together (the restart, 90 s, 120 s): when one of them runs out, its message says what it saw.
  }, 300_000);
});

describe('recovery from a PostgreSQL crash and restart, stages as separate processes', () => {
  let db: TestDatabase;
  let sim: Simulator;
  let env: Record<string, string>;
  const children: ReturnType<typeof spawnFleetSync>[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
    // The test's own connections see the crash too: an idle one failing must not end the test process.
    db.pool.on('error', () => {});
    sim = createSimulator({ token: CC_TOKEN });
    const url = await sim.start();
    env = {
      DATABASE_URL: db.url,
      KAFKA_BROKERS: serviceUrls().kafkaBrokers,
      TOPIC_PREFIX: uniqueName('t'),
      TOPIC_PARTITIONS: '3',
      CDC_SLOT: uniqueName('slot'),
      CDC_HEARTBEAT_INTERVAL_MS: '500',
      CDC_STANDBY_POLL_MS: '300',
      CALL_CENTER_URL: url,
      CALL_CENTER_TOKEN: CC_TOKEN,
      CALL_CENTER_RETRY_BASE_MS: '20',
      SINK_GROUP_ID: `sink-${db.name}`,
      SINK_SESSION_TIMEOUT_MS: '6000',
      API_HOST: '127.0.0.1',
      API_PORT: '0',
      API_TOKENS: 'test=users:read',
    };
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await sim?.stop();
    await db?.drop();
  });

  it('source, standby source and sink keep running, resume, and the call center converges; the standby still takes over after it', async () => {
    const park = await seedPark(db.pool, { users: 300 });
    const source = spawnFleetSync('source', env);
    const standby = spawnFleetSync('source', env);
    const sink = spawnFleetSync('sink', env);
    children.push(source, standby, sink);
    const p = { sim, db };
    await waitForProject(p, park.projectId, 'the backfill', { timeoutMs: 60_000 });

    let stop = false;
    const progress = { done: 0 };
    const writes = roleChanges(db, park.parkId, park.roles, 1_000_000, () => stop, progress);
    await waitFor(() => progress.done >= 20, { what: 'the write load to run' });
    await crashAndRestart('postgres');
    await waitFor(async () => (await db.pool.query('SELECT 1')).rowCount === 1, { what: 'PostgreSQL back' });
    // Changes after the restart, then quiet: the pipeline must bring the call center to the database's state.
    const after = await roleChanges(db, park.parkId, park.roles, 100);
    expect(after).toBe(100);
    stop = true;
    await writes;
    await waitForProject(p, park.projectId, 'convergence after the restart', { timeoutMs: 90_000 });
    for (const child of [source, standby, sink]) expect(child.exitCode).toBeNull();

    // The standby's lock connection lived through the restart: it takes over when the leader dies.
    source.kill('SIGKILL');
    await source.exited;
    await roleChanges(db, park.parkId, park.roles, 50);
    await waitForProject(p, park.projectId, 'convergence through the standby', { timeoutMs: 90_000 });
    expect(standby.exitCode).toBeNull();
  });

  it('`all` whose source cannot go on exits non-zero instead of running on without it', async () => {
    const broken = await createTestDatabase();
    try {
      await broken.pool.query(`CREATE PUBLICATION ${env.CDC_SLOT}_pub FOR TABLE users`);
      const all = spawnFleetSync('all', { ...env, DATABASE_URL: broken.url, CDC_PUBLICATION: `${env.CDC_SLOT}_pub`, SINK_GROUP_ID: uniqueName('g') });
      children.push(all);
      expect(await all.exited).not.toBe(0);
    } finally {
      await broken.drop();
    }
  });
});
