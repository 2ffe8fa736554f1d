// The first start's consistent snapshot: a slot created with an exported snapshot, the captured tables read
// inside it as op "r" events; streaming then starts at the slot's consistent point, so nothing is missed or doubled.
import pg from 'pg';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { CAPTURED_TABLES, type CapturedTable, type ChangeEvent } from '../events.js';
import { keyOf } from './decoder.js';
import type { RowConverter } from './rows.js';

export interface SnapshotDeps {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  db: string;
  converters: Record<CapturedTable, RowConverter>;
  /** Resolves once Kafka has the events. */
  publish(events: ChangeEvent[]): Promise<void>;
  fetchSize?: number;
}

/** Drops a slot left by a snapshot that never finished, so the snapshot can start over. */
export async function dropSlot(pool: pg.Pool, slot: string): Promise<void> {
  await pool.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
}

export async function takeSnapshot(deps: SnapshotDeps): Promise<{ lsn: string; rows: number }> {
  const { config, pool, converters } = deps;
  const log = deps.log.child({ module: 'snapshot', slot: config.CDC_SLOT });
  const fetchSize = deps.fetchSize ?? 5_000;

  await pool.query(
    `INSERT INTO fleet_sync_source_state (slot_name) VALUES ($1)
     ON CONFLICT (slot_name) DO UPDATE SET snapshot_lsn = NULL, snapshot_done_at = NULL`,
    [config.CDC_SLOT],
  );

  const replication = new pg.Client({ connectionString: config.DATABASE_URL, replication: 'database' } as pg.ClientConfig);
  await replication.connect();
  const reader = await pool.connect();
  let lsn: string;
  try {
    // The exported snapshot lives only while this replication connection stays idle: import it first.
    const created = await replication.query(`CREATE_REPLICATION_SLOT "${config.CDC_SLOT}" LOGICAL pgoutput EXPORT_SNAPSHOT`);
    const { consistent_point, snapshot_name } = created.rows[0] as { consistent_point: string; snapshot_name: string };
    lsn = consistent_point;
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`SET TRANSACTION SNAPSHOT '${snapshot_name}'`);
  } catch (e) {
    reader.release();
    throw e;
  } finally {
    await replication.end();
  }

  let done = 0;
  try {
    const totals: Record<string, number> = {};
    for (const table of CAPTURED_TABLES) {
      totals[table] = Number((await reader.query(`SELECT count(*) AS n FROM public.${table}`)).rows[0].n);
    }
    const total = Object.values(totals).reduce((a, b) => a + b, 0);
    log.info({ lsn, total, ...totals }, 'snapshot started');
    const snapshotMs = Date.now();
    let lastReport = Date.now();
    for (const table of CAPTURED_TABLES) {
      await reader.query(`DECLARE snap_${table} NO SCROLL CURSOR FOR SELECT * FROM public.${table}`);
      for (;;) {
        const { rows } = await reader.query(`FETCH ${fetchSize} FROM snap_${table}`);
        if (rows.length === 0) break;
        const events = rows.map((r): ChangeEvent => {
          const after = converters[table].convert(r);
          return {
            table,
            op: 'r',
            key: keyOf(table, after),
            before: null,
            after,
            ts_ms: Date.now(),
            source: { db: deps.db, schema: 'public', table, lsn, tx_id: null, commit_ts_ms: snapshotMs, snapshot: true },
          };
        });
        await deps.publish(events);
        done += rows.length;
        if (Date.now() - lastReport > 2_000) {
          lastReport = Date.now();
          log.info({ done, total, table, percent: Math.round((100 * done) / Math.max(total, 1)) }, 'snapshot progress');
        }
      }
      await reader.query(`CLOSE snap_${table}`);
    }
    await reader.query('COMMIT');
  } catch (e) {
    await reader.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    reader.release();
  }
  await pool.query('UPDATE fleet_sync_source_state SET snapshot_lsn = $2, snapshot_done_at = now() WHERE slot_name = $1', [config.CDC_SLOT, lsn]);
  log.info({ lsn, rows: done }, 'snapshot done');
  return { lsn, rows: done };
}
