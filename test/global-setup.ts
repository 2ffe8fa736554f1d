// Starts PostgreSQL and Kafka with scripts/services unless DATABASE_URL and KAFKA_BROKERS are already set, and
// starts the run's log file afresh.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_LOG_FILE } from './helpers.js';

const servicesScript = fileURLToPath(new URL('../scripts/services', import.meta.url));

export default function setup(): () => void {
  mkdirSync(dirname(TEST_LOG_FILE), { recursive: true });
  writeFileSync(TEST_LOG_FILE, '');
  if (process.env.DATABASE_URL && process.env.KAFKA_BROKERS) return () => {};
  const dir = fileURLToPath(new URL('../.services/test', import.meta.url));
  const env = { ...process.env, FLEET_SYNC_SERVICES_DIR: dir };
  // The fault tests restart PostgreSQL and Kafka through the same script (test/services.ts).
  process.env.FLEET_SYNC_TEST_SERVICES_DIR = dir;
  const out = execFileSync(servicesScript, ['up'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  for (const line of out.split('\n')) {
    const m = /^export (\w+)=(.*)$/.exec(line.trim());
    if (m) process.env[m[1]!] = m[2]!;
  }
  if (!process.env.DATABASE_URL || !process.env.KAFKA_BROKERS) throw new Error(`scripts/services up printed no environment:\n${out}`);
  return () => {
    execFileSync(servicesScript, ['down'], { env, stdio: 'inherit' });
  };
}
