// `fleet-sync sink`: a Kafka consumer group on the users, roles and call_center_parks topics that keeps the call
// center at what the database says, for every user of every enabled park. Offsets move only past events the call
// center (or the dead-letter topic) has.
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Consumer, EachBatchPayload, KafkaMessage, Producer } from 'kafkajs';
import { loadSchemaRegistry, type SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { isFleetSyncError } from '../errors.js';
import { createKafka } from '../kafka/client.js';
import { fastDefaultPartitioner } from '../kafka/partitioner.js';
import { deadLetterTopic, ensureTopics } from '../kafka/topics.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { CAPTURED_TABLES, topicFor, type DecodedEnvelope } from '../events.js';
import { sleep } from '../time.js';
import type { SyncContext } from '../sync/context.js';
import { profileChanged, type UserRow } from '../sync/desired.js';
import { loadParks, parkFromRow } from '../sync/parks.js';
import type { Reconciler } from '../sync/reconciler.js';
import { grantedUids, recordProgress, type ParkProgress } from '../sync/store.js';

type Envelope = DecodedEnvelope;

export interface SinkDeps {
  config: Config;
  log: Logger;
  metrics: Metrics;
  /** The shared pool, park directory and applier; owned (and closed) by the caller. */
  sync: SyncContext;
  /** Sweeps a park when its sync settings change (the backfill, or the revocation). */
  reconciler: Reconciler;
}

export interface SinkHandle {
  done: Promise<void>;
  stop(): Promise<void>;
  /** True once the park directory caught up with the call_center_parks topic and the group consumer runs. */
  isReady(): boolean;
}

const asUser = (row: Record<string, unknown> | null): UserRow | null => (row ? (row as unknown as UserRow) : null);

export function startSink(deps: SinkDeps): SinkHandle {
  const { config, metrics } = deps;
  const log = deps.log.child({ module: 'sink' });
  const registry: SchemaRegistry = loadSchemaRegistry();
  const { pool, parks, applier } = deps.sync;
  const { reconciler } = deps;
  const kafka = createKafka(config, deps.log, '-sink');
  const stopping = new AbortController();
  setMaxListeners(0, stopping.signal);
  const topics = {
    users: topicFor(config.TOPIC_PREFIX, 'users'),
    roles: topicFor(config.TOPIC_PREFIX, 'roles'),
    parks: topicFor(config.TOPIC_PREFIX, 'call_center_parks'),
    dlq: deadLetterTopic(config.TOPIC_PREFIX),
  };
  let ready = false;
  let parksTail: Consumer | null = null;
  let group: Consumer | null = null;
  let dlqProducer: Producer | null = null;

  const decode = (m: KafkaMessage): Envelope | null => (m.value ? (registry.decode<Envelope>(m.value).value as Envelope) : null);

  const mergeParkEvent = (env: Envelope) => {
    if (env.op === 't') for (const p of parks.all()) parks.remove(p.park_id, p.version);
    else if (env.after) parks.merge(parkFromRow(env.after));
    else if (env.before) parks.remove(String(env.before.park_id), parkFromRow(env.before).version);
  };

  /** Reads call_center_parks from the start up to its end at start-up, then keeps following it. */
  const startParksTail = async () => {
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topics.parks);
    await admin.disconnect();
    const pending = new Set(ends.filter((e) => BigInt(e.high) > BigInt(e.low)).map((e) => e.partition));
    const targets = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
    // A group of its own that never commits: every sink instance sees every park, from the start, on every start.
    parksTail = kafka.consumer({ groupId: `${config.SINK_GROUP_ID}.parks.${randomBytes(6).toString('hex')}`, maxWaitTimeInMs: 100 });
    await parksTail.connect();
    await parksTail.subscribe({ topic: topics.parks, fromBeginning: true });
    // Kafka-transactional topics end in commit markers that no handler sees: kafkajs's end-of-batch event reports
    // every fetched batch, markers included, with the offset it reached.
    parksTail.on(parksTail.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.offsetLag === '0' || BigInt(payload.lastOffset) + 1n >= (targets.get(payload.partition) ?? 0n)) pending.delete(payload.partition);
    });
    await parksTail.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) {
          const env = decode(message);
          if (env) mergeParkEvent(env);
        }
      },
    });
    // Users events must not be judged against an old view of the parks: the group waits for the directory.
    const startedAt = Date.now();
    let warnedAt = startedAt;
    while (pending.size > 0 && !stopping.signal.aborted) {
      await sleep(50, stopping.signal);
      if (Date.now() - warnedAt > 30_000) {
        warnedAt = Date.now();
        log.warn({ partitions: [...pending], waitedMs: warnedAt - startedAt }, 'park directory still catching up with the call_center_parks topic');
      }
    }
    log.info({ parks: parks.all().length, enabled: parks.enabled().length }, 'park directory caught up');
  };

  /** Parks the directory has never heard of are looked up once in the table (the topic may lag behind it). */
  const learnUnknownParks = async (parkIds: Iterable<string>) => {
    const unknown = [...new Set(parkIds)].filter((id) => !parks.get(id));
    if (unknown.length > 0) await loadParks(pool, parks, unknown);
  };

  const deadLetter = async (message: KafkaMessage, topic: string, partition: number, error: { code: string; message: string; attempts: number }) => {
    const headers: Record<string, string | Buffer> = {};
    for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = Array.isArray(v) ? String(v[0]) : (v as Buffer | string);
    await dlqProducer!.send({
      topic: topics.dlq,
      acks: -1,
      messages: [
        {
          key: message.key,
          value: message.value,
          headers: {
            ...headers,
            'fleet-sync.error.code': error.code,
            'fleet-sync.error.message': error.message,
            'fleet-sync.attempts': String(error.attempts),
            'fleet-sync.original.topic': topic,
            'fleet-sync.original.partition': String(partition),
            'fleet-sync.original.offset': message.offset,
            'fleet-sync.failed.at': new Date().toISOString(),
          },
        },
      ],
    });
    metrics.deadLetters.inc({ topic });
  };

  const handleUsers = async ({ batch }: EachBatchPayload) => {
    const eventsByUid = new Map<string, { message: KafkaMessage; env: Envelope }[]>();
    const changedProfiles = new Set<string>();
    const progress = new Map<string, ParkProgress>();
    const progressOf = (parkId: string) => {
      let p = progress.get(parkId);
      if (!p) progress.set(parkId, (p = { parkId, events: 0, skippedNoUid: 0, deadLettered: 0, lastLsn: null, lastCommitTsMs: null }));
      return p;
    };
    let truncated = false;
    const decoded = batch.messages.map((message) => ({ message, env: decode(message) }));
    await learnUnknownParks(decoded.flatMap(({ env }) => [env?.before?.park_id, env?.after?.park_id].filter((p): p is string => typeof p === 'string')));
    for (const { message, env } of decoded) {
      if (!env) continue; // tombstone: the delete before it carried the change
      if (env.op === 't') {
        truncated = true;
        continue;
      }
      const before = asUser(env.before);
      const after = asUser(env.after);
      const enabledParks = [before?.park_id, after?.park_id].filter((p): p is string => Boolean(p && parks.get(p)?.enabled));
      if (enabledParks.length === 0) continue; // neither side in a park that syncs
      const uids = [...new Set([before?.yandex_uid, after?.yandex_uid].filter((u): u is string => Boolean(u)))];
      for (const parkId of new Set(enabledParks)) {
        const p = progressOf(parkId);
        p.lastLsn = env.source.lsn;
        p.lastCommitTsMs = env.source.commit_ts_ms;
        if (uids.length === 0) p.skippedNoUid++;
        else p.events++;
      }
      if (uids.length === 0) {
        metrics.skippedNoUid.inc();
        continue;
      }
      if (profileChanged(before, after) && after?.yandex_uid) changedProfiles.add(after.yandex_uid);
      for (const uid of uids) eventsByUid.set(uid, [...(eventsByUid.get(uid) ?? []), { message, env }]);
    }
    // One pass per uid for the whole batch: the applier reads the rows as they are now, so the last state wins.
    const uids = truncated ? [...new Set([...eventsByUid.keys(), ...(await grantedUids(pool))])] : [...eventsByUid.keys()];
    const outcomes = await applier.syncUids(uids, { profileChanged: changedProfiles, signal: stopping.signal });
    const now = Date.now();
    for (const [uid, outcome] of outcomes) {
      const events = eventsByUid.get(uid) ?? [];
      if (outcome.error) {
        const e = outcome.error;
        for (const { message, env } of events) {
          await deadLetter(message, batch.topic, batch.partition, { code: e.code, message: e.message, attempts: Number(e.details?.attempts ?? 1) });
          const parkId = String((env.after ?? env.before)?.park_id ?? '');
          if (parkId) progressOf(parkId).deadLettered++;
        }
        continue;
      }
      for (const { env } of events) if (env.source.commit_ts_ms) metrics.commitToAppliedSeconds.observe((now - env.source.commit_ts_ms) / 1000);
    }
    await recordProgress(pool, [...progress.values()]);
  };

  const handleParks = async ({ batch, heartbeat }: EachBatchPayload) => {
    const touched = new Set<string>();
    for (const message of batch.messages) {
      const env = decode(message);
      if (!env) continue;
      mergeParkEvent(env);
      if (env.op === 't') for (const p of parks.all()) touched.add(p.park_id);
      const row = env.after ?? env.before;
      if (row) touched.add(String(row.park_id));
    }
    // Turned on, remapped, or off with revoke: the sweep of the park makes the call center match (the backfill).
    for (const parkId of touched) {
      const park = parks.get(parkId);
      const reason = park?.enabled ? 'park_on' : 'park_off';
      const sweepLog = log.child({ park_id: parkId, reason });
      sweepLog.info('park changed: sweeping it');
      let lastBeat = Date.now();
      try {
        await reconciler.reconcilePark(parkId, reason, {
          signal: stopping.signal,
          onProgress: () => {
            if (Date.now() - lastBeat > 1_000) {
              lastBeat = Date.now();
              void heartbeat().catch(() => {});
            }
          },
        });
      } catch (e) {
        // A refusal that retrying cannot mend (recorded in reconcile_runs) must not hold every later park change
        // of this partition: the interval sweep tries the park again.
        if (!isFleetSyncError(e) || e.retriable) throw e;
        sweepLog.error({ code: e.code, err: e.message }, 'sweep of a changed park failed for good; the interval sweep retries it');
      }
    }
  };

  const run = async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      await ensureTopics(admin, config, CAPTURED_TABLES.map((t) => topicFor(config.TOPIC_PREFIX, t)));
      await ensureTopics(admin, config, [topics.dlq], 'delete');
    } finally {
      await admin.disconnect();
    }
    dlqProducer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: fastDefaultPartitioner });
    await dlqProducer.connect();
    await startParksTail();
    if (stopping.signal.aborted) return;

    group = kafka.consumer({ groupId: config.SINK_GROUP_ID, maxWaitTimeInMs: 50, sessionTimeout: config.SINK_SESSION_TIMEOUT_MS, heartbeatInterval: 1_000 });
    await group.connect();
    await group.subscribe({ topics: [topics.users, topics.roles, topics.parks], fromBeginning: true });
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
        // A call-center outage can hold a batch for any length of time: stay in the group meanwhile.
        const beat = setInterval(() => void payload.heartbeat().catch(() => {}), 3_000);
        try {
          for (let attempt = 1; ; attempt++) {
            try {
              if (batch.topic === topics.users) await handleUsers(payload);
              else if (batch.topic === topics.parks) await handleParks(payload);
              // roles: a deleted role reaches its users as their own change (the foreign key sets role_id to null).
              break;
            } catch (e) {
              if (stopping.signal.aborted || !payload.isRunning() || payload.isStale()) return; // uncommitted: replayed
              const delayMs = Math.min(200 * 2 ** Math.min(attempt, 7), 10_000);
              log.warn({ topic: batch.topic, partition: batch.partition, attempt, delayMs, err: (e as Error).message, code: isFleetSyncError(e) ? e.code : undefined }, 'batch failed; retrying');
              await sleep(delayMs, stopping.signal);
            }
          }
        } finally {
          clearInterval(beat);
        }
        if (payload.isStale()) return;
        // The batch's last offset, a trailing transaction marker included (it carries no event).
        const last = batch.lastOffset();
        payload.resolveOffset(last);
        // Safe: every event up to `last` is in the call center or in the dead-letter topic.
        await group!.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }]);
      },
    });
    ready = true;
    log.info({ group: config.SINK_GROUP_ID }, 'sink consuming');
    await Promise.race([crashed, new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve(), { once: true }))]);
  };

  const done = run().finally(async () => {
    ready = false;
    await group?.disconnect().catch(() => {});
    await parksTail?.disconnect().catch(() => {});
    await dlqProducer?.disconnect().catch(() => {});
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
