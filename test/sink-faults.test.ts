import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { deadLetterTopic } from '../connector/kafka/topics.js';
import { canonical, expectedGrants } from '../scripts/lib/oracle.js';
import { childStdio, testLogLevel, waitFor } from './helpers.js';
import { readTopics } from './kafka-helpers.js';
import { CC_TOKEN, deadLetterCount, groupCaughtUp, heldGrants, seedPark, startPipeline, waitForProject, type Pipeline, type SeededPark } from './pipeline.js';

const BIN = fileURLToPath(new URL('../bin/fleet-sync.js', import.meta.url));

/** A burst of `n` changes on a park in transactions of up to 50: new users, role changes, disables and re-enables. */
async function burst(p: Pipeline, park: SeededPark, n: number): Promise<void> {
  const uidPrefix = `${park.parkId}-b`;
  const [r1, r2] = park.roles;
  let done = 0;
  let batch = 0;
  while (done < n) {
    const size = Math.min(50, n - done);
    const client = await p.db.pool.connect();
    try {
      await client.query('BEGIN');
      if (batch % 3 === 0) {
        await client.query(
          `INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT $4, $1 || g, 'l' || g, 'User ' || g, $5 FROM generate_series($2::int, $2::int + $3::int - 1) g`,
          [uidPrefix, done, size, park.parkId, r1],
        );
      } else {
        await client.query(
          `UPDATE users SET role_id = CASE WHEN role_id = $2 THEN $3 ELSE $2 END, is_enabled = (random() > 0.2)
           WHERE id IN (SELECT id FROM users WHERE park_id = $4 ORDER BY random() LIMIT $1)`,
          [size, r1, r2, park.parkId],
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

describe('sink under call-center faults', () => {
  let p: Pipeline;
  beforeAll(async () => {
    // A short session timeout, so that the outage test below outlasts it several times over.
    p = await startPipeline({ overrides: { CALL_CENTER_RETRY_BASE_MS: '10', CALL_CENTER_RETRY_MAX_MS: '200', SINK_SESSION_TIMEOUT_MS: '6000' } });
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterEach(() => p.sim.setFaults({ errorRate: 0, rateLimitRate: 0, latencyMs: 0, rejectUids: [] }));
  afterAll(async () => p?.stop());

  it('30% 5xx, 429s with Retry-After and latency through a 5k-change burst: exact convergence, nothing dead-lettered', async () => {
    const park = await seedPark(p.db.pool);
    const deadBefore = await deadLetterCount(p);
    p.sim.setFaults({ errorRate: 0.3, rateLimitRate: 0.05, retryAfterS: 1, latencyMs: 5 });
    await burst(p, park, 5_000);
    await waitForProject(p, park.projectId, 'the burst under faults', { timeoutMs: 180_000 });
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to commit every event', timeoutMs: 60_000 });
    expect(p.sim.calls().faulted).toBeGreaterThan(100);
    expect(await deadLetterCount(p)).toBe(deadBefore);
  });

  it('a uid the call center refuses for good: exactly its events are dead-lettered, everyone else converges', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    const refusedUid = `${park.parkId}-refused`;
    const fineUid = `${park.parkId}-fine`;
    p.sim.setFaults({ rejectUids: [refusedUid] });
    const deadBefore = await deadLetterCount(p);
    const dlq = await readTopics<{ after: { yandex_uid: string } }>(p.config.KAFKA_BROKERS.join(','), [deadLetterTopic(p.config.TOPIC_PREFIX)]);
    try {
      const { rows } = await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'bad', 'Refused', $3) RETURNING id`, [park.parkId, refusedUid, park.roles[0]]);
      const refusedId = rows[0].id as string;
      await p.db.pool.query(`UPDATE users SET role_id = $2 WHERE id = $1`, [refusedId, park.roles[1]]);
      await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'fine', 'Fine', $3)`, [park.parkId, fineUid, park.roles[1]]);
      await waitFor(() => p.sim.rolesOf(park.projectId, fineUid).length === 1, { what: 'the fine user to be granted' });
      const ofRefused = () => dlq.messages.filter((m) => m.key?.id === refusedId);
      await waitFor(async () => (await groupCaughtUp(p)) && ofRefused().length >= 2, { what: 'two dead letters', timeoutMs: 30_000 });
      expect(ofRefused().map((m) => m.value!.after.yandex_uid)).toEqual([refusedUid, refusedUid]);
      expect(ofRefused()[0]!.headers).toMatchObject({ 'fleet-sync.error.code': 'CALL_CENTER_REJECTED', 'fleet-sync.attempts': '1' });
      expect(ofRefused()[0]!.headers['fleet-sync.original.topic']).toBe(`${p.config.TOPIC_PREFIX}.public.users`);
      expect(p.sim.rolesOf(park.projectId, refusedUid)).toEqual([]);
      expect(await deadLetterCount(p)).toBe(deadBefore + 2);
      p.sim.setFaults({ rejectUids: [] });
      await p.db.pool.query(`DELETE FROM users WHERE id = $1`, [refusedId]);
      await waitForProject(p, park.projectId, 'everyone else');
    } finally {
      await dlq.stop();
    }
  });

  it('a uid parked during an outage that the call center then refuses for good: its events, committed when it was parked, are dead-lettered with the uid', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    const refusedUid = `${park.parkId}-parked-refused`;
    const dlq = await readTopics<{ after: { yandex_uid: string } }>(p.config.KAFKA_BROKERS.join(','), [deadLetterTopic(p.config.TOPIC_PREFIX)]);
    try {
      p.sim.setFaults({ failProjects: [park.projectId] });
      const { rows } = await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'bad', 'Refused', $3) RETURNING id`, [park.parkId, refusedUid, park.roles[0]]);
      const refusedId = rows[0].id as string;
      await p.db.pool.query(`UPDATE users SET role_id = $2 WHERE id = $1`, [refusedId, park.roles[1]]);
      const parked = async () => (await p.db.pool.query(`SELECT jsonb_array_length(events) AS n FROM call_center_retries WHERE uid = $1`, [refusedUid])).rows[0]?.n as number | undefined;
      await waitFor(async () => (await groupCaughtUp(p)) && (await parked()) === 2, { what: 'both events committed, kept with the parked uid' });
      p.sim.setFaults({ failProjects: [], rejectUids: [refusedUid] });
      const ofRefused = () => dlq.messages.filter((m) => m.key?.id === refusedId);
      await waitFor(() => ofRefused().length >= 2, { what: 'the parked events dead-lettered', timeoutMs: 30_000 });
      expect(ofRefused().map((m) => m.value!.after.yandex_uid)).toEqual([refusedUid, refusedUid]);
      expect(ofRefused()[0]!.headers).toMatchObject({ 'fleet-sync.error.code': 'CALL_CENTER_REJECTED', 'fleet-sync.uid': refusedUid, 'fleet-sync.projects': park.projectId });
      expect(ofRefused()[0]!.headers['fleet-sync.original.topic']).toBe(`${p.config.TOPIC_PREFIX}.public.users`);
      await waitFor(async () => (await parked()) === undefined, { what: 'the refused uid forgotten once dead-lettered' });
      expect(ofRefused()).toHaveLength(2);
    } finally {
      await dlq.stop();
      p.sim.setFaults({ failProjects: [] });
    }
  });

  it('a call-center outage longer than the consumer session: the partitions keep moving, the failed uids wait parked, nothing is dead-lettered, and it converges after', async () => {
    const park = await seedPark(p.db.pool, { users: 20 });
    await waitForProject(p, park.projectId, 'the backfill');
    const deadBefore = await deadLetterCount(p);
    p.sim.setFaults({ errorRate: 1 });
    const outageStart = Date.now();
    const before = p.sim.calls().faulted;
    await burst(p, park, 300);
    // The outage lasts past twice the session timeout (6 s) while the parked uids are retried apart.
    await waitFor(() => Date.now() - outageStart > 13_000 && p.sim.calls().faulted > before + 100, { what: 'a long outage', timeoutMs: 30_000, intervalMs: 500 });
    // Every event was committed only because its uid is parked durably: nothing waits in a partition.
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to commit past the parked work', timeoutMs: 30_000 });
    const parked = await p.db.pool.query<{ n: string }>('SELECT count(*) AS n FROM call_center_retries WHERE uid LIKE $1', [`${park.parkId}%`]);
    expect(Number(parked.rows[0]!.n)).toBeGreaterThan(0);
    p.sim.setFaults({ errorRate: 0 });
    await waitForProject(p, park.projectId, 'convergence after the outage', { timeoutMs: 60_000 });
    await waitFor(async () => (await p.db.pool.query('SELECT 1 FROM call_center_retries')).rowCount === 0, { what: 'the parked uids to be done' });
    expect(await deadLetterCount(p)).toBe(deadBefore);
  });

  it('drift written straight into the call center: the next sweep repairs and counts it; a sweep with nothing to fix writes nothing', async () => {
    const park = await seedPark(p.db.pool, { users: 6 });
    await waitForProject(p, park.projectId, 'the backfill');
    await waitFor(async () => (await p.db.pool.query(`SELECT 1 FROM call_center_park_sweeps WHERE park_id = $1`, [park.parkId])).rowCount === 0, { what: 'the backfill sweep done' });
    const [wrong, gone] = [park.uids[0]!, park.uids[1]!];
    const rightRoles = p.sim.rolesOf(park.projectId, wrong);
    p.sim.setRolesByHand(park.projectId, wrong, ['cc-wrong']);
    p.sim.setRolesByHand(park.projectId, gone, []);
    const counts = await p.reconciler().reconcilePark(park.parkId, 'interval');
    expect(counts.corrected_grants).toBe(2);
    expect(p.sim.rolesOf(park.projectId, wrong)).toEqual(rightRoles);
    await waitForProject(p, park.projectId, 'the repaired drift', { timeoutMs: 5_000 });
    // The run this test made (the only interval sweep of the park): another sweep of the park may record after it.
    const { rows } = await p.db.pool.query(`SELECT corrected_grants, error FROM reconcile_runs WHERE park_id = $1 AND reason = 'interval' ORDER BY id DESC LIMIT 1`, [park.parkId]);
    expect(rows[0]).toEqual({ corrected_grants: 2, error: null });

    p.sim.resetCalls();
    const quiet = await p.reconciler().reconcilePark(park.parkId, 'interval');
    expect(quiet.corrected_grants + quiet.corrected_profiles + quiet.revoked).toBe(0);
    expect(quiet.in_sync).toBe(6);
    expect(p.sim.calls().writes).toBe(0);
  });
});

describe('sink killed with -9 in the middle of a burst', () => {
  let p: Pipeline;
  let park: SeededPark;
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
    park = await seedPark(p.db.pool);
  });
  afterEach(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  afterAll(async () => p?.stop());

  it('converges exactly after a restart', async () => {
    p.sim.setFaults({ latencyMs: 2 });
    const first = spawnSink();
    const writing = burst(p, park, 3_000);
    await waitFor(() => p.sim.calls().writes >= 300, { what: 'the sink to be applying', timeoutMs: 60_000 });
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    await writing;
    // killed mid-burst: what the call center holds is not yet what the database says
    expect(canonical(heldGrants(p.sim))).not.toBe(canonical(await expectedGrants(p.db.pool)));
    spawnSink();
    await waitForProject(p, park.projectId, 'convergence after the restart', { timeoutMs: 120_000 });
  });
});
