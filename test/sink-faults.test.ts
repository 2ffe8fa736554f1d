import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deadLetterTopic } from '../connector/kafka/topics.js';
import { canonical, expectedGrants } from '../scripts/lib/oracle.js';
import { childStdio, testLogLevel, waitFor } from './helpers.js';
import { readTopics } from './kafka-helpers.js';
import { CC_TOKEN, groupCaughtUp, heldGrants, startPipeline, waitForConvergence, type Pipeline } from './pipeline.js';

const BIN = fileURLToPath(new URL('../bin/fleet-sync.js', import.meta.url));

/** Records in the dead-letter topic, from its end offsets (a reader that has not joined yet would see none). */
async function deadLetterCount(p: Pipeline): Promise<number> {
  const kafka = new Kafka({ brokers: p.config.KAFKA_BROKERS, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(deadLetterTopic(p.config.TOPIC_PREFIX));
    return offsets.reduce((n, o) => n + Number(BigInt(o.high) - BigInt(o.low)), 0);
  } finally {
    await admin.disconnect();
  }
}

/** A burst of `n` changes on park p1 in transactions of up to 50: new users, role changes, disables and re-enables. */
async function burst(p: Pipeline, n: number, uidPrefix: string): Promise<void> {
  let done = 0;
  let batch = 0;
  while (done < n) {
    const size = Math.min(50, n - done);
    const client = await p.db.pool.connect();
    try {
      await client.query('BEGIN');
      if (batch % 3 === 0) {
        await client.query(
          `INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p1', $1 || g, 'l' || g, 'User ' || g, 'r1' FROM generate_series($2::int, $2::int + $3::int - 1) g`,
          [uidPrefix, done, size],
        );
      } else {
        await client.query(
          `UPDATE users SET role_id = CASE WHEN role_id = 'r1' THEN 'r2' ELSE 'r1' END, is_enabled = (random() > 0.2)
           WHERE id IN (SELECT id FROM users WHERE park_id = 'p1' ORDER BY random() LIMIT $1)`,
          [size],
        );
      }
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    done += size;
    batch++;
  }
}

async function seed(p: Pipeline) {
  await p.db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'One')`);
  await p.db.pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'p1', 'Dispatcher'), ('r2', 'p1', 'Senior')`);
  await p.db.pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('p1', 'proj-1', '{"r1":"cc-operator","r2":"cc-lead"}', true)`);
}

describe('sink under call-center faults', () => {
  let p: Pipeline;
  beforeAll(async () => {
    // A short session timeout, so that the outage test below outlasts it several times over.
    p = await startPipeline({ overrides: { CALL_CENTER_RETRY_BASE_MS: '10', CALL_CENTER_RETRY_MAX_MS: '200', SINK_SESSION_TIMEOUT_MS: '6000' } });
    await seed(p);
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('30% 5xx, 429s with Retry-After and latency through a 5k-change burst: exact convergence, nothing dead-lettered', async () => {
    p.sim.setFaults({ errorRate: 0.3, rateLimitRate: 0.05, retryAfterS: 1, latencyMs: 5 });
    await burst(p, 5_000, 'uid-');
    await waitForConvergence(p, 'the burst under faults', 180_000);
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to commit every event', timeoutMs: 60_000 });
    expect(p.sim.calls().faulted).toBeGreaterThan(100);
    expect(await deadLetterCount(p)).toBe(0);
  });

  it('a uid the call center refuses for good: exactly its events are dead-lettered, everyone else converges', async () => {
    p.sim.setFaults({ errorRate: 0, rateLimitRate: 0, latencyMs: 0, rejectUids: ['uid-refused'] });
    const { rows } = await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('p1', 'uid-refused', 'bad', 'Refused', 'r1') RETURNING id`);
    const refusedId = rows[0].id as string;
    await p.db.pool.query(`UPDATE users SET role_id = 'r2' WHERE id = $1`, [refusedId]);
    await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('p1', 'uid-fine', 'fine', 'Fine', 'r2')`);
    const dlq = await readTopics<{ after: { yandex_uid: string } }>(p.config.KAFKA_BROKERS.join(','), [deadLetterTopic(p.config.TOPIC_PREFIX)]);
    try {
      await waitFor(() => p.sim.rolesOf('proj-1', 'uid-fine').length === 1, { what: 'the fine user to be granted' });
      await waitFor(async () => (await groupCaughtUp(p)) && dlq.messages.length >= 2, { what: 'two dead letters', timeoutMs: 30_000 });
      expect(dlq.messages.map((m) => m.key!.id)).toEqual([refusedId, refusedId]);
      expect(dlq.messages.map((m) => m.value!.after.yandex_uid)).toEqual(['uid-refused', 'uid-refused']);
      expect(dlq.messages[0]!.headers).toMatchObject({ 'fleet-sync.error.code': 'CALL_CENTER_REJECTED', 'fleet-sync.attempts': '1' });
      expect(dlq.messages[0]!.headers['fleet-sync.original.topic']).toBe(`${p.config.TOPIC_PREFIX}.public.users`);
      expect(p.sim.rolesOf('proj-1', 'uid-refused')).toEqual([]);
      expect(await deadLetterCount(p)).toBe(2);
      p.sim.setFaults({ rejectUids: [] });
      await p.db.pool.query(`DELETE FROM users WHERE id = $1`, [refusedId]);
      await waitForConvergence(p, 'everyone else');
    } finally {
      await dlq.stop();
    }
  });

  it('a call-center outage longer than the consumer session: the partitions keep moving, the failed uids wait parked, nothing is dead-lettered, and it converges after', async () => {
    await waitForConvergence(p, 'a quiet start');
    p.sim.setFaults({ errorRate: 1, rateLimitRate: 0, latencyMs: 0, rejectUids: [] });
    const outageStart = Date.now();
    const before = p.sim.calls().faulted;
    await burst(p, 300, 'uid-outage-');
    // The outage lasts past twice the session timeout (6 s) while the parked uids are retried apart.
    await waitFor(() => Date.now() - outageStart > 13_000 && p.sim.calls().faulted > before + 100, { what: 'a long outage', timeoutMs: 30_000, intervalMs: 500 });
    // Every event was committed only because its uid is parked durably: nothing waits in a partition.
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to commit past the parked work', timeoutMs: 30_000 });
    const parked = await p.db.pool.query<{ n: string }>('SELECT count(*) AS n FROM call_center_retries');
    expect(Number(parked.rows[0]!.n)).toBeGreaterThan(0);
    expect(canonical(heldGrants(p.sim))).not.toBe(canonical(await expectedGrants(p.db.pool)));
    p.sim.setFaults({ errorRate: 0 });
    await waitForConvergence(p, 'convergence after the outage', 60_000);
    await waitFor(async () => (await p.db.pool.query('SELECT 1 FROM call_center_retries')).rowCount === 0, { what: 'the parked uids to be done' });
    expect(await deadLetterCount(p)).toBe(2); // the two of the refused uid, from the test before
  });

  it('drift written straight into the call center: the next sweep repairs and counts it; a sweep with nothing to fix writes nothing', async () => {
    await waitForConvergence(p, 'a quiet start');
    const holders = Object.keys(heldGrants(p.sim)['proj-1']!);
    const [wrong, gone] = [holders[0]!, holders[1]!];
    const rightRoles = p.sim.rolesOf('proj-1', wrong);
    p.sim.setRolesByHand('proj-1', wrong, ['cc-wrong']);
    p.sim.setRolesByHand('proj-1', gone, []);
    const counts = await p.reconciler().reconcilePark('p1', 'interval');
    expect(counts.corrected_grants).toBe(2);
    expect(p.sim.rolesOf('proj-1', wrong)).toEqual(rightRoles);
    await waitForConvergence(p, 'the repaired drift', 5_000);
    const { rows } = await p.db.pool.query(`SELECT corrected_grants, error FROM reconcile_runs WHERE park_id = 'p1' ORDER BY id DESC LIMIT 1`);
    expect(rows[0]).toEqual({ corrected_grants: 2, error: null });

    p.sim.resetCalls();
    const quiet = await p.reconciler().reconcilePark('p1', 'interval');
    expect(quiet.corrected_grants + quiet.corrected_profiles + quiet.revoked).toBe(0);
    expect(quiet.in_sync).toBeGreaterThan(0);
    expect(p.sim.calls().writes).toBe(0);
  });
});

describe('sink killed with -9 in the middle of a burst', () => {
  let p: Pipeline;
  const children: ChildProcess[] = [];
  const spawnSink = () => {
    const child = spawn(process.execPath, [BIN, 'sink'], {
      env: {
        ...process.env,
        DATABASE_URL: p.config.DATABASE_URL,
        KAFKA_BROKERS: p.config.KAFKA_BROKERS.join(','),
        TOPIC_PREFIX: p.config.TOPIC_PREFIX,
        SINK_GROUP_ID: p.config.SINK_GROUP_ID,
        // the restarted member waits for the killed one's session to expire before the group rebalances
        SINK_SESSION_TIMEOUT_MS: '6000',
        CALL_CENTER_URL: p.config.CALL_CENTER_URL,
        CALL_CENTER_TOKEN: CC_TOKEN,
        LOG_LEVEL: testLogLevel(),
      },
      stdio: childStdio(),
    });
    children.push(child);
    return child;
  };
  beforeAll(async () => {
    p = await startPipeline({ sink: false });
    await seed(p);
  });
  afterEach(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  afterAll(async () => p?.stop());

  it('converges exactly after a restart', async () => {
    p.sim.setFaults({ latencyMs: 2 });
    const first = spawnSink();
    const writing = burst(p, 3_000, 'uid-k-');
    await waitFor(() => p.sim.calls().writes >= 300, { what: 'the sink to be applying', timeoutMs: 60_000 });
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    await writing;
    // killed mid-burst: what the call center holds is not yet what the database says
    expect(canonical(heldGrants(p.sim))).not.toBe(canonical(await expectedGrants(p.db.pool)));
    spawnSink();
    await waitForConvergence(p, 'convergence after the restart', 120_000);
  });
});
