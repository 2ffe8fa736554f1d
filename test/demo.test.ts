// `npm start` end to end, small: the demo against the tests' PostgreSQL and Kafka converges, prints its summary,
// and removes what it made (its database, slot and topics); bad options are refused before anything starts.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { serviceUrls } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function demo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo.ts', ...args], { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('npm start (scripts/demo.ts)', () => {
  it('--users 300 seeds a fleet, syncs two parks through live changes, converges, and leaves nothing behind', async () => {
    const { databaseUrl, kafkaBrokers } = serviceUrls();
    const run = await demo(['--users', '300']);
    expect(run.code, `exit code; stderr:\n${run.stderr}\nstdout:\n${run.stdout}`).toBe(0);
    expect(run.stdout).toMatch(/^fleet-sync demo: converged — the call center holds exactly what the database says/m);
    expect(run.stdout).toMatch(/fleet: database demo_\w+, 6 parks, 30 roles, 300 users \(\d+ sharing a uid across parks, \d+ yandex-team, \d+ without uid, \d+ disabled\)/);
    for (const step of ['two parks turned on', 'new users', 'role changes', 'disables', 'moves between parks', 'a park turned off']) {
      expect(run.stdout).toMatch(new RegExp(`^  ${step} +.+; matched in [\\d.]+ s$`, 'm'));
    }
    expect(run.stdout).toMatch(/call center +\d+ users known, \d+ grants, equal to the database: yes/);
    expect(run.stdout).toMatch(/flow +[\d,]+ change events produced to Kafka/);

    // What it made is gone: the database (and with it the slot) and the topics.
    const name = /fleet: database (demo_\w+),/.exec(run.stdout)![1]!;
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      expect((await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount).toBe(0);
      expect((await client.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [name])).rowCount).toBe(0);
    } finally {
      await client.end();
    }
    const admin = new Kafka({ brokers: kafkaBrokers.split(','), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      expect((await admin.listTopics()).filter((t) => t.startsWith(`${name}.`))).toEqual([]);
    } finally {
      await admin.disconnect();
    }
  }, 90_000);

  it('refuses a bad option with a clear message and starts nothing', async () => {
    const run = await demo(['--users', '10']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("option '--users <n>' argument '10' is invalid. expected a whole number within 50..200,000");
    expect(run.stdout).toBe('');
  });
});
