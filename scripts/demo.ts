// `npm start`: the whole product on this machine in one command. Local PostgreSQL and Kafka (scripts/services,
// unless DATABASE_URL and KAFKA_BROKERS are set), a fresh database with a realistic fleet, the call-center
// simulator and `fleet-sync all` as child processes; two parks turned on through the api as the call-center script
// would, then live changes while the display shows what flows; it ends by checking the call center against the
// database by SPEC §5's rules, prints a summary, stops what it started and exits 0 (1 if the check fails).
// `--keep` leaves everything running and prints the URLs and the `export` lines to use them.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { migrate } from '../connector/db/migrate.js';
import type { SimState } from '../simulator/simulator.js';
import {
  CALL_CENTER_ROLES,
  describeFleet,
  fleetGenerator,
  inSmallTransactions,
  insertUsers,
  PARKS,
  ROLES,
  roleId,
  sampleUsers,
  seedFleet,
  type FleetUser,
} from './lib/fleet.js';
import { canonical, expectedGrants, grantDiff, nonEmpty, type Grants } from './lib/oracle.js';
import { readMetrics, type MetricsView } from './lib/metrics-view.js';
import { freePort, startChild, stopChild, waitUntil, type Child } from './lib/processes.js';
import { createProgress, fmt, secs, type ParkStatus, type Progress, type Snapshot, type SourceStatus } from './lib/progress.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SERVICES = join(root, 'scripts/services');

interface Options {
  users: number;
  keep: boolean;
  seed: number;
}

interface Services {
  databaseUrl: string;
  kafkaBrokers: string;
  /** services this run started, stopped again at the end (`scripts/services stop`, keeping their data) */
  started: Array<'postgres' | 'kafka'>;
}

/** The two parks the call-center script turns on, and the project each maps to. */
const SYNCED = [
  { park: PARKS[0]!.id, project: 'cc-moscow-north', yandexTeamRole: 'cc-support' },
  { park: PARKS[1]!.id, project: 'cc-moscow-south', yandexTeamRole: null },
] as const;

function whole(min: number, max: number) {
  return (text: string) => {
    const n = Number(text);
    if (!/^\d+$/.test(text.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number within ${fmt(min)}..${fmt(max)}`);
    return n;
  };
}

/** Runs a command to its end, its stderr shown or not, without blocking the event loop (a Ctrl-C is heard). */
function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; stderr?: 'inherit' | 'pipe' } = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: options.cwd ?? root, env: options.env ?? process.env, stdio: ['ignore', 'pipe', options.stderr ?? 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr?.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', (code, signal) =>
      code === 0 ? resolvePromise(out) : reject(new Error(`${relative(root, command) || command} ${args.join(' ')} failed (${signal ?? `exit ${code}`})${err ? `: ${err.trim().split('\n').slice(-5).join('\n')}` : ''}`)),
    );
  });
}

/**
 * The environment's services, or the local ones from scripts/services (started, and installed when missing).
 * `willStart` hears which services this run starts before it starts them, so that even an interrupted start is undone.
 */
async function ensureServices(progress: Progress, willStart: (names: Array<'postgres' | 'kafka'>) => void): Promise<Services> {
  if (process.env.DATABASE_URL && process.env.KAFKA_BROKERS) {
    progress.note(`services: PostgreSQL and Kafka from DATABASE_URL and KAFKA_BROKERS`);
    return { databaseUrl: process.env.DATABASE_URL, kafkaBrokers: process.env.KAFKA_BROKERS, started: [] };
  }
  const status = await run(SERVICES, ['status']);
  const started = (['postgres', 'kafka'] as const).filter((name) => !new RegExp(`^${name}: running`, 'm').test(status));
  willStart(started);
  if (started.length > 0) progress.note(`services: starting ${started.join(' and ')} (scripts/services up; the first run fetches Kafka and may install PostgreSQL)`);
  const out = await run(SERVICES, ['up'], { stderr: 'inherit' });
  const vars = Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
  if (!vars.DATABASE_URL || !vars.KAFKA_BROKERS) throw new Error(`scripts/services up printed no DATABASE_URL and KAFKA_BROKERS:\n${out}`);
  progress.note(`services: PostgreSQL and Kafka from scripts/services (${relative(process.cwd(), join(root, '.services')) || '.services'})`);
  return { databaseUrl: vars.DATABASE_URL, kafkaBrokers: vars.KAFKA_BROKERS, started };
}

const plural = (n: number, word: string) => `${fmt(n)} ${word}${n === 1 ? '' : 's'}`;

function databaseUrl(serverUrl: string, database: string): string {
  const u = new URL(serverUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

async function adminQuery(serverUrl: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  await adminQuery(serverUrl, 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active', [name]);
  await adminQuery(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

async function deleteTopics(brokers: string, prefix: string, groups: string[]): Promise<void> {
  const admin = new Kafka({ brokers: brokers.split(','), clientId: 'fleet-sync-demo', logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const topics = (await admin.listTopics()).filter((t) => t.startsWith(`${prefix}.`));
    if (topics.length > 0) await admin.deleteTopics({ topics });
    await admin.deleteGroups(groups).catch(() => {});
  } finally {
    await admin.disconnect();
  }
}

interface Step {
  name: string;
  detail: string;
  seconds: number;
}

async function demo(opts: Options): Promise<number> {
  const startedAt = Date.now();
  const progress = createProgress(process.stdout, startedAt);
  const name = `demo_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`;
  const runDir = join(root, '.demo', name);
  const apiToken = `demo-${randomBytes(8).toString('hex')}`;
  const callCenterToken = `cc-${randomBytes(8).toString('hex')}`;
  const cleanups: Array<{ what: string; run: () => Promise<unknown> }> = [];
  const children: Child[] = [];
  let pool: pg.Pool | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let ok = false;
  let keep = opts.keep;

  let interruptedBy: string | null = null;
  let cleaning: Promise<void> | undefined;
  /** Undoes what was started, last first; once, however many paths ask for it (an error and a Ctrl-C together). */
  const cleanUp = () =>
    (cleaning ??= (async () => {
      if (ticker) clearInterval(ticker);
      await pool?.end().catch(() => {});
      pool = undefined;
      for (const step of [...cleanups].reverse()) {
        try {
          await step.run();
        } catch (e) {
          process.stderr.write(`demo: could not ${step.what}: ${(e as Error).message}\n`);
        }
      }
      cleanups.length = 0;
    })());
  const interrupted = new Promise<number>((resolvePromise) => {
    const onSignal = (signal: string) => {
      if (interruptedBy) return; // a second Ctrl-C while stopping: the stop goes on
      interruptedBy = signal;
      keep = false;
      progress.stop();
      process.stdout.write(`\n${signal}: stopping what the demo started\n`);
      void cleanUp().then(() => {
        if (existsSync(runDir)) process.stdout.write(`logs of the run in ${runDir}/\n`);
        resolvePromise(130);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });

  const work = async (): Promise<number> => {
    // 1. Services, a fresh database, the schema, the fleet.
    const services = await ensureServices(progress, (names) => {
      for (const service of names) cleanups.push({ what: `stop ${service}`, run: () => run(SERVICES, ['stop', service]) });
    });
    mkdirSync(runDir, { recursive: true });
    await adminQuery(services.databaseUrl, `CREATE DATABASE ${name}`);
    cleanups.push({ what: `drop the database ${name}`, run: () => dropDatabase(services.databaseUrl, name) });
    const dbUrl = databaseUrl(services.databaseUrl, name);
    pool = new pg.Pool({ connectionString: dbUrl, max: 4 });
    const migrateClient = await pool.connect();
    try {
      await migrate(migrateClient);
    } finally {
      migrateClient.release();
    }
    const gen = fleetGenerator(opts.seed);
    const seeded = await seedFleet(pool, gen, opts.users);
    const fleet = describeFleet(seeded);
    progress.note(
      `fleet: database ${name}, ${PARKS.length} parks, ${PARKS.length * ROLES.length} roles, ${fmt(fleet.users)} users ` +
        `(${fmt(fleet.sharedUid)} sharing a uid across parks, ${fmt(fleet.yandexTeam)} yandex-team, ${fmt(fleet.noUid)} without uid, ${fmt(fleet.disabled)} disabled)`,
    );

    // 2. The call-center simulator and fleet-sync, on free ports, logging into the run's directory.
    const topicGroups = [`${name}-sink`, `fleet-sync.source.${name}.${name}`];
    cleanups.push({ what: 'delete the demo topics', run: () => deleteTopics(services.kafkaBrokers, name, topicGroups) });
    const tsx = ['--import', 'tsx'];
    const simulator = startChild('the call-center simulator', process.execPath, [...tsx, 'simulator/main.ts', '--port', String(await freePort()), '--token', callCenterToken, '--log-level', 'warn'], {
      cwd: root,
      env: process.env,
      logFile: join(runDir, 'simulator.log'),
    });
    children.push(simulator);
    cleanups.push({ what: 'stop the simulator', run: () => stopChild(simulator) });
    const apiPort = await freePort();
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: dbUrl,
      KAFKA_BROKERS: services.kafkaBrokers,
      TOPIC_PREFIX: name,
      CDC_SLOT: name,
      SINK_GROUP_ID: `${name}-sink`,
      CDC_HEARTBEAT_INTERVAL_MS: '1000',
      CALL_CENTER_TOKEN: callCenterToken,
      API_HOST: '127.0.0.1',
      API_PORT: String(apiPort),
      API_TOKENS: `demo:${apiToken}=sync:write,users:read,audit:read`,
      // The demo runs its own sweep at the end, to show what the stream missed (nothing).
      RECONCILE_INTERVAL_S: '3600',
      LOG_LEVEL: process.env.LOG_LEVEL || 'warn',
    };
    const simUrl = await waitUntil('the simulator to listen', async () => (/^(http:\S+)$/m.exec(simulator.tail(50)) ?? [])[1], { timeoutMs: 30_000, children: [simulator] });
    env.CALL_CENTER_URL = simUrl;
    const fleetSync = startChild('fleet-sync all', process.execPath, ['bin/fleet-sync.js', 'all'], { cwd: root, env, logFile: join(runDir, 'fleet-sync.log') });
    children.push(fleetSync);
    cleanups.push({ what: 'stop fleet-sync', run: () => stopChild(fleetSync) });

    const auth = { authorization: `Bearer ${apiToken}` };
    const getJson = async <T>(url: string, headers: Record<string, string> = {}): Promise<T> => {
      const res = await fetch(url, { headers });
      if (!res.ok) throw new Error(`GET ${url} answered ${res.status}: ${await res.text()}`);
      return (await res.json()) as T;
    };
    const post = async (path: string, body: object) => {
      const res = await fetch(apiUrl + path, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!res.ok) throw new Error(`POST ${path} answered ${res.status}: ${await res.text()}`);
      return res.json();
    };
    const status = () => getJson<{ parks: ParkStatus[]; source: SourceStatus }>(`${apiUrl}/v1/sync/call_center/parks`, auth);
    const metrics = async (): Promise<MetricsView> => readMetrics(await (await fetch(`${apiUrl}/metrics`)).text());
    const snapshot = async (): Promise<Snapshot> => {
      const [s, m] = await Promise.all([status(), metrics()]);
      return { parks: s.parks, source: s.source, metrics: m };
    };

    progress.phase('starting fleet-sync (source, sink, sweep, api)');
    await waitUntil('the api to be ready', async () => (await fetch(`${apiUrl}/readyz`)).ok, { timeoutMs: 60_000, children });
    await waitUntil('the source to stream', async () => (await status()).source.state === 'streaming', { timeoutMs: 60_000, children });
    progress.note(`fleet-sync: api ${apiUrl}, call-center simulator ${simUrl}, logs in ${relative(process.cwd(), runDir)}/`);
    let polling = false;
    ticker = setInterval(() => {
      if (polling) return;
      polling = true;
      snapshot()
        .then((s) => progress.update(s))
        .catch(() => {})
        .finally(() => (polling = false));
    }, process.stdout.isTTY ? 250 : 500);

    // Convergence: the call center's grants equal what the database says by SPEC §5 (scripts/lib/oracle.ts).
    const held = async (): Promise<Grants> => nonEmpty((await getJson<SimState>(`${simUrl}/_sim/state`)).projects);
    const converged = async () => canonical(await held()) === canonical(await expectedGrants(pool!));
    const steps: Step[] = [];
    const step = async (stepName: string, detail: string | (() => Promise<string>), change: () => Promise<void>) => {
      progress.phase(`${stepName}: waiting for the call center to match the database`);
      const t = Date.now();
      await change();
      await waitUntil(`the call center to match the database after: ${stepName}`, converged, { timeoutMs: 120_000, intervalMs: 100, children });
      const seconds = (Date.now() - t) / 1000;
      const text = typeof detail === 'string' ? detail : await detail();
      steps.push({ name: stepName, detail: text, seconds });
      progress.note(`✓ ${stepName}: ${text} — the call center matched in ${secs(seconds)}`);
    };
    const grantsIn = async (project: string) => Object.keys((await held())[project] ?? {}).length;

    // 3. Two parks turned on through the api, as the call-center creation script does: each one's backfill.
    await step(
      'two parks turned on',
      async () => `${SYNCED.map((s) => s.park).join(' and ')} backfilled, ${fmt((await grantsIn(SYNCED[0].project)) + (await grantsIn(SYNCED[1].project)))} grants`,
      async () => {
        for (const s of SYNCED) {
          await post('/v1/sync/call_center/park/on', {
            park_id: s.park,
            project_id: s.project,
            roles: Object.entries(CALL_CENTER_ROLES).map(([key, cc]) => ({ role_id: roleId(s.park, key), call_center_role_id: cc })),
            ...(s.yandexTeamRole ? { yandex_team_role_id: s.yandexTeamRole } : {}),
          });
        }
      },
    );

    // 4. Live changes, in small transactions as dispatchers make them.
    const syncedParks = SYNCED.map((s) => s.park);
    const share = (fraction: number, min: number) => Math.max(min, Math.round(opts.users * fraction));
    const newUsers: FleetUser[] = Array.from({ length: share(0.05, 10) }, (_, i) => gen.user(i % 3 === 2 ? undefined : syncedParks[i % 2]));
    await step('new users', `${fmt(newUsers.length)} added (${newUsers.filter((u) => syncedParks.includes(u.park_id)).length} in the syncing parks)`, () =>
      inSmallTransactions(pool!, newUsers, 10, (client, u) => insertUsers(client, [u])),
    );

    const roleChanges = await sampleUsers(pool!, syncedParks, share(0.04, 10), 'is_enabled AND yandex_uid IS NOT NULL');
    await step('role changes', `${fmt(roleChanges.length)} users given another role (some unmapped, which revokes)`, () =>
      inSmallTransactions(pool!, roleChanges, 10, async (client, u) => {
        const others = ROLES.map((r) => roleId(u.park_id, r.key)).filter((r) => r !== u.role_id);
        await client.query('UPDATE users SET role_id = $1 WHERE id = $2', [others[gen.int(others.length)], u.id]);
      }),
    );

    const disables = await sampleUsers(pool!, syncedParks, share(0.02, 5), 'is_enabled');
    await step('disables', `${fmt(disables.length)} users disabled`, () =>
      inSmallTransactions(pool!, disables, 10, async (client, u) => {
        await client.query('UPDATE users SET is_enabled = false WHERE id = $1', [u.id]);
      }),
    );

    const [from, to] = syncedParks as [string, string];
    const moves = await sampleUsers(pool!, [from], share(0.005, 3), `is_enabled AND yandex_uid IS NOT NULL AND NOT is_yandex_team AND role_id = '${roleId(from, 'operator')}'`);
    await step('moves between parks', `${fmt(moves.length)} operators moved from ${from} to ${to}`, () =>
      inSmallTransactions(pool!, moves, 5, async (client, u) => {
        await client.query('UPDATE users SET park_id = $1, role_id = $2 WHERE id = $3', [to, roleId(to, 'operator'), u.id]);
      }),
    );

    const offProject = SYNCED[1].project;
    const grantedBefore = await grantsIn(offProject);
    await step('a park turned off', async () => `${to} off with revoke through the api: ${fmt(grantedBefore - (await grantsIn(offProject)))} grants revoked in ${offProject}`, async () => {
      await post('/v1/sync/call_center/park/off', { park_id: to, revoke: true });
    });

    // 5. The check: the call center against the database, and a sweep to show what the stream missed.
    progress.phase('checking: a reconciliation sweep compares every synced user with the call center');
    const sweepOut = await run(process.execPath, ['bin/fleet-sync.js', 'reconcile', '--once'], { env });
    const sweeps = Object.values(JSON.parse(sweepOut) as Record<string, { checked: number; corrected_profiles: number; corrected_grants: number; revoked: number; failed: number }>);
    const sweep = sweeps.reduce(
      (a, s) => ({ checked: a.checked + s.checked, corrections: a.corrections + s.corrected_profiles + s.corrected_grants + s.revoked, failed: a.failed + s.failed }),
      { checked: 0, corrections: 0, failed: 0 },
    );
    const finalHeld = await held();
    const expected = await expectedGrants(pool);
    const diff = grantDiff(finalHeld, expected);
    ok = diff.length === 0;
    const final = await snapshot();
    progress.update(final);
    progress.stop();
    clearInterval(ticker);

    // 6. The summary.
    const m = final.metrics;
    const grantCount = Object.values(expected).reduce((n, users) => n + Object.keys(users).length, 0);
    const ccUsers = Object.keys((await getJson<SimState>(`${simUrl}/_sim/state`)).users).length;
    const lines = [
      '',
      ok
        ? `fleet-sync demo: converged — the call center holds exactly what the database says (SPEC §5): ${fmt(grantCount)} grants in ${plural(Object.keys(expected).length, 'project')}`
        : `fleet-sync demo: NOT converged — ${fmt(diff.length)} grants differ from what the database says:\n    ${diff.slice(0, 20).join('\n    ')}`,
      `  fleet         ${PARKS.length} parks, ${fmt(fleet.users + newUsers.length)} users (${fmt(fleet.users)} seeded, ${fmt(newUsers.length)} added live)`,
      ...steps.map((s) => `  ${s.name.padEnd(22)} ${s.detail}; matched in ${secs(s.seconds)}`),
      `  flow          ${fmt(m.eventsProduced)} change events produced to Kafka, ${fmt(m.applies)} call-center writes, ${fmt(m.callCenterRetries)} retries, ${fmt(m.deadLetters)} dead letters, ${fmt(m.skippedNoUid)} skipped without uid`,
      `  latency       commit → applied: p50 ≤ ${secs(m.latencyP50)}, p95 ≤ ${secs(m.latencyP95)} over ${fmt(m.latencyCount)} applies`,
      `  call center   ${fmt(ccUsers)} users known, ${fmt(grantCount)} grants, equal to the database: ${ok ? 'yes' : 'NO'}`,
      `  sweep         checked ${fmt(sweep.checked)} users, ${fmt(sweep.corrections)} corrections (what the stream missed), ${fmt(sweep.failed)} failed`,
      `  took          ${secs((Date.now() - startedAt) / 1000)}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);

    if (keep) {
      for (const child of children) child.process.unref();
      const envLines = {
        DATABASE_URL: dbUrl,
        KAFKA_BROKERS: services.kafkaBrokers,
        TOPIC_PREFIX: name,
        CDC_SLOT: name,
        SINK_GROUP_ID: `${name}-sink`,
        CALL_CENTER_URL: simUrl,
        CALL_CENTER_TOKEN: callCenterToken,
        API_TOKEN: apiToken,
      };
      process.stdout.write(
        [
          '',
          'Left running:',
          `  api            ${apiUrl}   (Authorization: Bearer ${apiToken})`,
          `  docs           ${apiUrl}/docs`,
          `  status page    ${apiUrl}/?token=${apiToken}`,
          `  metrics        ${apiUrl}/metrics`,
          `  simulator      ${simUrl}/_sim/state`,
          `  logs           ${runDir}/`,
          '',
          'To use them from a shell (fleet-sync commands read these; API_TOKEN is for curl):',
          ...Object.entries(envLines).map(([k, v]) => `export ${k}=${v}`),
          '',
          `e.g.  curl -s -H "authorization: Bearer $API_TOKEN" ${apiUrl}/v1/sync/call_center/parks`,
          `Stop them: kill ${children.map((c) => c.pid).join(' ')}${services.started.length ? ` && ${services.started.map((s) => `scripts/services stop ${s}`).join(' && ')}` : ''}`,
          '',
        ].join('\n'),
      );
      cleanups.length = 0;
      await pool.end();
      pool = undefined;
      return ok ? 0 : 1;
    }
    process.stdout.write(`stopping what the demo started (fleet-sync, the simulator, its database and topics${services.started.length ? `, ${services.started.join(' and ')}` : ''})\n`);
    await cleanUp();
    if (ok) rmSync(runDir, { recursive: true, force: true });
    else process.stdout.write(`logs kept in ${runDir}/\n`);
    return ok ? 0 : 1;
  };

  try {
    return await Promise.race([work(), interrupted]);
  } catch (e) {
    if (interruptedBy) return interrupted;
    progress.stop();
    process.stderr.write(`\ndemo failed: ${(e as Error).message}\n`);
    if (keep) {
      process.stderr.write(`--keep: left running for a look; logs in ${runDir}/ (pids ${children.map((c) => c.pid).join(' ')})\n`);
      for (const child of children) child.process.unref();
      await pool?.end().catch(() => {});
      return 1;
    }
    await cleanUp();
    if (existsSync(runDir)) process.stderr.write(`logs kept in ${runDir}/\n`);
    return 1;
  }
}

const program = new Command('npm start --')
  .description('Run fleet-sync end to end on this machine: services, a seeded fleet, the call-center simulator, live changes, and a convergence check')
  .option('--users <n>', 'users to seed across the parks', whole(50, 200_000), 3_000)
  .option('--seed <n>', 'seed of the generated fleet and changes', whole(0, 2 ** 31), 1)
  .option('--keep', 'leave everything running at the end and print the URLs and export lines', false)
  .showHelpAfterError()
  .action(async (opts: Options) => {
    // Exit now: with --keep the children live on, and nothing of the demo's own is left to finish.
    process.exit(await demo(opts));
  });

await program.parseAsync();
