// npm run bench:e2e [-- --seconds 15 --rate 200 --applies 20000 --members 1,2 --sweep-users 100000 --park-users 100000 --swept-users 20000]
// Source and sink run as their own processes against an in-process call-center simulator.
// 1. commit → applied latency (simulator stored the role set) at a fixed rate, simulator at 0 ms and at 20 ms, and at
//    20 ms while the sink's interval sweep runs every 5 s over the syncing parks (one more of --swept-users users);
// 2. sink throughput: a backlog of role changes for distinct users, applies/s against a 0 ms simulator;
//    with 1 and 2 sink members (--members), and the CPU each process used per apply;
// 3. sweeps of parks in sync (--sweep-users in parks of --park-users): one park's sweep in this process, the first
//    time (adopting every user) and again; then the group's interval pass over every park by 1 and 2 sink members.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { Kafka, logLevel } from 'kafkajs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../../connector/config.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { topicFor } from '../../connector/events.js';
import { createSyncStack } from '../../connector/wiring.js';
import { createSimulator } from '../../simulator/simulator.js';
import { groupAtEnds } from '../lib/group-offsets.js';
import { cpuMeter, ensureServices, fmt, freshDatabase, isWalsender, listenerPid, percentile, postgresPids, stageEnv } from './common.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '15' },
    rate: { type: 'string', default: '200' },
    applies: { type: 'string', default: '20000' },
    'sweep-users': { type: 'string', default: '100000' },
    'swept-users': { type: 'string', default: '20000' },
    // Sink group sizes the throughput run is measured with, in order (the ratio is against 1).
    members: { type: 'string', default: '1,2' },
    // Users per swept park: --sweep-users 1000000 makes 10 parks of 100,000.
    'park-users': { type: 'string', default: '100000' },
  },
});
const SECONDS = Number(args.seconds);
const RATE = Number(args.rate);
const APPLIES = Number(args.applies);
const SWEEP_USERS = Number(args['sweep-users']);
const SWEPT_USERS = Number(args['swept-users']);
const MEMBERS = args.members.split(',').map(Number);
const PARK_USERS = Number(args['park-users']);
// Bad options stop the bench before it starts anything.
const positive = (v: number) => Number.isInteger(v) && v >= 1;
if (!MEMBERS.every(positive)) throw new Error(`--members takes sink group sizes, positive integers separated by commas, not ${JSON.stringify(args.members)}`);
if (!positive(PARK_USERS)) throw new Error(`--park-users takes a positive integer, not ${JSON.stringify(args['park-users'])}`);
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
  let source = spawnStage('source');
  let sink = spawnStage('sink');
  const kafka = new Kafka({ brokers: kafkaBrokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  /** The sink group's offsets at the end of every captured topic: nothing is left to apply. */
  const sinkCaughtUp = () =>
    groupAtEnds(
      admin,
      config.SINK_GROUP_ID,
      ['users', 'roles', 'call_center_parks'].map((t) => topicFor(config.TOPIC_PREFIX, t)),
    );

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
      // Its users' own events (a profile each) are applied before the run: a backlog is not the sweep's latency.
      await until(sinkCaughtUp, 'the sink to apply the events of the swept park');
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
  // The throughput runs below measure the stream alone: sinks without the 5 s sweep (its schedule moved out of reach).
  await stopStage(sink);
  if ((await pool.query(`SELECT to_regclass('fleet_sync_schedule') AS t`)).rows[0].t) await pool.query(`UPDATE fleet_sync_schedule SET next_at = now() + interval '1 day'`);
  sink = spawnStage('sink');

  // 2. Throughput: APPLIES users granted; then, per group size, the sinks started and settled in their group with the
  // source stopped, one role flip of every user committed, and the source started: applies/s from the first apply
  // to the last, and the CPU each process used per apply meanwhile.
  sim.setFaults({ latencyMs: 0 });
  await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p1', 'tp-' || g, 'l', 'n', 'r1' FROM generate_series(1, $1::int) g`, [APPLIES]);
  await until(() => sim.rolesOf('proj-1', `tp-${APPLIES}`).length > 0 && Object.keys(sim.state().projects['proj-1'] ?? {}).filter((u) => u.startsWith('tp-')).length === APPLIES, 'the throughput users to be granted');
  await stopStage(sink);
  const brokerPid = listenerPid(Number(kafkaBrokers.split(',')[0]!.split(':').at(-1)));
  const pgPids = await postgresPids(pool);
  // The source's walsender decodes the sink's own writes too (records, audit rows) before it leaves them out.
  const pgWalsenders = await postgresPids(pool, isWalsender);
  const pgOthers = await postgresPids(pool, (title) => !isWalsender(title));
  const rates = new Map<number, number>();
  for (const members of MEMBERS) {
    await stopStage(source);
    const sinks = Array.from({ length: members }, () => spawnStage('sink'));
    await until(async () => {
      const [group] = (await admin.describeGroups([config.SINK_GROUP_ID])).groups;
      return group?.state === 'Stable' && group.members.length === members && group.members.every((m) => m.memberAssignment.length > 0);
    }, `a stable group of ${members} sink members`, 120_000);
    // The source started and streaming before the meter starts: its start-up is not the sink's work.
    source = spawnStage('source');
    await until(async () => (await pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active`, [config.CDC_SLOT])).rowCount === 1, 'the source to stream');
    const appliedBefore = applied;
    appliedAt.length = 0;
    const meter = cpuMeter(
      { sink: () => sinks.map((c) => c.pid!), source: () => [source.pid!], postgres: pgOthers, 'postgres walsender': pgWalsenders, broker: () => (brokerPid ? [brokerPid] : []) },
      'simulator',
    );
    const { rows } = await pool.query<{ role_id: string }>(`UPDATE users SET role_id = CASE WHEN role_id = 'r1' THEN 'r2' ELSE 'r1' END WHERE yandex_uid LIKE 'tp-%' RETURNING role_id`);
    await until(() => applied - appliedBefore >= APPLIES, 'the backlog to be applied');
    const cpu = meter();
    const applying = (lastAppliedAt - appliedAt[0]!) / 1000;
    rates.set(members, APPLIES / applying);
    const perApply = Object.entries(cpu)
      .map(([name, seconds]) => `${name} ${fmt((seconds * 1e6) / APPLIES)}`)
      .join(', ');
    const total = Object.values(cpu).reduce((a, b) => a + b, 0);
    summary.push(
      `  sink throughput, ${members} member${members > 1 ? 's' : ''}: ${fmt(APPLIES)} role changes of distinct users (to ${rows[0]!.role_id}): ${fmt(APPLIES / applying)} applies/s from first to last apply (${fmt(applying, 1)} s)${members === 1 ? ' (target >= 10,000)' : ` (${fmt(APPLIES / applying / rates.get(1)!, 2)}x one member; target >= 1.7x)`}`,
      `    CPU per apply, µs: ${perApply}; ${fmt((total * 1e6) / APPLIES)} in all, ${fmt(total / applying, 2)} cores busy (${cpus().length} on this machine)`,
    );
    for (const child of sinks) await stopStage(child);
  }
  await admin.disconnect();
  await stopStage(source);

  // 3. Sweeps over parks in sync: SWEEP_USERS users in parks of at most PARK_USERS, the call center seeded with
  // exactly what the database says (the source is stopped: no toggle reaches the sinks, the sweeps are all).
  // --sweep-users 0 leaves the sweeps out.
  const sweptParks = Array.from({ length: Math.ceil(SWEEP_USERS / PARK_USERS) }, (_, i) => ({ park: `sw${i + 1}`, project: `proj-sw${i + 1}`, role: `rsw${i + 1}` }));
  for (const [i, { park, project, role }] of sweptParks.entries()) {
    const from = i * PARK_USERS + 1;
    const to = Math.min(SWEEP_USERS, (i + 1) * PARK_USERS);
    await pool.query(`INSERT INTO parks (id, name) VALUES ($1, $1)`, [park]);
    await pool.query(`INSERT INTO roles (id, park_id, name) VALUES ($1, $2, 'Dispatcher')`, [role, park]);
    await pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT $1, 'sw-' || g, 'l', 'n', $2 FROM generate_series($3::int, $4::int) g`, [park, role, from, to]);
    await pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ($1, $2, $3, true)`, [park, project, JSON.stringify({ [role]: 'cc-op' })]);
    for (let g = from; g <= to; g++) {
      if (i === 0) sim.putUserByHand(`sw-${g}`, { login: 'l', name: 'n' });
      sim.setRolesByHand(project, `sw-${g}`, ['cc-op']);
    }
  }
  await pool.query('VACUUM ANALYZE users');
  if (sweptParks.length > 0) {
  // 3a. One park's sweep in this process: the first time (every user adopted: a record and an audit row each), then
  // again (every user recorded and in sync: reads only).
  const stack = createSyncStack({ config, log: createLogger('warn'), metrics: createMetrics({ defaultMetrics: false }) });
  const first = sweptParks[0]!;
  const firstUsers = Math.min(SWEEP_USERS, PARK_USERS);
  for (const time of ['first time, adopting every user', 'again, every user recorded']) {
    sim.resetCalls();
    const sweepStart = performance.now();
    const counts = await stack.reconciler.reconcilePark(first.park, 'manual');
    const sweepSeconds = (performance.now() - sweepStart) / 1000;
    const calls = sim.calls();
    summary.push(
      `  sweep of an in-sync park of ${fmt(firstUsers)} users, ${time}: ${fmt(sweepSeconds, 1)} s, ${fmt(calls.reads)} read calls, ${fmt(calls.writes)} write calls; checked ${fmt(counts.checked)}, in sync ${fmt(counts.in_sync)}, corrected ${counts.corrected_grants + counts.corrected_profiles + counts.revoked} (target <= 10 s, 0 writes)`,
    );
  }
  await stack.close();
  // 3b. The group's interval pass over every park, by sink processes: per group size, a first pass (no records:
  // every user adopted) and a second (every user recorded), each timed from its claim to its last park's finish.
  for (const members of MEMBERS) {
    await pool.query('TRUNCATE call_center_grants');
    const sinks = Array.from({ length: members }, () => spawnStage('sink', { RECONCILE_INTERVAL_S: '86400' }));
    for (const pass of ['first', 'second']) {
      await pool.query(
        `INSERT INTO fleet_sync_schedule (name, next_at) VALUES ('interval_sweep', now()) ON CONFLICT (name) DO UPDATE SET next_at = now()`,
      );
      const claimsBefore = (await pool.query<{ claims: string }>(`SELECT claims FROM fleet_sync_schedule`)).rows[0]!.claims;
      const meter = cpuMeter({ sink: () => sinks.map((c) => c.pid!), postgres: pgPids }, 'simulator');
      await until(async () => (await pool.query(`SELECT 1 FROM fleet_sync_schedule WHERE claims > $1`, [claimsBefore])).rowCount === 1, 'the pass to be claimed');
      const { rows: claimed } = await pool.query<{ claimed_at: Date }>(`SELECT claimed_at FROM fleet_sync_schedule`);
      const done = async () =>
        (
          await pool.query<{ n: number; last: Date | null; checked: string; failed: number }>(
            `SELECT count(*)::int AS n, max(finished_at) AS last, sum(checked)::text AS checked, count(*) FILTER (WHERE error IS NOT NULL)::int AS failed
             FROM reconcile_runs WHERE reason = 'interval' AND started_at >= $1 AND finished_at IS NOT NULL AND park_id = ANY($2::text[])`,
            [claimed[0]!.claimed_at, sweptParks.map((p) => p.park)],
          )
        ).rows[0]!;
      await until(async () => (await done()).n >= sweptParks.length, `the ${pass} pass over ${sweptParks.length} parks`, 3_600_000);
      const cpu = meter();
      const result = await done();
      const seconds = (result.last!.getTime() - claimed[0]!.claimed_at.getTime()) / 1000;
      const perUser = Object.entries(cpu)
        .map(([name, cpuSeconds]) => `${name} ${fmt((cpuSeconds * 1e6) / SWEEP_USERS, 1)}`)
        .join(', ');
      summary.push(
        `  interval pass over ${fmt(SWEEP_USERS)} users in ${sweptParks.length} park${sweptParks.length > 1 ? 's' : ''}, ${members} member${members > 1 ? 's' : ''}, ${pass === 'first' ? 'first (adopting every user)' : 'second (every user recorded)'}: ${fmt(seconds, 1)} s, ${fmt(SWEEP_USERS / seconds)} users/s; checked ${fmt(Number(result.checked))}, failed runs ${result.failed}; CPU per user, µs: ${perUser}`,
      );
    }
    for (const child of sinks) await stopStage(child);
  }
  }
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
