// The exactly-once publisher against a real broker: marks commit with their events, and a second source with the
// same slot fences the first, which then stops instead of fighting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSchemaRegistry } from '../connector/avro/registry.js';
import { isFleetSyncError } from '../connector/errors.js';
import { createKafkaPublisher, toRecords, type Publisher } from '../connector/source/publisher.js';
import type { ChangeEvent } from '../connector/events.js';
import { createTestDatabase, testConfig, testLogger, waitFor, type TestDatabase } from './helpers.js';

const registry = loadSchemaRegistry();
const event = (id: string): ChangeEvent => ({
  table: 'roles',
  op: 'c',
  key: { id },
  before: null,
  after: { id, park_id: 'p', name: 'n', created_at: 0, updated_at: 0 },
  ts_ms: 0,
  source: { db: 'd', schema: 'public', table: 'roles', lsn: '0/1', tx_id: 1, commit_ts_ms: 0, snapshot: false },
});

describe('exactly-once publisher', () => {
  let db: TestDatabase;
  const publishers: Publisher[] = [];
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: false });
  });
  afterAll(async () => {
    for (const p of publishers) await p.close();
    await db?.drop();
  });

  it('commits the mark with the events, and a second publisher of the slot fences the first', async () => {
    const config = testConfig(db);
    const first = createKafkaPublisher({ config, log: testLogger() });
    publishers.push(first);
    const partitions = await first.ensureTopics();
    expect(await first.lastMark()).toBeNull();
    const mark = { scope: 's', position: { lsn: 42n, seq: 3 } };
    await first.publish(toRecords(event('a'), registry, config.TOPIC_PREFIX, partitions), mark);
    // The group coordinator applies a transaction's offsets just after the commit returns.
    await waitFor(async () => JSON.stringify(await first.lastMark(), (_k, v) => (typeof v === 'bigint' ? String(v) : v)) === '{"scope":"s","position":{"lsn":"42","seq":3}}', {
      what: 'the mark to be readable',
    });

    const second = createKafkaPublisher({ config, log: testLogger() });
    publishers.push(second);
    await second.ensureTopics();
    expect(await second.lastMark()).toEqual(mark);
    const refused = await first.publish(toRecords(event('b'), registry, config.TOPIC_PREFIX, partitions), { scope: 's', position: { lsn: 43n, seq: 0 } }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isFleetSyncError(refused, 'SOURCE_FENCED')).toBe(true);
    expect(await second.lastMark()).toEqual(mark);
  });
});
