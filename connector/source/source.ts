// `fleet-sync source`: preflight, leadership (a standby waits), the first start's snapshot, then streaming
// with reconnects. Wires the decoder, the publisher and the replication session together.
import pg from 'pg';
import { loadSchemaRegistry, type SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { rowConverters } from './decoder.js';
import { preflight } from './preflight.js';
import { createKafkaPublisher, toRecords, type Publisher } from './publisher.js';
import { sleep } from '../time.js';
import { publishUntilAcknowledged } from './retry.js';
import { dropSlot, takeSnapshot } from './snapshot.js';
import { streamChanges } from './stream.js';

export interface SourceDeps {
  config: Config;
  log: Logger;
  metrics: Metrics;
  registry?: SchemaRegistry;
  publisher?: Publisher;
  /** How long a stop waits for Kafka to take what was already read before giving up on it (it stays unconfirmed). */
  stopTimeoutMs?: number;
}

export interface SourceHandle {
  /** Settles when the source has stopped: resolves after a stop, rejects on a fatal error. */
  done: Promise<void>;
  /** Flushes what was read, confirms it, and stops. */
  stop(): Promise<void>;
  /** True once this process holds the slot (a standby waits before that). */
  isLeader(): boolean;
}

export function startSource(deps: SourceDeps): SourceHandle {
  const { config, metrics } = deps;
  const log = deps.log.child({ module: 'source', slot: config.CDC_SLOT });
  const registry = deps.registry ?? loadSchemaRegistry();
  const publisher = deps.publisher ?? createKafkaPublisher({ config, log: deps.log });
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 4 });
  pool.on('error', (e) => log.warn({ err: e.message }, 'idle database connection failed'));
  const stopController = new AbortController();
  const giveUp = new AbortController();
  let leader = false;

  const lagTimer = setInterval(() => {
    pool
      .query<{ lag: string | null }>(
        'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag FROM pg_replication_slots WHERE slot_name = $1',
        [config.CDC_SLOT],
      )
      .then(({ rows }) => rows[0]?.lag != null && metrics.replicationLagBytes.set({ slot: config.CDC_SLOT }, Number(rows[0].lag)))
      .catch(() => {});
  }, 5_000);

  /** Holds a session-level advisory lock for the slot on its own connection; a standby polls until it gets it. */
  const becomeLeader = async (): Promise<pg.Client | null> => {
    const lockClient = new pg.Client({ connectionString: config.DATABASE_URL });
    await lockClient.connect();
    let waiting = false;
    while (!stopController.signal.aborted) {
      const { rows } = await lockClient.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [`fleet-sync.source.${config.CDC_SLOT}`]);
      if (rows[0]?.ok) return lockClient;
      if (!waiting) log.info('another source streams this slot: standing by');
      waiting = true;
      await sleep(config.CDC_STANDBY_POLL_MS, stopController.signal);
    }
    await lockClient.end();
    return null;
  };

  const run = async () => {
    const converters = rowConverters(registry, deps.log);
    const slotState = await preflight(pool, config, log);
    const lockClient = await becomeLeader();
    if (!lockClient) return;
    leader = true;
    // Losing the lock connection means a standby may take over: stop streaming at once, without confirming more.
    lockClient.on('error', (e) => {
      log.error({ err: e.message }, 'lost the source leadership connection: stopping');
      giveUp.abort();
      stopController.abort();
    });
    try {
      log.info('source is the leader for this slot');
      const { rows } = await pool.query<{ db: string }>('SELECT current_database() AS db');
      const db = rows[0]!.db;
      let partitions;
      for (let attempt = 1; ; attempt++) {
        try {
          partitions = await publisher.ensureTopics();
          break;
        } catch (e) {
          if (stopController.signal.aborted) return;
          log.warn({ err: (e as Error).message, attempt }, 'Kafka not reachable to create topics; retrying');
          await sleep(Math.min(500 * attempt, 5_000), stopController.signal);
        }
      }

      // Re-read after winning leadership: the previous leader may have finished the snapshot meanwhile.
      const state = slotState.exists || slotState.snapshotDone ? await preflight(pool, config, log) : slotState;
      if (!state.snapshotDone || !state.exists) {
        if (state.exists) {
          log.warn('slot exists but its snapshot never finished: dropping it and starting over');
          await dropSlot(pool, config.CDC_SLOT);
        }
        await takeSnapshot({
          config,
          pool,
          log: deps.log,
          db,
          converters,
          publish: async (events) => {
            await publishUntilAcknowledged(publisher, events.flatMap((e) => toRecords(e, registry, config.TOPIC_PREFIX, partitions)), log, giveUp.signal);
            // Snapshot events count as produced like streamed ones, once Kafka acknowledged them; one update per table.
            const perTable = new Map<string, number>();
            for (const e of events) perTable.set(e.table, (perTable.get(e.table) ?? 0) + 1);
            for (const [table, n] of perTable) metrics.eventsProduced.inc({ table, op: 'r' }, n);
          },
        });
      }

      // The marks of exactly-once belong to this slot's stream on this database: a new slot, or a restored or
      // re-initialised cluster (whose LSNs start over), must never skip by an old mark.
      const { rows: stateRows } = await pool.query<{ snapshot_lsn: string }>('SELECT snapshot_lsn FROM fleet_sync_source_state WHERE slot_name = $1', [config.CDC_SLOT]);
      // pg_control_* need pg_monitor (or superuser); without it the slot's snapshot LSN alone scopes the marks.
      const cluster = await pool
        .query<{ id: string }>(`SELECT system_identifier::text || '/' || (SELECT timeline_id FROM pg_control_checkpoint()) AS id FROM pg_control_system()`)
        .then(({ rows: r }) => r[0]?.id ?? '', () => '');
      const scope = `${cluster}/${stateRows[0]?.snapshot_lsn ?? ''}`;
      for (let attempt = 1; !stopController.signal.aborted; attempt++) {
        try {
          await streamChanges({ config, pool, log: deps.log, metrics, registry, publisher, partitions, converters, db, scope }, stopController.signal, giveUp.signal);
          attempt = 0;
        } catch (e) {
          if (stopController.signal.aborted) break;
          if (isFleetSyncError(e, 'SOURCE_FENCED')) throw e;
          const delayMs = Math.min(250 * 2 ** Math.min(attempt, 6), 10_000);
          log.warn({ err: (e as Error).message, attempt, delayMs }, 'replication session ended; reconnecting');
          await sleep(delayMs, stopController.signal);
        }
      }
    } finally {
      await lockClient.end().catch(() => {});
      leader = false;
    }
  };

  const done = run().finally(async () => {
    clearInterval(lagTimer);
    await publisher.close();
    await pool.end().catch(() => {});
  });

  return {
    done,
    isLeader: () => leader,
    async stop() {
      stopController.abort();
      const timer = setTimeout(() => {
        log.warn('Kafka did not take the remaining events in time; they stay unconfirmed and will be re-sent');
        giveUp.abort();
      }, deps.stopTimeoutMs ?? 30_000);
      try {
        await done;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
