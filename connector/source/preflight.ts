// Checks at start that the database can feed the source, and says what to run when it cannot.
import type pg from 'pg';
import type { Config } from '../config.js';
import { FleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { CAPTURED_TABLES } from '../events.js';

export interface SlotState {
  exists: boolean;
  snapshotDone: boolean;
}

export async function preflight(pool: pg.Pool, config: Config, log: Logger): Promise<SlotState> {
  const { rows: wal } = await pool.query<{ wal_level: string }>('SHOW wal_level');
  if (wal[0]?.wal_level !== 'logical') {
    throw new FleetSyncError(
      'DB_NOT_LOGICAL',
      `wal_level is ${wal[0]?.wal_level}, logical replication needs logical: run "ALTER SYSTEM SET wal_level = logical" and restart PostgreSQL`,
    );
  }
  const { rows: migrated } = await pool.query(`SELECT to_regclass('public.fleet_sync_source_state') AS t`);
  if (!migrated[0]?.t) throw new FleetSyncError('CONFIG_INVALID', 'the database has no fleet-sync tables: run "fleet-sync migrate" first');

  const pub = config.CDC_PUBLICATION;
  const { rows: pubRows } = await pool.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [pub]);
  if (pubRows.length === 0) {
    await pool.query(`CREATE PUBLICATION ${pub} FOR TABLE ${CAPTURED_TABLES.join(', ')}`);
    log.info({ publication: pub }, 'publication created');
  } else {
    const { rows } = await pool.query<{ tablename: string }>(
      `SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'`,
      [pub],
    );
    const has = new Set(rows.map((r) => r.tablename));
    const missing = CAPTURED_TABLES.filter((t) => !has.has(t));
    if (missing.length > 0) {
      throw new FleetSyncError(
        'PUBLICATION_INCOMPLETE',
        `publication ${pub} does not publish ${missing.join(', ')}: run "ALTER PUBLICATION ${pub} ADD TABLE ${missing.join(', ')}"`,
      );
    }
  }

  const { rows: slots } = await pool.query<{ plugin: string; database: string }>(
    'SELECT plugin, database FROM pg_replication_slots WHERE slot_name = $1',
    [config.CDC_SLOT],
  );
  const slot = slots[0];
  if (slot && slot.plugin !== 'pgoutput') {
    throw new FleetSyncError(
      'SLOT_WRONG_PLUGIN',
      `replication slot ${config.CDC_SLOT} uses plugin ${slot.plugin}, not pgoutput: drop it with "SELECT pg_drop_replication_slot('${config.CDC_SLOT}')" or set CDC_SLOT to another name`,
    );
  }
  const { rows: db } = await pool.query<{ db: string }>('SELECT current_database() AS db');
  if (slot && slot.database !== db[0]?.db) {
    throw new FleetSyncError('SLOT_WRONG_PLUGIN', `replication slot ${config.CDC_SLOT} belongs to database ${slot.database}: set CDC_SLOT to another name`);
  }
  const { rows: state } = await pool.query('SELECT snapshot_done_at FROM fleet_sync_source_state WHERE slot_name = $1', [config.CDC_SLOT]);
  return { exists: Boolean(slot), snapshotDone: Boolean(state[0]?.snapshot_done_at) };
}
