// Shared by the benchmark scripts: services (from the environment or scripts/services), a fresh database, figures.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
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

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds (user and system) a process has used, its reaped children's included; 0 when it is gone. */
export function cpuSecondsOf(pid: number): number {
  try {
    // Fields after the command's closing parenthesis: state is the 3rd field, utime the 14th, cstime the 17th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0) / CLK_TCK;
  } catch {
    return 0;
  }
}

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/**
 * The PostgreSQL server of `pool`: a function listing its postmaster and every process it runs at the moment
 * (backends, walsenders, writers), so that backends opened later are counted too.
 */
export async function postgresPids(pool: pg.Pool, which: (title: string) => boolean = () => true): Promise<() => number[]> {
  const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const postmaster = parentOf(rows[0]!.pid);
  if (postmaster === null) return () => [];
  return () =>
    [
      postmaster,
      ...readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .map(Number)
        .filter((pid) => parentOf(pid) === postmaster),
    ].filter((pid) => which(titleOf(pid)));
}

/** A PostgreSQL process's title ("postgres: walsender …", "postgres: checkpointer"), '' once it is gone. */
function titleOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** The walsenders (logical decoding of every change, published or not) apart from the rest. */
export const isWalsender = (title: string) => title.includes('walsender');

/** The process listening on a loopback port (the broker), from `ss`; null when it cannot be told. */
export function listenerPid(port: number): number | null {
  try {
    const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
    const m = /pid=(\d+)/.exec(out);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * CPU used by named groups of processes between start() and the returned stop(): where the machine's cores went
 * during a measurement, which a shared machine's noise does not change the way it changes wall-clock rates.
 */
export function cpuMeter(groups: Record<string, () => number[]>, self?: string): () => Record<string, number> {
  const read = () => {
    const out: Record<string, number> = {};
    for (const [name, pids] of Object.entries(groups)) out[name] = pids().reduce((s, pid) => s + cpuSecondsOf(pid), 0);
    if (self) {
      const u = process.cpuUsage();
      out[self] = (u.user + u.system) / 1e6;
    }
    return out;
  };
  const before = read();
  return () => {
    const after = read();
    return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - (before[k] ?? 0)]));
  };
}
