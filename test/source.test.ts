import { randomBytes, randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSchemaRegistry } from '../connector/avro/registry.js';
import type { Config } from '../connector/config.js';
import { createMetrics } from '../connector/metrics.js';
import { rowConverters } from '../connector/source/decoder.js';
import { parseLsn, topicFor, type CapturedTable } from '../connector/events.js';
import { startSource, type SourceHandle } from '../connector/source/source.js';
import { createTestDatabase, testConfig, testLogger, waitFor, type TestDatabase } from './helpers.js';
import { readTopics, type TopicReader } from './kafka-helpers.js';

interface Envelope {
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  op: string;
  source: { lsn: string; snapshot: boolean; table: string; tx_id: number | null };
}

const converters = rowConverters(loadSchemaRegistry(), testLogger());
const KEY: Record<CapturedTable, string> = { users: 'id', roles: 'id', call_center_parks: 'park_id' };

describe('source: snapshot then stream', () => {
  let db: TestDatabase;
  let config: Config;
  let source: SourceHandle;
  let reader: TopicReader<Envelope>;
  const metrics = createMetrics({ defaultMetrics: false });
  /** What the database says after each statement, in commit order: [table, op, key, row or null]. */
  const expected: [CapturedTable, string, string, Record<string, unknown> | null][] = [];

  const rowNow = async (table: CapturedTable, key: string) => {
    const { rows } = await db.pool.query(`SELECT * FROM ${table} WHERE ${KEY[table]} = $1`, [key]);
    return rows[0] ? converters[table].convert(rows[0]) : null;
  };
  const change = async (sql: string, params: unknown[], table: CapturedTable, op: string, key: string) => {
    await db.pool.query(sql, params);
    expected.push([table, op, key, op === 'd' ? null : await rowNow(table, key)]);
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    config = testConfig(db);
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1'), ('p2', 'Park 2')`);
    await db.pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'p1', 'Dispatcher'), ('r2', 'p1', 'Senior'), ('r3', 'p2', 'Dispatcher')`);
    await db.pool.query(
      `INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES
       ('00000000-0000-0000-0000-000000000001', 'p1', 'uid-1', 'one', 'User One', 'r1'),
       ('00000000-0000-0000-0000-000000000002', 'p1', NULL, 'two', 'User Two', NULL)`,
    );
    await db.pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('p1', 'proj-1', '{"r1":"cc-op"}', true)`);
    reader = await readTopics<Envelope>(config.KAFKA_BROKERS.join(','), (['users', 'roles', 'call_center_parks'] as const).map((t) => topicFor(config.TOPIC_PREFIX, t)));
    source = startSource({ config, log: testLogger(), metrics });
  });
  afterAll(async () => {
    await source?.stop();
    await reader?.stop();
    await db?.drop();
  });

  /** The snapshot's six reads: once they are in Kafka, the slot exists and every later change streams. */
  const snapshotReads = () =>
    waitFor(() => {
      const reads = reader.messages.filter((m) => m.value?.op === 'r');
      return reads.length === 6 ? reads : null;
    }, { what: 'six snapshot reads' });

  it('publishes every existing row as a snapshot read (op r) equal to the row', async () => {
    const snapshot = await snapshotReads();
    for (const m of snapshot) {
      const table = m.value!.source.table as CapturedTable;
      expect(m.value!.source.snapshot).toBe(true);
      expect(m.value!.after).toEqual(await rowNow(table, String(m.key![KEY[table]])));
    }
    // The snapshot's events count in fleet_sync_events_produced_total like streamed ones.
    const produced = (await metrics.eventsProduced.get()).values.filter((v) => v.labels.op === 'r');
    expect(Object.fromEntries(produced.map((v) => [v.labels.table, v.value]))).toEqual({ users: 2, roles: 3, call_center_parks: 1 });
  });

  it('then streams inserts, updates (park and role changes), deletes with tombstones and truncates, in commit order per key', async () => {
    await snapshotReads();
    const u3 = randomUUID();
    const u1 = '00000000-0000-0000-0000-000000000001';
    const u2 = '00000000-0000-0000-0000-000000000002';
    const longName = randomBytes(12_000).toString('base64'); // incompressible: stored out of line (TOAST)
    await change(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, 'p1', 'uid-3', 'three', 'User Three', 'r1')`, [u3], 'users', 'c', u3);
    await change(`UPDATE users SET role_id = 'r2' WHERE id = $1`, [u1], 'users', 'u', u1);
    await change(`UPDATE users SET park_id = 'p2', role_id = 'r3' WHERE id = $1`, [u1], 'users', 'u', u1);
    await change(`UPDATE users SET name = $2 WHERE id = $1`, [u2, longName], 'users', 'u', u2);
    // Text as stored, whatever its script, to the byte: a leading byte-order mark too, as a query returns it.
    await change(`UPDATE users SET name = $2 WHERE id = $1`, [u1, '\uFEFFАнна Ёлкина 🚕 東京 é'], 'users', 'u', u1);
    await change(`UPDATE users SET is_enabled = false WHERE id = $1`, [u2], 'users', 'u', u2);
    await change(`UPDATE roles SET name = 'Senior dispatcher' WHERE id = 'r2'`, [], 'roles', 'u', 'r2');
    await change(`UPDATE call_center_parks SET role_map = '{"r1":"cc-op","r2":"cc-lead"}' WHERE park_id = 'p1'`, [], 'call_center_parks', 'u', 'p1');
    await change(`DELETE FROM users WHERE id = $1`, [u3], 'users', 'd', u3);
    // A column added at run time is dropped from events (with one warning) and does not stop the source.
    await db.pool.query('ALTER TABLE users ADD COLUMN nickname text');
    await change(`UPDATE users SET nickname = 'n', login = 'one-b' WHERE id = $1`, [u1], 'users', 'u', u1);
    await db.pool.query('TRUNCATE users');

    const streamed = await waitFor(() => {
      const list = reader.messages.filter((m) => m.value?.op !== 'r');
      // every expected event, one tombstone, and a truncate on each of the 3 partitions
      return list.length >= expected.length + 1 + 3 ? list : null;
    }, { what: 'streamed changes' });

    for (const [table, op, key, row] of expected) {
      const topic = topicFor(config.TOPIC_PREFIX, table);
      const ofKey = streamed.filter((m) => m.topic === topic && m.key?.[KEY[table]] === key);
      const events = ofKey.filter((m) => m.value !== null);
      const wanted = expected.filter((e) => e[0] === table && e[2] === key);
      // per key: the same operations in commit order, each carrying the row as committed
      expect(events.map((m) => m.value!.op)).toEqual(wanted.map((e) => e[1]));
      const index = wanted.findIndex((e) => e[1] === op && e[3] === row);
      expect(events[index]!.value!.after).toEqual(row);
      expect(events[index]!.value!.source.snapshot).toBe(false);
    }
    // The unchanged TOASTed name survived the is_enabled update.
    const disabled = streamed.find((m) => m.key?.id === u2 && m.value?.after?.is_enabled === false)!;
    expect(disabled.value!.after!.name).toBe(longName);
    expect(disabled.value!.before!.name).toBe(longName);
    // A delete carries the old row (its park and uid) and is followed by a tombstone.
    const ofU3 = streamed.filter((m) => m.key?.id === u3);
    expect(ofU3.map((m) => m.value?.op ?? 'tombstone')).toEqual(['c', 'd', 'tombstone']);
    expect(ofU3[1]!.value!.before).toMatchObject({ park_id: 'p1', yandex_uid: 'uid-3' });
    // The truncate reaches every partition of the users topic, after the changes before it.
    const truncates = streamed.filter((m) => m.value?.op === 't');
    expect(truncates.map((m) => m.partition).sort()).toEqual([0, 1, 2]);
    expect(truncates.every((m) => m.topic === topicFor(config.TOPIC_PREFIX, 'users'))).toBe(true);
    // Commit LSNs never go backwards within a partition.
    for (const topicPartition of new Set(streamed.map((m) => `${m.topic}/${m.partition}`))) {
      const lsns = streamed.filter((m) => `${m.topic}/${m.partition}` === topicPartition && m.value).map((m) => m.value!.source.lsn);
      const asNumbers = lsns.map((l) => BigInt(`0x${l.split('/')[0]}`) * 2n ** 32n + BigInt(`0x${l.split('/')[1]}`));
      expect(asNumbers).toEqual([...asNumbers].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    }
  });

  it('confirms the slot up to what Kafka has, and a restart neither re-snapshots nor re-sends', async () => {
    const { rows } = await db.pool.query(`SELECT pg_current_wal_lsn() AS lsn`);
    await waitFor(async () => {
      const r = await db.pool.query(`SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1`, [config.CDC_SLOT, rows[0].lsn]);
      return r.rows[0]?.ok;
    }, { what: 'confirmed_flush_lsn to reach the last change' });
    await source.stop();
    const before = reader.messages.length;
    source = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    const u = randomUUID();
    await db.pool.query(`INSERT INTO users (id, park_id, login, name) VALUES ($1, 'p1', 'four', 'User Four')`, [u]);
    await waitFor(() => reader.messages.some((m) => m.key?.id === u), { what: 'the insert after restart' });
    const since = reader.messages.slice(before);
    expect(since.map((m) => [m.key?.id, m.value?.op])).toEqual([[u, 'c']]);
  });
});

describe('source: a burst bigger than what the broker takes in one record batch', () => {
  let db: TestDatabase;
  let source: SourceHandle | undefined;
  let reader: TopicReader<Envelope> | undefined;
  afterAll(async () => {
    await source?.stop();
    await reader?.stop();
    await db?.drop();
  });

  it('reaches a one-partition topic whole and in order, in batches under the broker limit', async () => {
    db = await createTestDatabase();
    // One partition: every record of a batch lands in one record batch, which the broker refuses over 1 MiB.
    const config = testConfig(db, { TOPIC_PARTITIONS: '1' });
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);
    source = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    // The source creates its topics before it streams: read only then, so the topic is the source's.
    await waitFor(async () => (await db.pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active`, [config.CDC_SLOT])).rowCount === 1, {
      what: 'the slot to stream',
    });
    reader = await readTopics<Envelope>(config.KAFKA_BROKERS.join(','), [topicFor(config.TOPIC_PREFIX, 'users')]);
    // 3,000 rows of ~1.4 KB in one transaction: ~4 MB of records, fewer events than one batch may hold.
    const logins = Array.from({ length: 3_000 }, (_, i) => `burst-${i}`);
    await db.pool.query(`INSERT INTO users (park_id, login, name) SELECT 'p1', l, $2 FROM unnest($1::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n`, [
      logins,
      randomBytes(1_000).toString('base64'),
    ]);
    const inserts = await waitFor(() => {
      const list = reader!.messages.filter((m) => m.value?.op === 'c');
      return list.length >= logins.length ? list : null;
    }, { what: '3,000 inserts in Kafka', timeoutMs: 60_000 });
    expect(new Set(inserts.map((m) => m.partition))).toEqual(new Set([0]));
    expect(inserts.map((m) => m.value!.after!.login)).toEqual(logins);
  });
});

describe('source: an event larger than its topic accepts', () => {
  let db: TestDatabase;
  let source: SourceHandle | undefined;
  let reader: TopicReader<Envelope> | undefined;
  afterAll(async () => {
    await source?.stop().catch(() => {});
    await reader?.stop();
    await db?.drop();
  });

  it('stops the source with an error naming the size and the limit, and confirms nothing past the events before it', async () => {
    db = await createTestDatabase();
    const config = testConfig(db, { TOPIC_PARTITIONS: '1' });
    const usersTopic = topicFor(config.TOPIC_PREFIX, 'users');
    // An operator's topic with a 16 KiB record-batch limit, made before the source starts (so the source keeps it).
    const admin = new Kafka({ clientId: 'test-admin', brokers: config.KAFKA_BROKERS, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic: usersTopic, numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'compact' }, { name: 'max.message.bytes', value: '16384' }] }],
    });
    await admin.disconnect();
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Park 1')`);
    source = startSource({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
    await waitFor(async () => (await db.pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active`, [config.CDC_SLOT])).rowCount === 1, {
      what: 'the slot to stream',
    });
    reader = await readTopics<Envelope>(config.KAFKA_BROKERS.join(','), [usersTopic]);
    await db.pool.query(`INSERT INTO users (park_id, login, name) VALUES ('p1', 'small', 'Small')`);
    await waitFor(() => reader!.messages.some((m) => m.value?.after?.login === 'small'), { what: 'the small insert in Kafka' });
    const { rows } = await db.pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    const before = parseLsn(rows[0]!.lsn);
    // Incompressible 40 KB: over the topic's limit even alone.
    await db.pool.query(`INSERT INTO users (park_id, login, name) VALUES ('p1', 'large', $1)`, [randomBytes(30_000).toString('base64')]);

    const stopped = await source.done.then(
      () => null,
      (e: unknown) => e as { code?: string; message: string },
    );
    expect(stopped?.code).toBe('KAFKA_RECORD_TOO_LARGE');
    expect(stopped?.message).toMatch(new RegExp(`largest is \\d+ bytes, for ${usersTopic.replace(/\./g, '\\.')}: raise that topic's max\\.message\\.bytes`));
    // The large event stays in the slot for the next start: PostgreSQL was told of nothing past what came before it.
    const { rows: slot } = await db.pool.query<{ lsn: string }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [config.CDC_SLOT]);
    expect(parseLsn(slot[0]!.lsn)).toBeLessThanOrEqual(before);
    expect(reader.messages.some((m) => m.value?.after?.login === 'large')).toBe(false);
  });
});
