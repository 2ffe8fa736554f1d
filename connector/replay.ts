// `fleet-sync replay`: reads a topic from a chosen position up to where it ended when the replay started, and
// prints the decoded events (JSON lines on stdout) or re-applies them to the call center.
import { randomBytes } from 'node:crypto';
import { capEvents, eventCause, type EventCause } from './audit/trail.js';
import { loadSchemaRegistry } from './avro/registry.js';
import type { Config } from './config.js';
import { FleetSyncError } from './errors.js';
import { createKafka } from './kafka/client.js';
import type { Logger } from './log.js';
import type { SyncContext } from './sync/context.js';
import type { Reconciler } from './sync/reconciler.js';
import { CAPTURED_TABLES, topicFor, type DecodedEnvelope } from './events.js';

export interface ReplayOptions {
  topic: string;
  from: { kind: 'beginning' } | { kind: 'offset'; offset: bigint } | { kind: 'time'; ms: number };
  to: 'stdout' | 'callcenter';
  park?: string;
  out?: NodeJS.WritableStream;
}

type Envelope = DecodedEnvelope;

export function resolveTopic(config: Config, name: string): string {
  return (CAPTURED_TABLES as readonly string[]).includes(name) ? topicFor(config.TOPIC_PREFIX, name) : name;
}

export interface ReplayDeps {
  config: Config;
  log: Logger;
  /** For `to: 'callcenter'`: the applier and the reconciler the events are re-applied through (closed by the caller). */
  apply?: { sync: SyncContext; reconciler: Reconciler };
}

/** Returns how many events it read (after the park filter). */
export async function replay(deps: ReplayDeps, options: ReplayOptions): Promise<number> {
  const { config } = deps;
  const log = deps.log.child({ module: 'replay', topic: options.topic });
  const registry = loadSchemaRegistry();
  const kafka = createKafka(config, deps.log, '-replay');
  const admin = kafka.admin();
  await admin.connect();
  let starts: Map<number, bigint>;
  let ends: Map<number, bigint>;
  try {
    if (!(await admin.listTopics()).includes(options.topic)) throw new FleetSyncError('BAD_REQUEST', `topic ${options.topic} does not exist`);
    const offsets = await admin.fetchTopicOffsets(options.topic);
    ends = new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
    const lows = new Map(offsets.map((o) => [o.partition, BigInt(o.low)]));
    if (options.from.kind === 'time') {
      const byTime = await admin.fetchTopicOffsetsByTimestamp(options.topic, options.from.ms);
      starts = new Map(byTime.map((o) => [o.partition, BigInt(o.offset)]));
    } else {
      const from = options.from;
      starts = new Map([...lows].map(([p, low]) => [p, from.kind === 'offset' && from.offset > low ? from.offset : low]));
    }
  } finally {
    await admin.disconnect();
  }
  const total = [...ends].reduce((n, [p, end]) => n + Number(end > (starts.get(p) ?? 0n) ? end - (starts.get(p) ?? 0n) : 0n), 0);
  const pending = new Set([...ends].filter(([p, end]) => end > (starts.get(p) ?? 0n)).map(([p]) => p));
  log.info({ total, to: options.to, park: options.park }, 'replay started');
  if (pending.size === 0) return 0;

  if (options.to === 'callcenter' && !deps.apply) throw new FleetSyncError('BAD_REQUEST', 'a replay to the call center needs the applier');
  const apply = options.to === 'callcenter' ? deps.apply : undefined;
  const out = options.out ?? process.stdout;
  const consumer = kafka.consumer({ groupId: `${config.SINK_GROUP_ID}.replay.${randomBytes(6).toString('hex')}`, maxWaitTimeInMs: 100 });
  let read = 0;
  let kept = 0;
  let lastReport = Date.now();
  let finish!: () => void;
  let fail!: (e: unknown) => void;
  const finished = new Promise<void>((resolve, reject) => ((finish = resolve), (fail = reject)));
  const parksTopic = topicFor(config.TOPIC_PREFIX, 'call_center_parks');
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: options.topic, fromBeginning: true });
    // Transactional topics end in commit markers no handler sees: the end-of-batch event reports the offset reached.
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (BigInt(payload.lastOffset) + 1n >= (ends.get(payload.partition) ?? 0n)) pending.delete(payload.partition);
      if (pending.size === 0) finish();
    });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        try {
          const end = ends.get(batch.partition) ?? 0n;
          const uids = new Set<string>();
          const causes = new Map<string, EventCause[]>();
          const parkIds = new Set<string>();
          for (const m of batch.messages) {
            if (BigInt(m.offset) >= end) break;
            read++;
            const value = m.value ? registry.decode<Envelope>(m.value).value : null;
            const row = value ? (value.after ?? value.before) : null;
            if (options.park && row?.park_id !== options.park && value?.before?.park_id !== options.park) continue;
            kept++;
            if (options.to === 'stdout') {
              const key = m.key ? registry.decode(m.key).value : null;
              out.write(`${JSON.stringify({ topic: batch.topic, partition: batch.partition, offset: m.offset, key, value })}\n`);
            } else if (value) {
              for (const r of [value.before, value.after]) {
                if (!r?.yandex_uid) continue;
                const uid = String(r.yandex_uid);
                uids.add(uid);
                const cause = eventCause(value, { topic: batch.topic, partition: batch.partition, offset: m.offset });
                const known = causes.get(uid) ?? [];
                if (!known.some((c) => c.offset === cause.offset)) causes.set(uid, [...known, cause]);
              }
              if (batch.topic === parksTopic && row) parkIds.add(String(row.park_id));
            }
          }
          // The applier judges each uid by its rows and parks as the table has them now.
          if (apply && uids.size > 0) await apply.sync.applier.syncUids(uids, { cause: (uid) => ({ kind: 'replay', ...capEvents(causes.get(uid) ?? []) }) });
          if (apply) for (const parkId of parkIds) await apply.reconciler.reconcilePark(parkId, 'replay');
          if (Date.now() - lastReport > 2_000) {
            lastReport = Date.now();
            log.info({ read, total, percent: Math.round((100 * read) / Math.max(total, 1)) }, 'replay progress');
          }
        } catch (e) {
          fail(e);
        }
      },
    });
    for (const [partition, offset] of starts) consumer.seek({ topic: options.topic, partition, offset: offset.toString() });
    await finished;
  } finally {
    await consumer.disconnect();
  }
  log.info({ read, kept }, 'replay done');
  return kept;
}
