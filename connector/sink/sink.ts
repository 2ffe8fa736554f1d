// `fleet-sync sink`: a Kafka consumer group on the users, roles and call_center_parks topics that keeps the call
// center at what the database says, for every user of every enabled park. Offsets move only past events the call
// center has, the dead-letter topic has, or call_center_retries holds for a retry apart. Events are triggers: the
// applier judges each uid by the rows and park settings it reads under the uid's lock, never by a view of the
// parks another topic feeds (that topic can lag this one).
import { setMaxListeners } from 'node:events';
import type { Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import { capEvents, eventCause } from '../audit/trail.js';
import { loadSchemaRegistry, type SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { isFleetSyncError, isKnownFailure } from '../errors.js';
import { CAPTURED_TABLES, topicFor, type DecodedEnvelope } from '../events.js';
import { createKafka, type KafkaRetry } from '../kafka/client.js';
import { deadLetterTopic, ensureTopics } from '../kafka/topics.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { BATCH_CHUNKS_IN_FLIGHT, type SyncContext } from '../sync/context.js';
import type { Reconciler } from '../sync/reconciler.js';
import { recordProgress } from '../sync/store.js';
import { requestParkSweeps } from '../sync/work-queue.js';
import { sleep } from '../time.js';
import { createDeadLetterWriter, parkedEvent } from './dead-letter.js';
import { logGroupEvents } from './group-events.js';
import { trackGeneration, type Generation } from './generation.js';
import { groupUsersBatch, type DecodedMessage } from './group.js';
import { startRetryLoops, type RetryLoops } from './retry-loops.js';

export interface SinkDeps {
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** The shared pool and applier; owned (and closed) by the caller. */
  sync: SyncContext;
  /** Sweeps a park when its sync settings change (the backfill, or the revocation). */
  reconciler: Reconciler;
}

export interface SinkHandle {
  /** Settles when the sink stopped: resolves after stop(), rejects when it cannot go on. */
  done: Promise<void>;
  stop(): Promise<void>;
  /** True once the group consumer runs. */
  isReady(): boolean;
}

/**
 * The group consumer's retries (kafkajs's, of its connections, metadata, fetches, joins and commits): about two
 * minutes at most a second apart, so that a broker restart is waited out by the same member. kafkajs restarts a
 * consumer whose retries ran out as a new member, and the group then waits a whole session timeout for the old one
 * before anyone consumes.
 */
const GROUP_RETRY: KafkaRetry = { retries: 120, initialRetryTime: 100, maxRetryTime: 1_000 };
/** How long a stop waits for the group consumer to leave: a broker that is down cannot take the leave at all. */
const GROUP_STOP_MS = 10_000;

export function startSink(deps: SinkDeps): SinkHandle {
  const { config, metrics } = deps;
  const log = deps.log.child({ module: 'sink' });
  const registry: SchemaRegistry = loadSchemaRegistry();
  const { pool, applier } = deps.sync;
  const kafka = createKafka(config, deps.log, '-sink');
  const groupKafka = createKafka(config, deps.log, '-sink', GROUP_RETRY);
  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal);
  const topics = {
    users: topicFor(config.TOPIC_PREFIX, 'users'),
    roles: topicFor(config.TOPIC_PREFIX, 'roles'),
    parks: topicFor(config.TOPIC_PREFIX, 'call_center_parks'),
    dlq: deadLetterTopic(config.TOPIC_PREFIX),
  };
  const deadLetters = createDeadLetterWriter({ kafka, topic: topics.dlq, metrics });
  let ready = false;
  let group: Consumer | null = null;
  let generation: Generation | null = null;
  let loops: RetryLoops | null = null;

  /**
   * Decodes a batch; a message that cannot be decoded (an unknown schema, corrupt bytes) is dead-lettered with the
   * reason and left out, so it never holds its partition. `sent` holds the offsets this batch already dead-lettered:
   * a batch redone after a failure does not send them twice.
   */
  const decodeBatch = async ({ batch }: EachBatchPayload, sent: Set<string>): Promise<DecodedMessage<KafkaMessage>[]> => {
    const out: DecodedMessage<KafkaMessage>[] = [];
    for (const message of batch.messages) {
      if (!message.value) {
        out.push({ message, env: null });
        continue;
      }
      try {
        out.push({ message, env: registry.decode<DecodedEnvelope>(message.value).value });
      } catch (e) {
        if (sent.has(message.offset)) continue;
        const code = isFleetSyncError(e) ? e.code : 'EVENT_UNDECODABLE';
        log.error({ topic: batch.topic, partition: batch.partition, offset: message.offset, code, err: (e as Error).message }, 'an event cannot be decoded: dead-lettered');
        await deadLetters.send(message, batch, { code, message: (e as Error).message, attempts: 1 });
        sent.add(message.offset);
      }
    }
    return out;
  };

  /**
   * Every park whose users a truncate concerns, swept once per truncate (its copies reach every partition): the
   * enabled ones, and those fleet-sync still holds grants for.
   */
  const parksToSweep = async (): Promise<string[]> => {
    const { rows } = await pool.query<{ park_id: string }>(
      'SELECT park_id FROM call_center_parks WHERE enabled UNION SELECT DISTINCT park_id FROM call_center_grants WHERE managed',
    );
    return rows.map((r) => r.park_id);
  };

  const handleUsers = async (payload: EachBatchPayload, sent: Set<string>, signal: AbortSignal) => {
    const { batch } = payload;
    const grouped = groupUsersBatch(await decodeBatch(payload, sent));
    // A truncate empties the table: every park's sweep brings its users (and everyone fleet-sync granted there)
    // to that state; the sweeps run apart, so a large fleet never holds this partition.
    if (grouped.truncatedAt !== null) {
      const cause = `users truncate ${grouped.truncatedAt}`;
      await requestParkSweeps(pool, (await parksToSweep()).map((parkId) => ({ parkId, reason: 'truncate', cause })));
      loops?.wake();
    }
    // One pass per uid for the whole batch: the applier reads the rows and the parks as they are now, so the last
    // state wins, and an event of a park this sink has not heard of being turned on is judged by the table.
    const causes = (uid: string) =>
      (grouped.eventsByUid.get(uid) ?? []).flatMap(({ message, env }) => (env ? [eventCause(env, { topic: batch.topic, partition: batch.partition, offset: message.offset })] : []));
    const outcomes = await applier.syncUids(grouped.uids, {
      profileChanged: grouped.profileChanged,
      touched: grouped.touched,
      // A backlog's batch is many chunks: the next one starts while the last uids of this one wait on the call center.
      chunksInFlight: BATCH_CHUNKS_IN_FLIGHT,
      cause: (uid) => ({ kind: 'event', ...capEvents(causes(uid)) }),
      eventsOf: (uid) =>
        (grouped.eventsByUid.get(uid) ?? []).map(({ message, env }) => ({
          ...parkedEvent(message, batch),
          ...(env ? { cause: eventCause(env, { topic: batch.topic, partition: batch.partition, offset: message.offset }) } : {}),
        })),
      signal,
    });
    const now = Date.now();
    let parked = 0;
    for (const [uid, outcome] of outcomes) {
      const events = grouped.eventsByUid.get(uid) ?? [];
      if (outcome.error) {
        const e = outcome.error;
        for (const { message, env } of events) {
          if (sent.has(message.offset)) continue;
          await deadLetters.send(message, batch, { code: e.code, message: e.message, attempts: Number(e.details?.attempts ?? 1) });
          sent.add(message.offset);
          const parkId = String((env?.after ?? env?.before)?.park_id ?? '');
          const progress = grouped.progress.get(parkId);
          if (progress) progress.deadLettered++;
        }
        continue;
      }
      if (outcome.parked) {
        parked++;
        continue;
      }
      if (outcome.granted + outcome.revoked + outcome.profiles === 0) continue;
      for (const { env } of events) if (env?.source.commit_ts_ms) metrics.commitToAppliedSeconds.observe((now - env.source.commit_ts_ms) / 1000);
    }
    if (parked > 0) loops?.wake();
    const skippedNoUid = await recordProgress(pool, [...grouped.progress.values()]);
    if (skippedNoUid > 0) metrics.skippedNoUid.inc(skippedNoUid);
  };

  const handleParks = async (payload: EachBatchPayload, sent: Set<string>) => {
    const requests = new Map<string, { parkId: string; reason: string; cause?: string }>();
    for (const { env } of await decodeBatch(payload, sent)) {
      if (!env) continue;
      if (env.op === 't') {
        // Every park is off with revoke (SPEC §5): each park fleet-sync holds grants for is swept.
        const cause = `call_center_parks truncate ${env.source.lsn}`;
        for (const parkId of await parksToSweep()) requests.set(parkId, { parkId, reason: 'park_off', cause });
        continue;
      }
      const row = env.after ?? env.before;
      if (!row) continue;
      const parkId = String(row.park_id);
      // The reason labels the run; the sweep itself reads the park's settings from the table.
      requests.set(parkId, { parkId, reason: env.after?.enabled ? 'park_on' : 'park_off' });
    }
    // Turned on, remapped, or off: the park's sweep (its backfill, or its revocation) is asked for durably and runs
    // apart, so a long backfill never holds this or any other partition.
    await requestParkSweeps(pool, [...requests.values()]);
    if (requests.size > 0) loops?.wake();
  };

  /**
   * Runs one batch until it is done: a failure (the database unreachable, Kafka) is retried; nothing is skipped.
   * False when `signal` ended it first (a stop, or the group moved on): nothing of it is committed.
   */
  const processBatch = async (payload: EachBatchPayload, signal: AbortSignal) => {
    const { batch } = payload;
    // Offsets of this batch already in the dead-letter topic: a redone batch does not send them again.
    const sent = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        if (batch.topic === topics.users) await handleUsers(payload, sent, signal);
        else if (batch.topic === topics.parks) await handleParks(payload, sent);
        // roles: a deleted role reaches its users as their own change (the foreign key sets role_id to null).
        else await decodeBatch(payload, sent);
        return true;
      } catch (e) {
        if (signal.aborted || !payload.isRunning() || payload.isStale()) return false; // uncommitted: replayed
        const delayMs = Math.min(200 * 2 ** Math.min(attempt, 7), 10_000);
        const fields = { topic: batch.topic, partition: batch.partition, attempt, delayMs, code: isFleetSyncError(e) ? e.code : (e as { code?: string })?.code };
        if (isKnownFailure(e)) log.warn({ ...fields, err: (e as Error).message }, 'batch failed; retrying');
        else {
          metrics.unexpectedErrors.inc({ stage: 'sink' });
          log.error({ ...fields, err: e }, 'batch failed with an unexpected error; retrying');
        }
        await sleep(delayMs, signal);
      }
    }
  };

  /** Runs a start-up step until it succeeds: a broker that is down or restarting is waited for, not fatal. */
  const untilReachable = async (what: string, step: () => Promise<void>) => {
    for (let attempt = 1; !stopping.signal.aborted; attempt++) {
      try {
        return await step();
      } catch (e) {
        if (stopping.signal.aborted) return;
        // Each attempt is already kafkajs's own retries (kafka/client.ts): a second at most between them.
        const delayMs = Math.min(500 * attempt, 1_000);
        log.warn({ err: (e as Error).message, attempt, delayMs }, `${what} failed; retrying`);
        await sleep(delayMs, stopping.signal);
      }
    }
  };

  const run = async () => {
    await untilReachable('creating the topics', async () => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        await ensureTopics(admin, config, CAPTURED_TABLES.map((t) => topicFor(config.TOPIC_PREFIX, t)));
        await ensureTopics(admin, config, [topics.dlq], 'delete');
      } finally {
        await admin.disconnect();
      }
    });
    await untilReachable('connecting the dead-letter writer', () => deadLetters.connect());
    loops = startRetryLoops({
      pool,
      deadLetters,
      applier,
      reconciler: deps.reconciler,
      log: deps.log,
      metrics,
      signal: stopping.signal,
      backoff: { baseMs: config.CALL_CENTER_RETRY_BASE_MS, maxDelayMs: config.SINK_RETRY_MAX_DELAY_MS },
      intervalS: config.RECONCILE_INTERVAL_S,
    });
    await untilReachable('joining the consumer group', async () => {
      const joining = groupKafka.consumer({
        groupId: config.SINK_GROUP_ID,
        maxWaitTimeInMs: 50,
        sessionTimeout: config.SINK_SESSION_TIMEOUT_MS,
        heartbeatInterval: 1_000,
        retry: GROUP_RETRY,
      });
      logGroupEvents(joining, log);
      generation = trackGeneration(joining);
      try {
        await joining.connect();
        await joining.subscribe({ topics: [topics.users, topics.roles, topics.parks], fromBeginning: true });
        group = joining;
      } catch (e) {
        await joining.disconnect().catch(() => {});
        throw e;
      }
    });
    if (!group) return;
    const crashed = new Promise<never>((_, reject) => {
      group!.on(group!.events.CRASH, (e) => {
        if (!e.payload.restart) reject(e.payload.error);
      });
    });
    await group.run({
      // kafkajs commits only offsets resolved above (after the call center has the events), plus the ones it
      // resolves itself for batches of nothing but transaction markers; after every batch (threshold 1).
      autoCommit: true,
      autoCommitThreshold: 1,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: Math.max(1, config.TOPIC_PARTITIONS),
      eachBatch: async (payload) => {
        const { batch } = payload;
        if (batch.messages.length === 0) return;
        // The group moves on (a rebalance): this batch stops, uncommitted, and kafkajs rejoins once it is thrown
        // the heartbeat's error, instead of after the slowest batch in flight (see generation.ts).
        const inGeneration = generation!.signal();
        if (inGeneration.aborted) throw inGeneration.reason;
        const signal = AbortSignal.any([stopping.signal, inGeneration]);
        setMaxListeners(0, signal);
        // A slow database can hold a batch for a while: stay in the group meanwhile, and hear of a rebalance.
        const beat = setInterval(() => void payload.heartbeat().catch((e: unknown) => generation!.heartbeatFailed(e)), 1_000);
        try {
          if (!(await processBatch(payload, signal))) {
            if (inGeneration.aborted && !stopping.signal.aborted) throw inGeneration.reason;
            return;
          }
        } finally {
          clearInterval(beat);
        }
        if (payload.isStale()) return;
        // The batch's last offset, a trailing transaction marker included (it carries no event).
        const last = batch.lastOffset();
        payload.resolveOffset(last);
        // Safe: every event up to `last` is in the call center, in the dead-letter topic, or parked durably in
        // call_center_retries / call_center_park_sweeps for a retry apart.
        await group!.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }]);
      },
    });
    ready = true;
    log.info({ group: config.SINK_GROUP_ID }, 'sink consuming');
    await Promise.race([crashed, new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve(), { once: true }))]);
  };

  const done = run().finally(async () => {
    ready = false;
    stopping.abort();
    // Nothing is left to commit by then (each batch commits its own offsets; those in flight were stopped).
    await Promise.race([group?.disconnect().catch(() => {}), sleep(GROUP_STOP_MS)]);
    await loops?.done;
    await deadLetters.close();
  });

  return {
    done,
    isReady: () => ready,
    async stop() {
      stopping.abort();
      await done.catch(() => {});
    },
  };
}
