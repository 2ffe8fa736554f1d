// `fleet-sync source`: preflight, leadership (a standby waits), the first start's snapshot, then streaming
// with reconnects. Wires the decoder, the publisher and the replication session together.
import { setMaxListeners } from 'node:events';
import pg from 'pg';
import { loadSchemaRegistry, type SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { FleetSyncError, isFleetSyncError } from '../errors.js';
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

export type SourceState = 'starting' | 'standby' | 'snapshot' | 'streaming' | 'reconnecting' | 'stopped';

export interface SourceHandle {
  /** Settles when the source has stopped: resolves after a stop, rejects on an error it cannot go on from. */
  done: Promise<void>;
  /** Flushes what was read, confirms it, and stops. */
  stop(): Promise<void>;
  /** True once this process holds the slot (a standby waits before that). */
  isLeader(): boolean;
  /** What the source is doing now: for readiness and status. */
  state(): SourceState;
}

/** Conditions no reconnect can mend: the process exits non-zero so that an operator (or a supervisor) sees them. */
const FATAL_CODES = new Set(['CONFIG_INVALID', 'DB_NOT_LOGICAL', 'SLOT_WRONG_PLUGIN', 'PUBLICATION_INCOMPLETE', 'SCHEMA_INCOMPATIBLE', 'SOURCE_FENCED', 'KAFKA_NOT_AUTHORIZED', 'KAFKA_RECORD_TOO_LARGE']);
const fatal = (e: unknown) => isFleetSyncError(e) && FATAL_CODES.has(e.code);

/** A reconnect loop that ran this long was healthy: its backoff starts over. */
const HEALTHY_RUN_MS = 30_000;
const backoffMs = (attempt: number) => Math.min(250 * 2 ** Math.min(attempt, 6), 10_000);

const LEADERSHIP_LOCK = (slot: string) => `fleet-sync.source.${slot}`;

export function startSource(deps: SourceDeps): SourceHandle {
  const { config, metrics } = deps;
  const log = deps.log.child({ module: 'source', slot: config.CDC_SLOT });
  const registry = deps.registry ?? loadSchemaRegistry();
  const publisher = deps.publisher ?? createKafkaPublisher({ config, log: deps.log });
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 4 });
  pool.on('error', (e) => log.warn({ err: e.message }, 'idle database connection failed'));
  const stopController = new AbortController();
  const giveUp = new AbortController();
  setMaxListeners(0, stopController.signal, giveUp.signal);
  let state: SourceState = 'starting';
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

  /**
   * Holds a session-level advisory lock for the slot on its own connection; a standby polls until it gets it.
   * `onLost` runs if that connection fails later (a database restart): the lock is gone with it.
   */
  const becomeLeader = async (onLost: (e: Error) => void): Promise<pg.Client | null> => {
    const lockClient = new pg.Client({ connectionString: config.DATABASE_URL });
    let held = false;
    // Without a listener a connection error would end the process; while waiting, the failing query reports it.
    lockClient.on('error', (e) => {
      if (held) onLost(e);
    });
    // A connection closed without an error (the server went away quietly) loses the lock all the same.
    lockClient.on('end', () => {
      if (held) onLost(new Error('the leadership connection closed'));
    });
    try {
      await lockClient.connect();
      let waiting = false;
      while (!stopController.signal.aborted) {
        const { rows } = await lockClient.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [LEADERSHIP_LOCK(config.CDC_SLOT)]);
        if (rows[0]?.ok) {
          held = true;
          return lockClient;
        }
        if (!waiting) log.info('another source streams this slot: standing by');
        waiting = true;
        state = 'standby';
        await sleep(config.CDC_STANDBY_POLL_MS, stopController.signal);
      }
    } catch (e) {
      await lockClient.end().catch(() => {});
      throw e;
    }
    await lockClient.end().catch(() => {});
    return null;
  };

  /** Whether this process still holds the slot's leadership lock (and its connection answers). */
  const holdsLeadership = async (lockClient: pg.Client): Promise<boolean> => {
    try {
      const { rows } = await lockClient.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted`,
      );
      return (rows[0]?.n ?? 0) > 0;
    } catch {
      return false;
    }
  };

  /**
   * One leadership term: preflight, the lock, topics, the first start's snapshot, then streaming with reconnects.
   * Resolves on stop; rejects when the term cannot go on (the lock connection lost, the database unreachable).
   */
  const leadershipTerm = async (converters: ReturnType<typeof rowConverters>) => {
    // Checked before standing by too, so that a misconfigured database stops the command at once.
    await preflight(pool, config, log);
    // Losing the lock connection means a standby may take over: stop streaming at once, without confirming more.
    const term = new AbortController();
    setMaxListeners(0, term.signal);
    let released = false;
    const lockClient = await becomeLeader((e) => {
      if (released || term.signal.aborted) return;
      log.error({ err: e.message }, 'lost the source leadership connection: ending this term, then reconnecting');
      term.abort();
    });
    if (!lockClient) return;
    leader = true;
    const streamStop = AbortSignal.any([stopController.signal, term.signal]);
    const streamGiveUp = AbortSignal.any([giveUp.signal, term.signal]);
    setMaxListeners(0, streamStop, streamGiveUp);
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
          // The leadership connection went while Kafka was away: this term ends, and the next one reconnects.
          if (term.signal.aborted) throw new FleetSyncError('REPLICATION_FAILED', 'the source leadership connection was lost');
          log.warn({ err: (e as Error).message, attempt }, 'Kafka not reachable to create topics; retrying');
          await sleep(Math.min(500 * attempt, 1_000), streamStop);
        }
      }

      // Read again after winning leadership, always: while this process stood by, the previous leader may have
      // created the slot and finished its snapshot. Judged by the state from before, the slot would be dropped and
      // the snapshot taken again, and every change between the two would be lost as an event.
      const current = await preflight(pool, config, log);
      if (!current.snapshotDone || !current.exists) {
        if (current.exists) {
          log.warn('slot exists but its snapshot never finished: dropping it and starting over');
          await dropSlot(pool, config.CDC_SLOT);
        }
        state = 'snapshot';
        await takeSnapshot({
          config,
          pool,
          log: deps.log,
          db,
          converters,
          publish: async (events) => {
            await publishUntilAcknowledged(publisher, events.flatMap((e) => toRecords(e, registry, config.TOPIC_PREFIX, partitions)), log, streamGiveUp);
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
      for (let attempt = 1; !streamStop.aborted; ) {
        const started = Date.now();
        try {
          state = 'streaming';
          await streamChanges({ config, pool, log: deps.log, metrics, registry, publisher, partitions, converters, db, scope }, streamStop, streamGiveUp);
        } catch (e) {
          if (streamStop.aborted) break;
          if (fatal(e) && !isFleetSyncError(e, 'SOURCE_FENCED')) throw e;
          if (isFleetSyncError(e, 'SOURCE_FENCED')) {
            // A transaction the broker timed out (a long broker outage) fences the producer too: while the
            // leadership lock is still ours, no other source exists, so a new producer goes on from the mark.
            if (!(await holdsLeadership(lockClient))) throw e;
            log.warn({ err: e.message }, 'Kafka fenced the producer but this source still leads the slot: starting a new producer');
          }
          if (Date.now() - started > HEALTHY_RUN_MS) attempt = 1;
          const delayMs = backoffMs(attempt++);
          state = 'reconnecting';
          log.warn({ err: (e as Error).message, attempt, delayMs }, 'replication session ended; reconnecting');
          await sleep(delayMs, streamStop);
        }
      }
      if (term.signal.aborted && !stopController.signal.aborted) {
        throw new FleetSyncError('REPLICATION_FAILED', 'the source leadership connection was lost');
      }
    } finally {
      leader = false;
      released = true;
      await lockClient.end().catch(() => {});
    }
  };

  const run = async () => {
    const converters = rowConverters(registry, deps.log);
    // Terms follow each other until stop: a database restart ends one (its connections fail) and the next one
    // waits for the database, takes the leadership lock again, and resumes from the slot.
    for (let attempt = 1; !stopController.signal.aborted; ) {
      const started = Date.now();
      try {
        await leadershipTerm(converters);
        return;
      } catch (e) {
        if (stopController.signal.aborted) return;
        if (fatal(e)) throw e;
        if (Date.now() - started > HEALTHY_RUN_MS) attempt = 1;
        const delayMs = backoffMs(attempt++);
        state = 'reconnecting';
        log.warn({ err: (e as Error).message, code: isFleetSyncError(e) ? e.code : (e as { code?: string }).code, attempt, delayMs }, 'source lost the database; reconnecting');
        await sleep(delayMs, stopController.signal);
      }
    }
  };

  const done = run().finally(async () => {
    state = 'stopped';
    clearInterval(lagTimer);
    await publisher.close();
    await pool.end().catch(() => {});
  });

  return {
    done,
    isLeader: () => leader,
    state: () => state,
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
