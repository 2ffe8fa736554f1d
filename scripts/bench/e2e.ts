// npm run bench:e2e [-- --seconds 15 --rate 200 --applies 20000 --sweep-users 100000 --swept-users 20000]
// Source and sink run as their own processes against an in-process call-center simulator.
// 1. commit → applied latency (simulator stored the role set) at a fixed rate, simulator at 0 ms and at 20 ms, and at
//    20 ms while the sink's interval sweep runs every 5 s over the syncing parks (one more of --swept-users users);
// 2. sink throughput: a backlog of role changes for distinct users, applies/s against a 0 ms simulator;
// 3. one sweep of an in-sync park of N users: time, and the calls it made (no writes expected).
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../../connector/config.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { createSyncStack } from '../../connector/wiring.js';
import { createSimulator } from '../../simulator/simulator.js';
import { ensureServices, fmt, freshDatabase, percentile, stageEnv } from './common.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '15' },
    rate: { type: 'string', default: '200' },
    applies: { type: 'string', default: '20000' },
    'sweep-users': { type: 'string', default: '100000' },
    'swept-users': { type: 'string', default: '20000' },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const APPLIES = Number(args.applies);
const SWEEP_USERS = Number(args['sweep-users']);
const SWEPT_USERS = Number(args['swept-users']);
const SWEEP_INTERVAL_S = 5;
const BIN = fileURLToPath(new URL('../../bin/fleet-sync.js', import.meta.url));
const TOKEN = 'bench-token';

const { databaseUrl, kafkaBrokers } = ensureServices();
const dbName = `bench_e2e_${Date.now().toString(36)}`;
const db = await freshDatabase(databaseUrl, dbName);
const pool = new pg.Pool({ connectionString: db.url, max: 4 });

// uid → [expected roles, commit time]; the simulator's hook closes each one.
const waiting = new Map<string, { roles: string; committedAt: number }>();
const latencies: number[] = [];
let applied = 0;
let lastAppliedAt = 0;
const appliedAt: number[] = [];
const sim = createSimulator({
  token: TOKEN,
  onRolesSet: (_project, uid, roles) => {
    applied++;
    lastAppliedAt = performance.now();
    if (appliedAt.length < 1) appliedAt.push(lastAppliedAt);
    const w = waiting.get(uid);
    if (w && w.roles === roles.join()) {
      latencies.push(performance.now() - w.committedAt);
      waiting.delete(uid);
    }
  },
});
const simUrl = await sim.start();
const env = {
  ...stageEnv(db.url, kafkaBrokers, dbName),
  CALL_CENTER_URL: simUrl,
  CALL_CENTER_TOKEN: TOKEN,
  RECONCILE_INTERVAL_S: '3600',
};
const config = loadConfig(env);
// BENCH_CPU_PROF=<dir> writes a V8 CPU profile of each stage process there, to see where the time goes.
const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : [];
const stages = new Set<ChildProcess>();
const spawnStage = (command: string, extraEnv: Record<string, string> = {}): ChildProcess => {
  const child = spawn(process.execPath, [...profile, BIN, command], { env: { ...env, ...extraEnv }, stdio: ['ignore', 'inherit', 'inherit'] });
  stages.add(child);
  return child;
};
const stopStage = async (child: ChildProcess) => {
  child.kill('SIGTERM');
  if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
};
const until = async (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 600_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};
const summary: string[] = [];

try {
  await pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'Latency and throughput'), ('p2', 'Sweep')`);
  await pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'p1', 'Dispatcher'), ('r2', 'p1', 'Senior'), ('r3', 'p2', 'Dispatcher')`);
  await pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('p1', 'proj-1', '{"r1":"cc-op","r2":"cc-lead"}', true)`);
  const source = spawnStage('source');
  let sink = spawnStage('sink');

  // 1. Latency: each tick commits one change — a new user, or a role flip of an earlier one. The last run has the
  // sink sweep every syncing park every 5 s meanwhile, one of them a park of SWEPT_USERS users in sync.
  for (const [latencyMs, sweeping] of [[0, false], [20, false], [20, true]] as const) {
    if (sweeping) {
      await pool.query(`INSERT INTO parks (id, name) VALUES ('p3', 'Swept meanwhile')`);
      await pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r4', 'p3', 'Dispatcher')`);
      await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p3', 'sd-' || g, 'l', 'n', 'r4' FROM generate_series(1, $1::int) g`, [SWEPT_USERS]);
      for (let g = 1; g <= SWEPT_USERS; g++) {
        sim.putUserByHand(`sd-${g}`, { login: 'l', name: 'n' });
        sim.setRolesByHand('proj-3', `sd-${g}`, ['cc-op']);
      }
      await pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('p3', 'proj-3', '{"r4":"cc-op"}', true)`);
      await stopStage(sink);
      sink = spawnStage('sink', { RECONCILE_INTERVAL_S: String(SWEEP_INTERVAL_S) });
      // The park's backfill adopts its users; the interval sweeps after it find everything in sync.
      await until(async () => (await pool.query(`SELECT 1 FROM reconcile_runs WHERE park_id = 'p3' AND reason = 'park_on' AND finished_at IS NOT NULL`)).rowCount === 1, 'the swept park to be backfilled');
    }
    sim.setFaults({ latencyMs });
    latencies.length = 0;
    const warmUp = `warm-up-${latencyMs}${sweeping ? '-swept' : ''}`;
    await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('p1', $1, 'w', 'W', 'r1')`, [warmUp]);
    await until(() => sim.rolesOf('proj-1', warmUp).length > 0, 'the pipeline to warm up', 120_000);
    const uids: string[] = [];
    const total = RATE * SECONDS;
    const t0 = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = t0 + (i * 1000) / RATE - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (i % 2 === 0 || uids.length === 0) {
        const uid = `lat-${latencyMs}${sweeping ? '-swept' : ''}-${i}`;
        await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('p1', $1, 'l', 'n', 'r1')`, [uid]);
        waiting.set(uid, { roles: 'cc-op', committedAt: performance.now() });
        uids.push(uid);
      } else {
        const uid = uids[Math.floor(Math.random() * uids.length)]!;
        if (waiting.has(uid)) continue;
        const { rows } = await pool.query(
          `UPDATE users SET role_id = CASE WHEN role_id = 'r1' THEN 'r2' ELSE 'r1' END WHERE yandex_uid = $1 RETURNING role_id`,
          [uid],
        );
        waiting.set(uid, { roles: rows[0].role_id === 'r1' ? 'cc-op' : 'cc-lead', committedAt: performance.now() });
      }
    }
    await until(() => waiting.size === 0, 'every change to be applied');
    const sorted = [...latencies].sort((a, b) => a - b);
    let sweeps = '';
    if (sweeping) {
      const { rows } = await pool.query<{ n: number; ms: number }>(
        `SELECT count(*)::int AS n, coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000), 0)::float8 AS ms
         FROM reconcile_runs WHERE reason = 'interval' AND finished_at > now() - make_interval(secs => $1::float8)`,
        [SECONDS + 5],
      );
      sweeps = `, ${rows[0]!.n} park sweeps meanwhile (median ${fmt(rows[0]!.ms)} ms each; ${fmt(SWEPT_USERS)}-user park among them)`;
    }
    summary.push(
      `  commit -> applied at ${RATE} changes/s for ${SECONDS} s, simulator +${latencyMs} ms${sweeping ? `, sweep every ${SWEEP_INTERVAL_S} s` : ''} (${fmt(sorted.length)} changes): p50 ${fmt(percentile(sorted, 50), 1)} ms, p99 ${fmt(percentile(sorted, 99), 1)} ms, max ${fmt(sorted.at(-1)!, 1)} ms (target p99 <= ${sweeping ? 250 : 500})${sweeps}`,
    );
  }
  // The throughput run below measures the stream alone: a sink without the 5 s sweep.
  await stopStage(sink);
  sink = spawnStage('sink');

  // 2. Throughput: APPLIES users granted, the sink stopped, one role flip each, the sink started.
  sim.setFaults({ latencyMs: 0 });
  await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p1', 'tp-' || g, 'l', 'n', 'r1' FROM generate_series(1, $1::int) g`, [APPLIES]);
  await until(() => sim.rolesOf('proj-1', `tp-${APPLIES}`).length > 0 && Object.keys(sim.state().projects['proj-1'] ?? {}).filter((u) => u.startsWith('tp-')).length === APPLIES, 'the throughput users to be granted');
  await stopStage(sink);
  await pool.query(`UPDATE users SET role_id = 'r2' WHERE yandex_uid LIKE 'tp-%'`);
  const appliedBefore = applied;
  appliedAt.length = 0;
  const started = performance.now();
  sink = spawnStage('sink');
  await until(() => applied - appliedBefore >= APPLIES, 'the backlog to be applied');
  const withStart = (lastAppliedAt - started) / 1000;
  const applying = (lastAppliedAt - appliedAt[0]!) / 1000;
  summary.push(
    `  sink throughput: ${fmt(APPLIES)} role changes of distinct users: ${fmt(APPLIES / applying)} applies/s from first to last apply (${fmt(applying, 1)} s; ${fmt(withStart, 1)} s counting the sink's start-up) (target >= 5,000)`,
  );
  await stopStage(sink);
  await stopStage(source);

  // 3. A sweep of an in-sync park: the call center is seeded with exactly what the database says.
  await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p2', 'sw-' || g, 'l', 'n', 'r3' FROM generate_series(1, $1::int) g`, [SWEEP_USERS]);
  await pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('p2', 'proj-2', '{"r3":"cc-op"}', true)`);
  for (let g = 1; g <= SWEEP_USERS; g++) {
    sim.putUserByHand(`sw-${g}`, { login: 'l', name: 'n' });
    sim.setRolesByHand('proj-2', `sw-${g}`, ['cc-op']);
  }
  sim.resetCalls();
  const stack = createSyncStack({ config, log: createLogger('warn'), metrics: createMetrics({ defaultMetrics: false }) });
  const sweepStart = performance.now();
  const counts = await stack.reconciler.reconcilePark('p2', 'manual');
  const sweepSeconds = (performance.now() - sweepStart) / 1000;
  await stack.close();
  const calls = sim.calls();
  summary.push(
    `  sweep of an in-sync park of ${fmt(SWEEP_USERS)} users: ${fmt(sweepSeconds, 1)} s, ${fmt(calls.reads)} read calls, ${fmt(calls.writes)} write calls; checked ${fmt(counts.checked)}, in sync ${fmt(counts.in_sync)}, corrected ${counts.corrected_grants + counts.corrected_profiles + counts.revoked} (target <= 30 s, 0 writes)`,
  );
  console.log('bench:e2e  (source and sink processes, call-center simulator in this process)');
  for (const line of summary) console.log(line);
} catch (e) {
  console.error('bench:e2e failed:', e);
  process.exitCode = 1;
} finally {
  // A run that failed half-way must not leave its stages running against a dropped simulator.
  for (const child of stages) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await sim.stop();
  await pool.end();
  await db.drop().catch((e: Error) => console.error(`could not drop ${dbName}: ${e.message}`));
  process.exit();
}
