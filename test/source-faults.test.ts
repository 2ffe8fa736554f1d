import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../connector/config.js';
import { isFleetSyncError } from '../connector/errors.js';
import { createMetrics } from '../connector/metrics.js';
import { topicFor } from '../connector/events.js';
import { startSource, type SourceHandle } from '../connector/source/source.js';
import { childStdio, createTestDatabase, testConfig, testLogger, testLogLevel, waitFor, type TestDatabase } from './helpers.js';
import { readTopics, type TopicReader } from './kafka-helpers.js';

const BIN = fileURLToPath(new URL('../bin/fleet-sync.js', import.meta.url));

function configEnv(config: Config): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: config.DATABASE_URL,
    KAFKA_BROKERS: config.KAFKA_BROKERS.join(','),
    TOPIC_PREFIX: config.TOPIC_PREFIX,
    TOPIC_PARTITIONS: String(config.TOPIC_PARTITIONS),
    CDC_SLOT: config.CDC_SLOT,
    LOG_LEVEL: testLogLevel(),
  };
}

function spawnSource(config: Config): ChildProcess {
  return spawn(process.execPath, [BIN, 'source'], { env: configEnv(config), stdio: childStdio() });
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));
}

async function slotActive(db: TestDatabase, slot: string): Promise<boolean> {
  const { rows } = await db.pool.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  return rows[0]?.active === true;
}

async function confirmedReached(db: TestDatabase, slot: string, lsn: string): Promise<boolean> {
  const { rows } = await db.pool.query('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [slot, lsn]);
  return rows[0]?.ok === true;
}

async function currentLsn(db: TestDatabase): Promise<string> {
  return (await db.pool.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
}

describe('source under faults', () => {
  let db: TestDatabase;
  const children: ChildProcess[] = [];
  const readers: TopicReader[] = [];
  const sources: SourceHandle[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const s of sources.splice(0)) await s.stop();
    for (const r of readers.splice(0)) await r.stop();
  });
  afterAll(async () => db?.drop());

  it('kill -9 in the middle of a 50k-change burst: every committed change is in Kafka exactly once; SIGTERM then flushes and exits 0', async () => {
    const config = testConfig(db);
    const reader = await readTopics<{ after: { name: string } | null }>(config.KAFKA_BROKERS.join(','), [topicFor(config.TOPIC_PREFIX, 'users')]);
    readers.push(reader);
    children.push(spawnSource(config));
    await waitFor(() => slotActive(db, config.CDC_SLOT), { what: 'the source to stream', timeoutMs: 60_000 });

    // 50,000 changes in transactions of 1–100 rows: inserts of new users and updates of earlier ones.
    // Each change gives its row a name of its own, so (id, name) identifies the committed change.
    const committed = new Set<string>();
    const ids: string[] = [];
    let changes = 0;
    let seq = 0;
    const writer = (async () => {
      while (changes < 50_000) {
        const size = Math.min(1 + Math.floor(Math.random() * 100), 50_000 - changes);
        const client = await db.pool.connect();
        try {
          await client.query('BEGIN');
          const inserts = ids.length < 100 ? size : Math.floor(size / 2);
          const pending: string[] = [];
          if (inserts > 0) {
            const rows = Array.from({ length: inserts }, () => [randomUUID(), `v${seq++}`] as const);
            await client.query(
              `INSERT INTO users (id, park_id, login, name) SELECT id::uuid, 'p1', 'l', n FROM unnest($1::text[], $2::text[]) AS t(id, n)`,
              [rows.map((r) => r[0]), rows.map((r) => r[1])],
            );
            for (const [id, n] of rows) pending.push(`${id}:${n}`), ids.push(id);
          }
          if (size - inserts > 0) {
            // distinct ids within one statement
            const picked = [...new Set(Array.from({ length: size - inserts }, () => ids[Math.floor(Math.random() * ids.length)]!))];
            const names = picked.map(() => `v${seq++}`);
            await client.query(
              `UPDATE users u SET name = t.n FROM unnest($1::text[], $2::text[]) AS t(id, n) WHERE u.id = t.id::uuid`,
              [picked, names],
            );
            picked.forEach((id, i) => pending.push(`${id}:${names[i]}`));
          }
          await client.query('COMMIT');
          for (const p of pending) committed.add(p);
          changes += pending.length;
        } finally {
          client.release();
        }
      }
    })();

    await waitFor(() => reader.messages.length >= 10_000, { what: '10,000 events in Kafka', timeoutMs: 60_000 });
    children[0]!.kill('SIGKILL');
    await exited(children[0]!);
    const seenAtKill = reader.messages.length;
    children.push(spawnSource(config));
    await writer;
    const endLsn = await currentLsn(db);

    const changesInKafka = () => reader.messages.filter((m) => m.value?.after).map((m) => `${m.key!.id}:${m.value!.after!.name}`);
    const seen = () => new Set(changesInKafka());
    const missing = () => {
      const inKafka = seen();
      return [...committed].filter((c) => !inKafka.has(c));
    };
    await waitFor(() => missing().length === 0, { what: 'every committed change in Kafka', timeoutMs: 120_000, intervalMs: 1_000 });
    expect(seenAtKill).toBeLessThan(committed.size);
    expect(missing()).toEqual([]);
    // Exactly once: the restarted source skipped what the killed one had committed to Kafka.
    const counts = new Map<string, number>();
    for (const c of changesInKafka()) counts.set(c, (counts.get(c) ?? 0) + 1);
    expect([...counts].filter(([, n]) => n > 1)).toEqual([]);
    expect(counts.size).toBe(committed.size);

    await waitFor(() => confirmedReached(db, config.CDC_SLOT, endLsn), { what: 'the slot to confirm the burst' });
    children[1]!.kill('SIGTERM');
    expect(await exited(children[1]!)).toBe(0);
    expect(await slotActive(db, config.CDC_SLOT)).toBe(false);
  });

  it('with idle captured tables and an unrelated write load, the slot still advances', async () => {
    const config = testConfig(db, { CDC_HEARTBEAT_INTERVAL_MS: '200' });
    sources.push(startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) }));
    await waitFor(() => slotActive(db, config.CDC_SLOT), { what: 'the source to stream', timeoutMs: 60_000 });
    await db.pool.query('CREATE TABLE IF NOT EXISTS unrelated (id serial PRIMARY KEY, payload text)');
    for (let i = 0; i < 50; i++) await db.pool.query(`INSERT INTO unrelated (payload) SELECT repeat('x', 200) FROM generate_series(1, 200)`);
    const after = await currentLsn(db);
    await waitFor(() => confirmedReached(db, config.CDC_SLOT, after), { what: `confirmed_flush_lsn to pass ${after}`, timeoutMs: 30_000 });
  });

  it('a second source stands by and takes over when the first stops', async () => {
    const config = testConfig(db);
    const reader = await readTopics(config.KAFKA_BROKERS.join(','), [topicFor(config.TOPIC_PREFIX, 'users')]);
    readers.push(reader);
    const first = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    await waitFor(() => first.isLeader() && slotActive(db, config.CDC_SLOT), { what: 'the first source to lead', timeoutMs: 60_000 });
    const second = startSource({ config: { ...config, CDC_STANDBY_POLL_MS: 200 }, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    sources.push(second);
    const a = randomUUID();
    await db.pool.query(`INSERT INTO users (id, park_id, login, name) VALUES ($1, 'p1', 'a', 'A')`, [a]);
    await waitFor(() => reader.messages.some((m) => m.key?.id === a), { what: 'the first source to publish' });
    expect(second.isLeader()).toBe(false);
    await first.stop();
    await waitFor(() => second.isLeader(), { what: 'the standby to take over', timeoutMs: 30_000 });
    const b = randomUUID();
    await db.pool.query(`INSERT INTO users (id, park_id, login, name) VALUES ($1, 'p1', 'b', 'B')`, [b]);
    await waitFor(() => reader.messages.some((m) => m.key?.id === b), { what: 'the standby to publish' });
  });
  it('a standby that started before the slot existed takes the slot over as it is: no second snapshot', async () => {
    const config = testConfig(db, { CDC_STANDBY_POLL_MS: '200' });
    const seeded = Number((await db.pool.query('SELECT count(*) AS n FROM users')).rows[0].n);
    const reader = await readTopics<{ op: string }>(config.KAFKA_BROKERS.join(','), [topicFor(config.TOPIC_PREFIX, 'users')]);
    readers.push(reader);
    // Both start together: the standby checks the database before the leader has created the slot.
    const first = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    const second = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    sources.push(first, second);
    await waitFor(() => (first.isLeader() || second.isLeader()) && slotActive(db, config.CDC_SLOT), { what: 'one source to lead', timeoutMs: 60_000 });
    const [leader, standby] = first.isLeader() ? [first, second] : [second, first];
    const a = randomUUID();
    await db.pool.query(`INSERT INTO users (id, park_id, login, name) VALUES ($1, 'p1', 'a', 'A')`, [a]);
    await waitFor(() => reader.messages.some((m) => m.key?.id === a), { what: 'the leader to publish' });
    await leader.stop();
    await waitFor(() => standby.isLeader() && slotActive(db, config.CDC_SLOT), { what: 'the standby to take over', timeoutMs: 30_000 });
    const b = randomUUID();
    await db.pool.query(`INSERT INTO users (id, park_id, login, name) VALUES ($1, 'p1', 'b', 'B')`, [b]);
    await waitFor(() => reader.messages.some((m) => m.key?.id === b), { what: 'the standby to publish' });
    expect(reader.messages.filter((m) => m.value?.op === 'r')).toHaveLength(seeded);
    expect(reader.messages.filter((m) => m.value?.op === 'c').map((m) => m.key?.id)).toEqual([a, b]);
  });
});

describe('source refuses a database it cannot stream, saying what to run', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => db?.drop());

  const failure = async (config: Config) => {
    const source = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    return source.done.then(() => null, (e: unknown) => e);
  };

  it('a publication missing a captured table', async () => {
    await db.pool.query('CREATE PUBLICATION partial FOR TABLE users');
    const e = await failure(testConfig(db, { CDC_PUBLICATION: 'partial' }));
    expect(isFleetSyncError(e, 'PUBLICATION_INCOMPLETE')).toBe(true);
    expect((e as Error).message).toContain('ALTER PUBLICATION partial ADD TABLE roles, call_center_parks');
  });

  it('a slot of another output plugin', async () => {
    const config = testConfig(db);
    await db.pool.query(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [config.CDC_SLOT]);
    const e = await failure(config);
    expect(isFleetSyncError(e, 'SLOT_WRONG_PLUGIN')).toBe(true);
    expect((e as Error).message).toContain(`pg_drop_replication_slot('${config.CDC_SLOT}')`);
  });

  it('a missing or malformed setting stops the command at start, naming the setting', async () => {
    const run = (env: NodeJS.ProcessEnv) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [BIN, 'source'], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (d) => (stderr += d));
        child.on('exit', (code) => resolve({ code, stderr }));
      });
    const missing = await run({ DATABASE_URL: db.url });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('KAFKA_BROKERS is missing');
    const malformed = await run({ DATABASE_URL: db.url, KAFKA_BROKERS: 'localhost', CDC_SLOT: 'Bad-Slot' });
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/KAFKA_BROKERS is invalid: expected comma-separated host:port/);
    expect(malformed.stderr).toMatch(/CDC_SLOT is invalid/);
    expect(await slotActive(db, 'Bad-Slot')).toBe(false);
  });
});
