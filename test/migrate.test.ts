import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../connector/db/migrate.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

describe('migrations', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: false });
  });
  afterAll(async () => db?.drop());

  it('create the captured tables and publication, and applying them twice changes nothing', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const first = await migrate(client);
      expect(first.length).toBeGreaterThan(0);
      const schemaBefore = await client.query(
        `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
      );
      const second = await migrate(client);
      expect(second).toEqual([]);
      const schemaAfter = await client.query(
        `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
      );
      expect(schemaAfter.rows).toEqual(schemaBefore.rows);
      const tables = new Set(schemaAfter.rows.map((r) => r.table_name));
      for (const t of ['parks', 'roles', 'users', 'call_center_parks']) expect(tables).toContain(t);
      const pub = await client.query(`SELECT tablename FROM pg_publication_tables WHERE pubname = 'fleet_sync' ORDER BY 1`);
      expect(pub.rows.map((r) => r.tablename)).toEqual(['call_center_parks', 'roles', 'users']);
      const recorded = await client.query('SELECT count(*)::int AS n FROM fleet_sync_migrations');
      expect(recorded.rows[0].n).toBe(first.length);
    } finally {
      await client.end();
    }
  });

  it('keep updated_at current through the trigger', async () => {
    await db.pool.query(`INSERT INTO parks (id, name, updated_at) VALUES ('p1', 'Park', '2000-01-01')`);
    await db.pool.query(`UPDATE parks SET name = 'Park 2' WHERE id = 'p1'`);
    const { rows } = await db.pool.query(`SELECT updated_at > '2020-01-01' AS fresh FROM parks WHERE id = 'p1'`);
    expect(rows[0].fresh).toBe(true);
  });
});
