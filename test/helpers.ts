// Test fixtures: a fresh database (migrated) per test file, unique slot and topic names, polling waitFor, and
// the tests' log: warn and above into test-output/test.log, so that `npm test` prints vitest's report only.
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { destination, type DestinationStream } from 'pino';
import { loadConfig, type Config } from '../connector/config.js';
import { migrate } from '../connector/db/migrate.js';
import { createLogger, type Logger } from '../connector/log.js';

/** Where the tests' logs go unless LOG_LEVEL is set (global-setup.ts empties it at the start of a run). */
export const TEST_LOG_FILE = fileURLToPath(new URL('../test-output/test.log', import.meta.url));

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

export function serviceUrls(): { databaseUrl: string; kafkaBrokers: string } {
  const databaseUrl = process.env.DATABASE_URL;
  const kafkaBrokers = process.env.KAFKA_BROKERS;
  if (!databaseUrl || !kafkaBrokers) throw new Error('DATABASE_URL and KAFKA_BROKERS must be set (test/global-setup.ts sets them)');
  return { databaseUrl, kafkaBrokers };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  drop(): Promise<void>;
}

/** A new database with every migration applied; `drop` also drops replication slots that point at it. */
export async function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const { databaseUrl } = serviceUrls();
  const name = uniqueName('fs');
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = withDatabase(databaseUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  if (options.migrate !== false) {
    const client = await pool.connect();
    try {
      await migrate(client);
    } finally {
      client.release();
    }
  }
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end();
      const c = new pg.Client({ connectionString: databaseUrl });
      await c.connect();
      try {
        await c.query(
          `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`,
          [name],
        );
        await waitFor(async () => (await c.query('SELECT 1 FROM pg_replication_slots WHERE database = $1 AND active', [name])).rowCount === 0, {
          what: 'replication slots to go idle',
        });
        await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1', [name]);
        // A pool that was just ended closes its sockets a moment later: a forced drop meanwhile terminates them, and
        // a client that is ending has no listener left for that error (an uncaught exception in the test run).
        await waitFor(
          async () => (await c.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, [name])).rowCount === 0,
          { what: 'the connections to the database to close', timeoutMs: 5_000 },
        ).catch(() => {});
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  what?: string;
}

/** Polls `check` until it returns a truthy value, which it returns; fails after timeoutMs naming what it waited for. */
export async function waitFor<T>(check: () => Promise<T> | T, options: WaitOptions = {}): Promise<NonNullable<T>> {
  const { timeoutMs = 30_000, intervalMs = 50, what = 'condition' } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A validated Config for a test: the test's database, a unique slot, publication-default and topic prefix. */
export function testConfig(db: TestDatabase, overrides: Record<string, string> = {}): Config {
  const { kafkaBrokers } = serviceUrls();
  return loadConfig({
    DATABASE_URL: db.url,
    KAFKA_BROKERS: kafkaBrokers,
    TOPIC_PREFIX: uniqueName('t'),
    TOPIC_PARTITIONS: '3',
    CDC_SLOT: uniqueName('slot'),
    CDC_HEARTBEAT_INTERVAL_MS: '500',
    LOG_LEVEL: testLogLevel(),
    ...overrides,
  });
}

/** LOG_LEVEL when set (then logs go to stderr, to watch a test), otherwise warn. */
export function testLogLevel(): string {
  return process.env.LOG_LEVEL || 'warn';
}

let logFile: DestinationStream | undefined;
let logFd: number | undefined;

/** A logger for the code under test: at LOG_LEVEL on stderr when it is set, otherwise at warn into TEST_LOG_FILE. */
export function testLogger(): Logger {
  if (process.env.LOG_LEVEL) return createLogger(process.env.LOG_LEVEL);
  // One appending stream per test process; synchronous, so a line logged just before a failure is not lost.
  logFile ??= destination({ dest: TEST_LOG_FILE, mkdir: true, append: true, sync: true });
  return createLogger('warn', logFile);
}

/** stdio for a child process a test spawns: its output joins the tests' log, or stderr when LOG_LEVEL is set. */
export function childStdio(): ['ignore', 'inherit' | number, 'inherit' | number] {
  if (process.env.LOG_LEVEL) return ['ignore', 'inherit', 'inherit'];
  if (logFd === undefined) {
    mkdirSync(dirname(TEST_LOG_FILE), { recursive: true });
    logFd = openSync(TEST_LOG_FILE, 'a');
  }
  return ['ignore', logFd, logFd];
}
