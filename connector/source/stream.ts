// One replication session: pgoutput from the slot → decoded change events → Kafka, confirming to PostgreSQL only
// LSNs whose every earlier event Kafka has acknowledged. Ends on stop (after flushing) or on a connection error.
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import type { SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { createDecoder, HEARTBEAT_PREFIX } from './decoder.js';
import { formatLsn, parseLsn, positionAfter, type CapturedTable, type StreamPosition } from '../events.js';
import { recordSize, toRecords, type ChangeRecord, type Publisher } from './publisher.js';
import { sleep } from '../time.js';
import { publishUntilAcknowledged } from './retry.js';
import type { RowConverter } from './rows.js';

export interface StreamDeps {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  metrics: Metrics;
  registry: SchemaRegistry;
  publisher: Publisher;
  partitions: Record<CapturedTable, number>;
  converters: Record<CapturedTable, RowConverter>;
  db: string;
  /** The cluster, timeline and the slot's snapshot LSN: scopes the exactly-once marks to this slot's stream. */
  scope: string;
}

type Item =
  | { kind: 'event'; table: CapturedTable; op: string; records: ChangeRecord[]; bytes: number; position: StreamPosition }
  | { kind: 'checkpoint'; lsn: bigint };

/** A batch's share of the broker's size limit: keys, values and each record's framing (length, attributes, deltas). */
function recordBytes(records: readonly ChangeRecord[]): number {
  let n = 0;
  for (const r of records) n += recordSize(r) + 24;
  return n;
}

/**
 * Streams until `stop` aborts (then flushes what was decoded, confirms it, and resolves) or the replication
 * connection fails (then rejects after the batch in flight settles; the caller reconnects from the slot).
 * `giveUp` abandons a publish that Kafka keeps refusing, leaving it unconfirmed.
 */
export async function streamChanges(deps: StreamDeps, stop: AbortSignal, giveUp: AbortSignal): Promise<void> {
  const { config, metrics, registry, publisher, partitions } = deps;
  const log = deps.log.child({ module: 'stream', slot: config.CDC_SLOT });
  const maxBatch = config.CDC_MAX_BATCH_EVENTS;
  const maxBatchBytes = config.CDC_MAX_BATCH_BYTES;
  const maxPending = config.CDC_MAX_PENDING_EVENTS;

  const { rows } = await deps.pool.query<{ lsn: string | null }>(
    'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
    [config.CDC_SLOT],
  );
  let confirmed = rows[0]?.lsn ? parseLsn(rows[0].lsn) : 0n;

  const service = new LogicalReplicationService(
    { connectionString: config.DATABASE_URL },
    // auto=false and timeoutSeconds=0: the library would otherwise confirm the last *received* LSN on a timer,
    // past events Kafka may not have. flowControl pauses the socket while our handler awaits queue space.
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [config.CDC_PUBLICATION], messages: true });
  const decoder = createDecoder({ db: deps.db, converters: deps.converters });
  // Exactly-once: the slot replays from the last LSN PostgreSQL confirmed, which can be behind what Kafka
  // committed (a crash between the two). Events up to the last committed mark are in Kafka already: skip them.
  const mark = await publisher.lastMark();
  let skipThrough = mark && mark.scope === deps.scope ? mark.position : null;
  const { rows: walRows } = await deps.pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  if (skipThrough && skipThrough.lsn > parseLsn(walRows[0]!.lsn)) {
    log.error({ mark: formatLsn(skipThrough.lsn), wal: walRows[0]!.lsn }, 'the stream mark is ahead of the database: ignoring it (was the database restored?)');
    skipThrough = null;
  }
  if (skipThrough) log.info({ lsn: formatLsn(skipThrough.lsn), seq: skipThrough.seq }, 'skipping what Kafka already has');

  const queue: Item[] = [];
  let queuedEvents = 0;
  let failure: Error | null = null;
  let intakeClosed = false;
  let wakePump: (() => void) | null = null;
  let wakeIntake: (() => void) | null = null;
  const signalPump = () => {
    wakePump?.();
    wakePump = null;
  };
  const signalIntake = () => {
    wakeIntake?.();
    wakeIntake = null;
  };

  // The library adds one to the LSN it is given; a confirmed position is "everything before this LSN".
  const sendStatus = () => {
    if (confirmed > 0n) void service.acknowledge(formatLsn(confirmed - 1n));
  };
  const fail = (e: unknown) => {
    failure ??= e instanceof Error ? e : new Error(String(e));
    intakeClosed = true;
    signalPump();
    signalIntake();
  };

  // Never throws: with flowControl a throwing handler has its message skipped. A failure ends the session
  // instead, and the next session replays from the last confirmed LSN.
  service.on('data', async (_lsn: string, message: Pgoutput.Message) => {
    if (intakeClosed) return;
    try {
      for (const item of decoder.decode(message)) {
        if (item.kind === 'checkpoint') {
          queue.push(item);
        } else {
          if (skipThrough) {
            if (!positionAfter(item.position, skipThrough)) continue;
            skipThrough = null;
          }
          const e = item.event;
          const records = toRecords(e, registry, config.TOPIC_PREFIX, partitions);
          queue.push({ kind: 'event', table: e.table, op: e.op, records, bytes: recordBytes(records), position: item.position });
          queuedEvents++;
        }
      }
      signalPump();
      while (queuedEvents >= maxPending && !intakeClosed) await new Promise<void>((r) => (wakeIntake = r));
    } catch (e) {
      log.error({ err: e, tag: message.tag }, 'could not decode a replication message');
      fail(e);
    }
  });
  service.on('heartbeat', (_lsn: string, _ts: number, shouldRespond: boolean) => {
    // The keepalive's own LSN is not confirmed: data messages before it may still wait in the library's queue.
    if (shouldRespond) sendStatus();
  });
  service.on('error', (e: Error) => fail(e));

  const sessionStartedAt = Date.now();
  let firstPublished = false;
  const pump = async () => {
    for (;;) {
      if (queue.length === 0) {
        if (intakeClosed) return;
        await new Promise<void>((r) => (wakePump = r));
        continue;
      }
      if (queuedEvents < maxBatch && config.CDC_LINGER_MS > 0 && !intakeClosed) await sleep(config.CDC_LINGER_MS);
      let events = 0;
      let bytes = 0;
      let taken = 0;
      let checkpoint: bigint | null = null;
      let last: StreamPosition | null = null;
      for (; taken < queue.length; taken++) {
        const item = queue[taken]!;
        if (item.kind === 'checkpoint') checkpoint = item.lsn;
        else if (events === maxBatch || (events > 0 && bytes + item.bytes > maxBatchBytes)) break;
        else {
          events++;
          bytes += item.bytes;
          last = item.position;
        }
      }
      const batch = queue.splice(0, taken);
      queuedEvents -= events;
      signalIntake();
      const records: ChangeRecord[] = [];
      for (const item of batch) if (item.kind === 'event') for (const r of item.records) records.push(r);
      await publishUntilAcknowledged(publisher, records, log, giveUp, last ? { scope: deps.scope, position: last } : undefined);
      // Once a session: how long after (re)connecting Kafka took the first events (a recovery's timeline).
      if (!firstPublished && records.length > 0) {
        firstPublished = true;
        log.info({ records: records.length, afterStartMs: Date.now() - sessionStartedAt }, 'first batch of the session published');
      }
      // One counter update per table and op per batch, not per event.
      const produced = new Map<string, { table: CapturedTable; op: string; n: number }>();
      for (const item of batch) {
        if (item.kind !== 'event') continue;
        const k = `${item.table}/${item.op}`;
        const c = produced.get(k);
        if (c) c.n++;
        else produced.set(k, { table: item.table, op: item.op, n: 1 });
      }
      for (const { table, op, n } of produced.values()) metrics.eventsProduced.inc({ table, op }, n);
      // Kafka now has every event up to this checkpoint: only now may PostgreSQL release the WAL behind it.
      if (checkpoint !== null && checkpoint > confirmed) {
        confirmed = checkpoint;
        sendStatus();
      }
    }
  };

  const heartbeat = setInterval(() => {
    deps.pool.query('SELECT pg_logical_emit_message(false, $1, $2)', [HEARTBEAT_PREFIX, '']).catch((e: Error) => {
      log.warn({ err: e.message }, 'heartbeat message failed');
    });
  }, config.CDC_HEARTBEAT_INTERVAL_MS);
  const onStop = () => {
    intakeClosed = true;
    signalPump();
    signalIntake();
  };
  stop.addEventListener('abort', onStop, { once: true });

  const pumping = pump();
  // START_REPLICATION at 0/0 resumes from the slot's confirmed position.
  const replication = service.subscribe(plugin, config.CDC_SLOT, '0/0').then(
    () => fail(new Error('replication stream ended')),
    (e: unknown) => fail(e),
  );
  log.info({ confirmed: formatLsn(confirmed) }, 'streaming');
  try {
    await pumping;
    sendStatus();
  } finally {
    clearInterval(heartbeat);
    stop.removeEventListener('abort', onStop);
    await service.destroy().catch(() => {});
    await replication;
  }
  if (!stop.aborted && failure) throw failure;
  log.info({ confirmed: formatLsn(confirmed) }, 'stream stopped');
}
