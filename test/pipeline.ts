// A whole pipeline for a test file: its own database, slot and topic prefix, the source, the call-center
// simulator and the sink; and waiting for the call center to hold what the oracle (scripts/lib/grants.ts) says.
import { Kafka, logLevel } from 'kafkajs';
import type { Config } from '../connector/config.js';
import { createMetrics, type Metrics } from '../connector/metrics.js';
import { startSink, type SinkHandle } from '../connector/sink/sink.js';
import { startSource, type SourceHandle } from '../connector/source/source.js';
import type { Reconciler } from '../connector/sync/reconciler.js';
import { createSyncStack, type SyncStack } from '../connector/wiring.js';
import { canonical, expectedGrants, grantDiff, heldGrantsOf, type Grants } from '../scripts/lib/grants.js';
import { createSimulator, type Simulator } from '../simulator/simulator.js';
import { createTestDatabase, testConfig, testLogger, waitFor, type TestDatabase } from './helpers.js';

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

/** The simulator's grants without projects left empty. */
export function heldGrants(sim: Simulator): Grants {
  return heldGrantsOf(sim.state());
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
    const topics = ['users', 'roles', 'call_center_parks'].map((t) => `${p.config.TOPIC_PREFIX}.public.${t}`);
    const committed = await admin.fetchOffsets({ groupId: p.config.SINK_GROUP_ID, topics });
    for (const t of committed) {
      const ends = await admin.fetchTopicOffsets(t.topic);
      for (const e of ends) {
        const c = t.partitions.find((x) => x.partition === e.partition)?.offset ?? '-1';
        if (e.high !== '0' && BigInt(c) < BigInt(e.high)) return false;
      }
    }
    return true;
  } finally {
    await admin.disconnect();
  }
}

