// A whole pipeline for a test file: its own database, slot and topic prefix, the source, the call-center
// simulator and the sink; and waiting for the call center to hold what the oracle (scripts/lib/oracle.ts) says.
import { Kafka, logLevel } from 'kafkajs';
import type pg from 'pg';
import type { Config } from '../connector/config.js';
import { deadLetterTopic } from '../connector/kafka/topics.js';
import { createMetrics, type Metrics } from '../connector/metrics.js';
import { startSink, type SinkHandle } from '../connector/sink/sink.js';
import { startSource, type SourceHandle } from '../connector/source/source.js';
import type { Reconciler } from '../connector/sync/reconciler.js';
import { createSyncStack, type SyncStack } from '../connector/wiring.js';
import { groupAtEnds } from '../scripts/lib/group-offsets.js';
import { canonical, expectedGrants, grantDiff, nonEmpty, type Grants } from '../scripts/lib/oracle.js';
import { createSimulator, type Simulator } from '../simulator/simulator.js';
import { createTestDatabase, testConfig, testLogger, uniqueName, waitFor, type TestDatabase } from './helpers.js';

export const CC_TOKEN = 'test-call-center-token';

export interface Pipeline {
  db: TestDatabase;
  config: Config;
  sim: Simulator;
  source: SourceHandle;
  sink: SinkHandle | null;
  /** The sink's shared pieces (pool, park directory, applier) and its reconciler, built as the `sink` command does. */
  stack: SyncStack | null;
  reconciler(): Reconciler;
  metrics: Metrics;
  startSink(): SinkHandle;
  stop(): Promise<void>;
}

export async function startPipeline(options: { sink?: boolean; overrides?: Record<string, string> } = {}): Promise<Pipeline> {
  const db = await createTestDatabase();
  const sim = createSimulator({ token: CC_TOKEN });
  const url = await sim.start();
  const config = testConfig(db, {
    CALL_CENTER_URL: url,
    CALL_CENTER_TOKEN: CC_TOKEN,
    CALL_CENTER_RETRY_BASE_MS: '20',
    CALL_CENTER_RETRY_MAX_MS: '500',
    SINK_GROUP_ID: `sink-${db.name}`,
    ...options.overrides,
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const source = startSource({ config, log: testLogger(), metrics });
  let stackClosed: Promise<void> = Promise.resolve();
  const pipeline: Pipeline = {
    db,
    config,
    sim,
    source,
    sink: null,
    stack: null,
    reconciler() {
      if (!pipeline.stack) throw new Error('the sink was not started');
      return pipeline.stack.reconciler;
    },
    metrics,
    startSink() {
      const stack = createSyncStack({ config, log: testLogger(), metrics });
      const sink = startSink({ config, log: testLogger(), metrics, ...stack });
      // The pool outlives the sink's last query: closed once the sink is done, awaited by stop().
      stackClosed = sink.done.catch(() => {}).then(() => stack.close());
      pipeline.stack = stack;
      sink.done.catch((e: Error) => console.error(`sink failed: ${e.stack ?? e.message}`));
      pipeline.sink = sink;
      return sink;
    },
    async stop() {
      await pipeline.sink?.stop();
      await stackClosed;
      await source.stop();
      await sim.stop();
      await db.drop();
    },
  };
  if (options.sink !== false) pipeline.startSink();
  return pipeline;
}

/** A database of its own, the call-center simulator, and the sink's sync stack over them: no Kafka, no stages. */
export interface SyncOnly {
  db: TestDatabase;
  sim: Simulator;
  stack: SyncStack;
  stop(): Promise<void>;
}

export async function startSyncOnly(overrides: Record<string, string> = {}): Promise<SyncOnly> {
  const db = await createTestDatabase();
  const sim = createSimulator({ token: CC_TOKEN });
  const url = await sim.start();
  const config = testConfig(db, { CALL_CENTER_URL: url, CALL_CENTER_TOKEN: CC_TOKEN, ...overrides });
  const stack = createSyncStack({ config, log: testLogger(), metrics: createMetrics({ defaultMetrics: false }) });
  return {
    db,
    sim,
    stack,
    async stop() {
      await stack.close();
      await sim.stop();
      await db.drop();
    },
  };
}

/** The simulator's grants without uids or projects that hold nothing. */
export function heldGrants(sim: Simulator): Grants {
  return nonEmpty(sim.state().projects);
}

/** Waits until the call center holds exactly what the database says; fails listing the differences. */
export async function waitForConvergence(p: Pick<Pipeline, 'sim' | 'db'>, what: string, timeoutMs = 15_000): Promise<void> {
  try {
    await waitFor(async () => canonical(heldGrants(p.sim)) === canonical(await expectedGrants(p.db.pool)), { what, timeoutMs });
  } catch (e) {
    const diff = grantDiff(heldGrants(p.sim), await expectedGrants(p.db.pool));
    throw new Error(`${(e as Error).message}; differences: ${diff.slice(0, 20).join('; ')}${diff.length > 20 ? ` (+${diff.length - 20} more)` : ''}`);
  }
}

/** Every message of the sink's input topics is committed by its group: nothing is left to process. */
export async function groupCaughtUp(p: Pipeline): Promise<boolean> {
  const kafka = new Kafka({ brokers: p.config.KAFKA_BROKERS, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await groupAtEnds(
      admin,
      p.config.SINK_GROUP_ID,
      ['users', 'roles', 'call_center_parks'].map((t) => `${p.config.TOPIC_PREFIX}.public.${t}`),
    );
  } finally {
    await admin.disconnect();
  }
}

export interface SeededPark {
  parkId: string;
  projectId: string;
  /** Two dispatcher roles of the park, mapped to cc-operator and cc-lead when the park is turned on. */
  roles: [string, string];
  /** The uids of the seeded users, in order: even positions (0, 2, …) hold roles[0], odd ones roles[1]. */
  uids: string[];
}

/**
 * A park of its own for one test: roles, `users` users with uids, and (unless `enable: false`) its call-center
 * sync turned on in a project of its own. Names are unique, so tests never see each other's parks.
 */
export async function seedPark(pool: pg.Pool, options: { users?: number; enable?: boolean; projectId?: string; yandexTeamRoleId?: string } = {}): Promise<SeededPark> {
  const parkId = uniqueName('park');
  const projectId = options.projectId ?? `proj-${parkId}`;
  const roles: [string, string] = [`${parkId}-r1`, `${parkId}-r2`];
  await pool.query('INSERT INTO parks (id, name) VALUES ($1, $1)', [parkId]);
  await pool.query(`INSERT INTO roles (id, park_id, name) VALUES ($1, $3, 'Dispatcher'), ($2, $3, 'Senior')`, [...roles, parkId]);
  const uids = Array.from({ length: options.users ?? 0 }, (_, i) => `${parkId}-u${i}`);
  await pool.query(
    `INSERT INTO users (park_id, yandex_uid, login, name, role_id)
     SELECT $1, u, 'login-' || u, 'User ' || u, CASE WHEN i % 2 = 0 THEN $2 ELSE $3 END FROM unnest($4::text[]) WITH ORDINALITY AS x(u, i)`,
    [parkId, roles[1], roles[0], uids],
  );
  if (options.enable !== false) await enablePark(pool, { parkId, projectId, roles }, options.yandexTeamRoleId);
  return { parkId, projectId, roles, uids };
}

/** What an earlier periodic task left: every seeded user already holds exactly its mapped role in the park's project. */
export function prefillProject(sim: Simulator, park: Pick<SeededPark, 'projectId' | 'uids'>): void {
  park.uids.forEach((uid, i) => {
    sim.putUserByHand(uid, { login: `login-${uid}`, name: `User ${uid}` });
    sim.setRolesByHand(park.projectId, uid, [i % 2 === 0 ? 'cc-operator' : 'cc-lead']);
  });
}

/** Turns a seeded park's sync on, as the api's park/on does (r1 → cc-operator, r2 → cc-lead). */
export async function enablePark(pool: pg.Pool, park: Pick<SeededPark, 'parkId' | 'projectId' | 'roles'>, yandexTeamRoleId?: string): Promise<void> {
  await pool.query(
    `INSERT INTO call_center_parks (park_id, project_id, role_map, yandex_team_role_id, enabled, enabled_at) VALUES ($1, $2, $3, $4, true, now())
     ON CONFLICT (park_id) DO UPDATE SET project_id = EXCLUDED.project_id, role_map = EXCLUDED.role_map, yandex_team_role_id = EXCLUDED.yandex_team_role_id, enabled = true, enabled_at = now()`,
    [park.parkId, park.projectId, JSON.stringify({ [park.roles[0]]: 'cc-operator', [park.roles[1]]: 'cc-lead' }), yandexTeamRoleId ?? null],
  );
}

/**
 * Waits until one project of the call center holds exactly what the database says, leaving out `outsiders`
 * (uids the call-center team granted by hand, which fleet-sync must leave alone).
 */
export async function waitForProject(p: Pick<Pipeline, 'sim' | 'db'>, projectId: string, what: string, options: { outsiders?: string[]; timeoutMs?: number } = {}): Promise<void> {
  const outsiders = new Set(options.outsiders ?? []);
  const held = () => Object.fromEntries(Object.entries(p.sim.state().projects[projectId] ?? {}).filter(([uid, roles]) => !outsiders.has(uid) && roles.length > 0));
  const expected = async () => (await expectedGrants(p.db.pool))[projectId] ?? {};
  try {
    await waitFor(async () => canonical({ x: held() }) === canonical({ x: await expected() }), { what, timeoutMs: options.timeoutMs ?? 15_000 });
  } catch (e) {
    const diff = grantDiff({ [projectId]: held() }, { [projectId]: await expected() });
    throw new Error(`${(e as Error).message}; differences: ${diff.slice(0, 20).join('; ')}${diff.length > 20 ? ` (+${diff.length - 20} more)` : ''}`);
  }
}

/** Waits until the source has published every change committed so far, and the sink has processed all of it. */
export async function pipelineCaughtUp(p: Pipeline): Promise<void> {
  // A slot made after the changes covers them by its snapshot, which is published before the source streams: until
  // then the slot's LSN says nothing of what is in Kafka.
  await waitFor(() => p.source.state() === 'streaming', { what: 'the source to finish its snapshot and stream', timeoutMs: 30_000 });
  const { rows } = await p.db.pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  await waitFor(
    async () =>
      (await p.db.pool.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn', [p.config.CDC_SLOT, rows[0]!.lsn])).rowCount === 1,
    { what: 'the source to publish every committed change', timeoutMs: 30_000 },
  );
  await waitFor(() => groupCaughtUp(p), { what: 'the sink to process every event', timeoutMs: 30_000 });
}

/** Records in the dead-letter topic, from its end offsets (a reader that has not joined yet would see none). */
export async function deadLetterCount(p: Pipeline): Promise<number> {
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
