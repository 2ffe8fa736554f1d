// Shared by the benchmark scripts: services (from the environment or scripts/services), a fresh database, figures.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../../connector/db/migrate.js';

export function ensureServices(): { databaseUrl: string; kafkaBrokers: string } {
  if (!process.env.DATABASE_URL || !process.env.KAFKA_BROKERS) {
    const script = fileURLToPath(new URL('../services', import.meta.url));
    const out = execFileSync(script, ['up'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    for (const m of out.matchAll(/^export (\w+)=(.*)$/gm)) process.env[m[1]!] = m[2]!;
  }
  return { databaseUrl: process.env.DATABASE_URL!, kafkaBrokers: process.env.KAFKA_BROKERS! };
}

export async function freshDatabase(adminUrl: string, name: string): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await migrate(c);
  await c.end();
  return {
    url,
    async drop() {
      const a = new pg.Client({ connectionString: adminUrl });
      await a.connect();
      try {
        // A walsender still streaming holds its slot: ended first, so the slot (and its WAL) goes with the database.
        await a.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL', [name]);
        for (let i = 0; i < 100; i++) {
          if ((await a.query('SELECT 1 FROM pg_replication_slots WHERE database = $1 AND active', [name])).rowCount === 0) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        await a.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [name]);
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 50);
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** The environment of a benchmark's fleet-sync processes: its own database, slot, topics and consumer group. */
export function stageEnv(databaseUrl: string, kafkaBrokers: string, name: string): NodeJS.ProcessEnv {
  return { ...process.env, DATABASE_URL: databaseUrl, KAFKA_BROKERS: kafkaBrokers, TOPIC_PREFIX: name, CDC_SLOT: name, SINK_GROUP_ID: name, LOG_LEVEL: 'warn' };
}
