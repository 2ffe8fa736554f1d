// scripts/services from a clone under a private (0700) directory, as a clone in root's home or under mktemp -d is:
// up, stop/start of one service keeping its data, down removing everything it made. As root, PostgreSQL's data
// then lives where the postgres OS user can reach it.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));
const isRoot = process.getuid?.() === 0;

describe('scripts/services in a clone under a 0700 directory', () => {
  const parent = mkdtempSync(join(tmpdir(), 'fleet-sync-clone-'));
  const clone = join(parent, 'fleet-sync');
  const servicesDir = join(clone, '.services');
  // The clone's default services directory, not one the caller's environment names.
  const { FLEET_SYNC_SERVICES_DIR: _ignored, ...env } = process.env;
  const services = (...args: string[]) =>
    execFileSync(join(clone, 'scripts/services'), args, { cwd: clone, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  afterAll(() => {
    if (existsSync(servicesDir)) services('down');
    rmSync(parent, { recursive: true, force: true });
  });

  it('up serves PostgreSQL and Kafka; a restart keeps data and port; down removes the data wherever it lives', async () => {
    expect(statSync(parent).mode & 0o777).toBe(0o700);
    execFileSync('git', ['clone', '--quiet', repo, clone], { stdio: 'ignore' });
    // The working copy's scripts are what is under test (the clone has the last commit's).
    cpSync(join(repo, 'scripts/services'), join(clone, 'scripts/services'));
    cpSync(join(repo, 'scripts/kafka'), join(clone, 'scripts/kafka'), { recursive: true });

    const out = services('up');
    const vars = Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    expect(vars.DATABASE_URL).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
    expect(vars.KAFKA_BROKERS).toMatch(/^127\.0\.0\.1:\d+$/);

    const datadirFile = join(servicesDir, 'pg.datadir');
    const dataDir = existsSync(datadirFile) ? readFileSync(datadirFile, 'utf8').trim() : join(servicesDir, 'pg');
    // As root the postgres user cannot traverse the 0700 parent: the data directory must have moved out of it.
    if (isRoot) expect(dataDir).toMatch(/^\/var\/tmp\/fleet-sync-pg-[0-9a-f]{16}$/);
    expect(existsSync(join(dataDir, 'PG_VERSION'))).toBe(true);
    expect(services('status')).toMatch(/^postgres: running on 127\.0\.0\.1:\d+ .*\nkafka: running on/);

    const query = async (sql: string) => {
      const client = new pg.Client({ connectionString: vars.DATABASE_URL });
      await client.connect();
      try {
        return (await client.query(sql)).rows;
      } finally {
        await client.end();
      }
    };
    await query(`CREATE TABLE kept (note text); INSERT INTO kept VALUES ('before the restart')`);
    services('restart', 'postgres');
    expect(await query('SELECT note FROM kept')).toEqual([{ note: 'before the restart' }]);
    services('stop', 'postgres');
    expect(services('status')).toMatch(/^postgres: stopped/);
    services('start', 'postgres');
    expect(await query(`SELECT current_setting('wal_level') AS wal_level`)).toEqual([{ wal_level: 'logical' }]);

    const admin = new Kafka({ brokers: [vars.KAFKA_BROKERS!], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      expect(await admin.createTopics({ topics: [{ topic: 'clone-check', numPartitions: 1 }], waitForLeaders: true })).toBe(true);
    } finally {
      await admin.disconnect();
    }

    services('down');
    expect(existsSync(servicesDir)).toBe(false);
    expect(existsSync(dataDir)).toBe(false);
  });
});
