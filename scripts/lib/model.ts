// A randomized model test of who holds which call-center role. fast-check generates a short sequence of operations
// (park toggles and remaps, user changes, call-center faults, sink members killed -9) that is applied to real
// PostgreSQL, Kafka, sink processes and the call-center simulator; after a bounded settle a pure checker compares
// what the call center holds with SPEC §5. A failure names its seed, the shrunk sequence and the command replaying it.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import pg from 'pg';
import { destination } from 'pino';
import { turnParkOff, turnParkOn } from '../../api/db/parks.js';
import { loadConfig } from '../../connector/config.js';
import { CAPTURED_TABLES, topicFor } from '../../connector/events.js';
import { createLogger } from '../../connector/log.js';
import { createMetrics } from '../../connector/metrics.js';
import { startSource, type SourceHandle } from '../../connector/source/source.js';
import { sleep } from '../../connector/time.js';
import { createSimulator, type Simulator } from '../../simulator/simulator.js';
import { freshDatabase } from '../bench/common.js';
import { groupAtEnds } from './group-offsets.js';
import { expectedGrants, type Grants } from './oracle.js';

// ---------------------------------------------------------------------------------------------------------------
// The world every run starts from: 4 parks with 3 dispatcher roles each, 2 projects (p1 and p2 share proj-a), 17
// users (u01, u03 and u05 in two parks each; yandex-team, disabled, unmapped, role-less and uid-less ones), and
// one person per project the call-center team granted by hand.

export const PROJECTS = ['proj-a', 'proj-b'] as const;
export const PARKS = ['p1', 'p2', 'p3', 'p4'] as const;
export type ParkId = (typeof PARKS)[number];
const ROLE_KEYS = ['r1', 'r2', 'r3'] as const;
type RoleKey = (typeof ROLE_KEYS)[number];
const CC_ROLES = ['cc-operator', 'cc-lead', 'cc-support'] as const;

/** The call-center team's own people: granted by hand, never a user of any park, never to be touched. */
export const OUTSIDERS: Grants = { 'proj-a': { 'out-a': ['cc-lead'] }, 'proj-b': { 'out-b': ['cc-operator', 'cc-support'] } };

const roleId = (park: ParkId, key: RoleKey) => `${park}-${key}`;

interface ParkSetting {
  project: string;
  /** dispatcher role id → call-center role id */
  roleMap: Record<string, string>;
  ytr: string | null;
  enabled: boolean;
  revoke: boolean;
}

interface ModelUser {
  id: string;
  park: ParkId;
  uid: string | null;
  /** a role id of the user's park, or null */
  role: string | null;
  enabled: boolean;
  yt: boolean;
}

/** What the harness knows it wrote: resolves a command's picks and decides whether a command applies. */
export interface Model {
  users: ModelUser[];
  parks: Record<ParkId, ParkSetting | null>;
  deletedRoles: Set<string>;
  nextUser: number;
  nextUid: number;
  /** sink members by slot: running or not */
  sinks: [boolean, boolean];
  commands: number;
  ops: number;
  faults: number;
}

const INITIAL_PARKS: Record<ParkId, ParkSetting | null> = {
  p1: { project: 'proj-a', roleMap: { 'p1-r1': 'cc-operator', 'p1-r2': 'cc-lead' }, ytr: 'cc-support', enabled: true, revoke: true },
  p2: { project: 'proj-a', roleMap: { 'p2-r1': 'cc-operator', 'p2-r2': 'cc-operator' }, ytr: null, enabled: true, revoke: true },
  p3: { project: 'proj-b', roleMap: { 'p3-r1': 'cc-operator', 'p3-r2': 'cc-lead' }, ytr: 'cc-support', enabled: true, revoke: true },
  p4: null,
};

const INITIAL_USERS: [ParkId, string | null, RoleKey | null, boolean, boolean][] = [
  ['p1', 'u01', 'r1', true, false],
  ['p1', 'u02', 'r2', true, false],
  ['p1', 'u03', 'r1', true, false],
  ['p1', 'u04', 'r1', true, true],
  ['p1', 'u05', 'r1', false, false],
  ['p1', 'u06', 'r3', true, false],
  ['p1', null, 'r1', true, false],
  ['p2', 'u05', 'r1', true, false],
  ['p2', 'u07', 'r2', true, false],
  ['p2', 'u08', null, true, false],
  ['p3', 'u03', 'r2', true, false],
  ['p3', 'u09', 'r1', true, false],
  ['p3', 'u10', 'r2', true, true],
  ['p3', 'u11', 'r1', true, false],
  ['p4', 'u12', 'r1', true, false],
  ['p4', 'u13', 'r2', true, false],
  ['p4', 'u01', 'r1', true, false],
];

/** Ids the harness chooses, so that a sequence writes the same rows every time it runs. */
const userIdOf = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const uidOf = (n: number) => `u${String(n).padStart(2, '0')}`;

export function initialModel(members: 1 | 2 = 1): Model {
  return {
    users: INITIAL_USERS.map(([park, uid, role, enabled, yt], i) => ({ id: userIdOf(i + 1), park, uid, role: role && roleId(park, role), enabled, yt })),
    parks: structuredClone(INITIAL_PARKS),
    deletedRoles: new Set(),
    nextUser: INITIAL_USERS.length + 1,
    nextUid: 14,
    sinks: [true, members === 2],
    commands: 0,
    ops: 0,
    faults: 0,
  };
}

async function seedWorld(db: pg.Pool, model: Model): Promise<void> {
  for (const park of PARKS) {
    await db.query('INSERT INTO parks (id, name) VALUES ($1, $1)', [park]);
    for (const key of ROLE_KEYS) await db.query('INSERT INTO roles (id, park_id, name) VALUES ($1, $2, $3)', [roleId(park, key), park, key]);
  }
  for (const u of model.users) await insertUser(db, u);
  for (const park of PARKS) {
    const s = model.parks[park];
    if (!s) continue;
    const roles = Object.entries(s.roleMap).map(([role_id, call_center_role_id]) => ({ role_id, call_center_role_id }));
    await turnParkOn(db, { parkId: park, projectId: s.project, roles, yandexTeamRoleId: s.ytr });
  }
}

async function insertUser(db: pg.Pool, u: ModelUser): Promise<void> {
  await db.query(
    `INSERT INTO users (id, park_id, yandex_uid, login, name, role_id, is_enabled, is_yandex_team) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)`,
    [u.id, u.park, u.uid, `login-${u.id.slice(-4)}`, u.role, u.enabled, u.yt],
  );
}

// ---------------------------------------------------------------------------------------------------------------
// The checker: pure over what the database says, what the call center holds, and what the outsiders were given.

export interface ParkRowSnapshot {
  park_id: string;
  project_id: string;
  role_map: Record<string, string>;
  yandex_team_role_id: string | null;
  enabled: boolean;
  revoke_on_disable: boolean;
}

export interface UserRowSnapshot {
  park_id: string;
  yandex_uid: string;
  role_id: string | null;
  is_enabled: boolean;
  is_yandex_team: boolean;
}

export interface DbSnapshot {
  /** scripts/lib/oracle.ts's expectedGrants: what SPEC §5 gives users of enabled parks */
  expected: Grants;
  /** every call_center_parks row */
  parks: ParkRowSnapshot[];
  /** every users row with a yandex_uid */
  users: UserRowSnapshot[];
  /**
   * The audit trail's latest applied change of each (project, uid) whose grant record is settled: what fleet-sync
   * says the key holds. (A pending record means a call may have landed without its row yet; the redo writes it.)
   */
  audit?: { project_id: string; uid: string; roles_after: string[]; id: string }[];
}

const sortedRoles = (roles: readonly string[] | undefined) => [...new Set(roles ?? [])].sort();
const show = (roles: readonly string[]) => JSON.stringify(sortedRoles(roles));

/** What a row earns by a park's mapping, as if the park were on (SPEC §5). */
function earnedByMapping(row: UserRowSnapshot, park: ParkRowSnapshot): string | null {
  if (!row.is_enabled) return null;
  if (row.is_yandex_team) return park.yandex_team_role_id;
  return row.role_id !== null && Object.hasOwn(park.role_map, row.role_id) ? park.role_map[row.role_id]! : null;
}

/**
 * Every way the call center differs from SPEC §5, one line each (empty: it holds what it should):
 *  1. a uid that is a user of an enabled park mapped to a project holds exactly what the oracle gives there;
 *  2. any other uid holds nothing in the project, unless a park of that project is off without revoke and the
 *     uid's rows in it would earn, by that park's last mapping, at least what it holds;
 *  3. the outsiders hold exactly what they were given by hand.
 */
export function accessViolations(db: DbSnapshot, held: Record<string, Record<string, string[]>>, outsiders: Grants): string[] {
  const out: string[] = [];
  const enabledParks = db.parks.filter((p) => p.enabled);
  /** project → uid → the enabled parks of that project the uid is a user of */
  const members = new Map<string, Map<string, string[]>>();
  for (const u of db.users) {
    for (const p of enabledParks) {
      if (p.park_id !== u.park_id) continue;
      const byUid = members.get(p.project_id) ?? new Map<string, string[]>();
      members.set(p.project_id, byUid);
      byUid.set(u.yandex_uid, [...new Set([...(byUid.get(u.yandex_uid) ?? []), p.park_id])]);
    }
  }
  const projects = new Set([...Object.keys(held), ...Object.keys(db.expected), ...Object.keys(outsiders), ...members.keys()]);
  for (const project of [...projects].sort()) {
    const holds = held[project] ?? {};
    const given = outsiders[project] ?? {};
    const expected = db.expected[project] ?? {};
    const memberParks = members.get(project) ?? new Map<string, string[]>();
    const uids = new Set([...Object.keys(holds), ...Object.keys(expected), ...Object.keys(given), ...memberParks.keys()]);
    for (const uid of [...uids].sort()) {
      const has = sortedRoles(holds[uid]);
      const byHand = Object.hasOwn(given, uid) ? given[uid]! : null;
      if (byHand) {
        if (show(has) !== show(byHand)) out.push(`${project}/${uid}: the call-center team's own grant changed: holds ${show(has)}, was given ${show(byHand)} (rule 3)`);
        continue;
      }
      if (memberParks.has(uid) || Object.hasOwn(expected, uid)) {
        const want = sortedRoles(expected[uid]);
        if (show(has) !== show(want)) {
          out.push(`${project}/${uid}: holds ${show(has)}, SPEC §5 gives ${show(want)} (a user of enabled park ${(memberParks.get(uid) ?? ['?']).join(', ')}; rule 1)`);
        }
        continue;
      }
      if (has.length === 0) continue;
      const frozen = db.parks.filter((p) => !p.enabled && !p.revoke_on_disable && p.project_id === project);
      const allowed = new Set<string>();
      for (const p of frozen) {
        for (const u of db.users) {
          if (u.park_id !== p.park_id || u.yandex_uid !== uid) continue;
          const role = earnedByMapping(u, p);
          if (role) allowed.add(role);
        }
      }
      if (frozen.length > 0 && has.every((r) => allowed.has(r))) continue;
      const why =
        frozen.length === 0
          ? `no park of ${project} is off without revoke`
          : `park ${frozen.map((p) => p.park_id).join(', ')} is off without revoke and its last mapping gives the uid's rows there ${show([...allowed])}`;
      out.push(`${project}/${uid}: holds ${show(has)} but earns nothing from an enabled park, and ${why} (rule 2)`);
    }
  }
  return out;
}

/**
 * 4. The audit trail agrees with the call center: the latest applied change of each (project, uid) with a settled
 *    record says what the key holds now.
 */
export function auditViolations(db: DbSnapshot, held: Record<string, Record<string, string[]>>): string[] {
  const out: string[] = [];
  for (const row of db.audit ?? []) {
    const has = sortedRoles(held[row.project_id]?.[row.uid]);
    if (show(has) !== show(row.roles_after)) out.push(`${row.project_id}/${row.uid}: holds ${show(has)}, the audit trail's latest change (#${row.id}) says ${show(row.roles_after)} (rule 4)`);
  }
  return out;
}

/** The database as one consistent read: the oracle's answer and the rows the checker needs. */
export async function snapshotDb(pool: pg.Pool): Promise<DbSnapshot> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const expected = await expectedGrants(client);
    const parks = (await client.query<ParkRowSnapshot>('SELECT park_id, project_id, role_map, yandex_team_role_id, enabled, revoke_on_disable FROM call_center_parks ORDER BY park_id')).rows;
    const users = (
      await client.query<UserRowSnapshot>('SELECT park_id, yandex_uid, role_id, is_enabled, is_yandex_team FROM users WHERE yandex_uid IS NOT NULL ORDER BY park_id, yandex_uid')
    ).rows;
    const audit = (
      await client.query<{ project_id: string; uid: string; roles_after: string[]; id: string }>(
        `SELECT a.project_id, a.uid, a.roles_after, a.n::text AS id
         FROM (SELECT DISTINCT ON (project_id, uid) project_id, uid, roles_after, id AS n FROM call_center_audit
               WHERE outcome = 'applied' AND action <> 'profile' ORDER BY project_id, uid, id DESC) AS a
         WHERE NOT EXISTS (SELECT 1 FROM call_center_grants g WHERE g.project_id = a.project_id AND g.uid = a.uid AND g.pending)
         ORDER BY a.project_id, a.uid`,
      )
    ).rows;
    await client.query('COMMIT');
    return { expected, parks, users, audit };
  } finally {
    client.release();
  }
}

function describeParks(parks: ParkRowSnapshot[]): string {
  const rows = new Map(parks.map((p) => [p.park_id, p]));
  return PARKS.map((id) => {
    const p = rows.get(id);
    if (!p) return `${id}: no row`;
    const map = Object.entries(p.role_map).map(([k, v]) => `${k}:${v}`).join(',');
    return `${id}: ${p.enabled ? 'on' : `off (${p.revoke_on_disable ? 'revoke' : 'keep'})`} → ${p.project_id} {${map}}${p.yandex_team_role_id ? ` yt:${p.yandex_team_role_id}` : ''}`;
  }).join('; ');
}

// ---------------------------------------------------------------------------------------------------------------
// A proxy in front of the simulator that delays the calls about one uid: the simulator's own latency fault is
// global, and the races worth finding are one user's call landing late while others go on.

interface UidDelayProxy {
  url: string;
  /** Delays every call about `uid` by `delayMs` for the next `forMs`. */
  slow(uid: string, delayMs: number, forMs: number): Promise<void>;
  close(): Promise<void>;
}

const UID_IN_PATH = [/^\/v1\/users\/([^/?]+)/, /^\/v1\/projects\/[^/]+\/users\/([^/?]+)\/roles/];

async function startUidDelayProxy(target: string): Promise<UidDelayProxy> {
  const delays = new Map<string, { delayMs: number; generation: number }>();
  let generation = 0;
  const agent = new http.Agent({ keepAlive: true });
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    let gone = false;
    res.once('close', () => (gone = true));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const uid = UID_IN_PATH.map((re) => re.exec(path)?.[1]).find((u) => u !== undefined);
      const delayMs = uid === undefined ? 0 : (delays.get(decodeURIComponent(uid))?.delayMs ?? 0);
      setTimeout(() => {
        // A client that gave up (its timeout) never reached the call center: the call is lost, not landed late.
        if (gone) return;
        const up = http.request(
          { host: upstream.hostname, port: upstream.port, path, method: req.method, headers: { ...req.headers, host: upstream.host }, agent },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        up.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
        up.end(Buffer.concat(chunks));
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async slow(uid, delayMs, forMs) {
      const mine = ++generation;
      delays.set(uid, { delayMs, generation: mine });
      await sleep(forMs);
      if (delays.get(uid)?.generation === mine) delays.delete(uid);
    },
    async close() {
      delays.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The real system of one run: its own database, slot, topics and consumer group; the source in this process, sink
// members as `fleet-sync sink` processes (so they can be killed -9), the simulator behind the delaying proxy.

const BIN = fileURLToPath(new URL('../../bin/fleet-sync.js', import.meta.url));
export const MODEL_LOG_FILE = fileURLToPath(new URL('../../test-output/model.log', import.meta.url));
const CC_TOKEN = 'model-call-center-token';

export interface Services {
  /** a PostgreSQL URL whose role may create databases */
  databaseUrl: string;
  kafkaBrokers: string;
}

interface SinkMember {
  child: ChildProcess;
  exited: Promise<void>;
}

export interface SettleResult {
  ok: boolean;
  ms: number;
  violations: string[];
  /** work still pending when it gave up: unpublished changes, unprocessed events, parked uids, sweeps */
  pending: string[];
  parks: string;
}

export interface World {
  db: pg.Pool;
  sim: Simulator;
  proxy: UidDelayProxy;
  /** What happened, in order, with the time since the commands began. */
  trace: string[];
  note(line: string): void;
  /** Starts a background task (a fault's end, a graceful stop) that settle waits for. */
  background(task: Promise<unknown>): void;
  startSink(slot: number): void;
  killSink(slot: number): Promise<void>;
  stopSink(slot: number): Promise<void>;
  faults: {
    rateLimit(rate: number, retryAfterS: number, forMs: number): Promise<void>;
    errors(rate: number, forMs: number): Promise<void>;
    projectDown(project: string, forMs: number): Promise<void>;
  };
  /** Waits for the background tasks, then polls until the pipeline is idle and the checker holds, or `timeoutMs`. */
  settle(timeoutMs: number): Promise<SettleResult>;
  stop(): Promise<void>;
}

export async function startWorld(options: { services: Services; model: Model; logFile?: string; logLevel?: string }): Promise<World> {
  const { services } = options;
  const level = options.logLevel ?? process.env.LOG_LEVEL ?? 'warn';
  const logFile = options.logFile ?? MODEL_LOG_FILE;
  mkdirSync(dirname(logFile), { recursive: true });
  const name = `model_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const database = await freshDatabase(services.databaseUrl, name);
  // What is started so far, undone in reverse if the world cannot be built.
  const undo: (() => Promise<unknown>)[] = [() => database.drop()];
  const build = async <T>(step: () => Promise<T>): Promise<T> => {
    try {
      return await step();
    } catch (e) {
      for (const u of undo.reverse()) await u().catch(() => {});
      throw e;
    }
  };
  const db = new pg.Pool({ connectionString: database.url, max: 6 });
  db.on('error', () => {});
  undo.push(() => db.end());
  await build(() => seedWorld(db, options.model));

  const sim = createSimulator({ token: CC_TOKEN });
  const simUrl = await build(() => sim.start());
  undo.push(() => sim.stop());
  for (const [project, uids] of Object.entries(OUTSIDERS)) for (const [uid, roles] of Object.entries(uids)) sim.setRolesByHand(project, uid, roles);
  const proxy = await build(() => startUidDelayProxy(simUrl));
  undo.push(() => proxy.close());

  const config = loadConfig({
    DATABASE_URL: database.url,
    KAFKA_BROKERS: services.kafkaBrokers,
    TOPIC_PREFIX: name,
    TOPIC_PARTITIONS: '3',
    CDC_SLOT: name,
    CDC_HEARTBEAT_INTERVAL_MS: '500',
    LOG_LEVEL: level,
  });
  const log = createLogger(level, destination({ dest: logFile, append: true, mkdir: true, sync: true }));
  const source: SourceHandle = startSource({ config, log: log.child({ run: name }), metrics: createMetrics({ defaultMetrics: false }) });
  let sourceFailure: string | null = null;
  source.done.catch((e: Error) => (sourceFailure = e.message));
  undo.push(() => source.stop());

  const kafka = new Kafka({ brokers: config.KAFKA_BROKERS, logLevel: logLevel.NOTHING });
  const admin: Admin = kafka.admin();
  await build(() => admin.connect());

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: database.url,
    KAFKA_BROKERS: services.kafkaBrokers,
    TOPIC_PREFIX: name,
    TOPIC_PARTITIONS: '3',
    CALL_CENTER_URL: proxy.url,
    CALL_CENTER_TOKEN: CC_TOKEN,
    CALL_CENTER_TIMEOUT_MS: '2000',
    CALL_CENTER_RETRY_BASE_MS: '20',
    CALL_CENTER_RETRY_MAX_MS: '500',
    SINK_RETRY_MAX_DELAY_MS: '1000',
    SINK_GROUP_ID: name,
    // A killed member's partitions move to the others this soon.
    SINK_SESSION_TIMEOUT_MS: '6000',
    // The interval sweep would repair what the stream got wrong and hide it: it never runs within a run.
    RECONCILE_INTERVAL_S: '3600',
    LOG_LEVEL: level,
  };
  const members: (SinkMember | null)[] = [null, null];
  /** Every sink process still alive, members being stopped included: all killed when the world stops. */
  const alive = new Set<ChildProcess>();
  const tasks = new Set<Promise<unknown>>();
  const trace: string[] = [];
  const t0 = Date.now();
  let stopping = false;
  const note = (line: string) => trace.push(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${line}`);

  const startSink = (slot: number) => {
    const fd = openSync(logFile, 'a');
    const child = spawn(process.execPath, [BIN, 'sink'], { env, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    alive.add(child);
    const exited = new Promise<void>((resolve) => child.once('exit', () => (alive.delete(child), resolve())));
    const member: SinkMember = { child, exited };
    members[slot] = member;
    child.once('exit', (code, signal) => {
      if (stopping || members[slot] !== member || signal === 'SIGKILL' || signal === 'SIGTERM') return;
      // A member that stops on its own is started again, as a supervisor would; the trace tells.
      note(`sink ${slot} exited on its own (code ${code}); started again`);
      startSink(slot);
    });
  };
  const background = (task: Promise<unknown>) => {
    const t = task.catch((e: Error) => note(`background task failed: ${e.message}`)).finally(() => tasks.delete(t));
    tasks.add(t);
  };

  let rateGeneration = 0;
  let errorGeneration = 0;
  const down = new Map<string, number>();
  const setDown = () => sim.setFaults({ failProjects: [...down].filter(([, n]) => n > 0).map(([p]) => p) });

  const groupCaughtUp = () =>
    groupAtEnds(
      admin,
      name,
      CAPTURED_TABLES.map((t) => topicFor(name, t)),
    );

  const pendingWork = async (lsn: string): Promise<string[]> => {
    const out: string[] = [];
    if (sourceFailure) out.push(`the source failed: ${sourceFailure}`);
    const slot = await db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn', [name, lsn]);
    if (slot.rowCount !== 1) out.push('the source has not published every committed change');
    if (!(await groupCaughtUp().catch(() => false))) out.push('the sink group has events it has not committed');
    const { rows } = await db.query<{ retries: string; sweeps: string }>(
      'SELECT (SELECT count(*) FROM call_center_retries) AS retries, (SELECT count(*) FROM call_center_park_sweeps) AS sweeps',
    );
    if (rows[0]!.retries !== '0') out.push(`${rows[0]!.retries} parked uids in call_center_retries`);
    if (rows[0]!.sweeps !== '0') out.push(`${rows[0]!.sweeps} park sweeps waiting in call_center_park_sweeps`);
    return out;
  };

  const world: World = {
    db,
    sim,
    proxy,
    trace,
    note,
    background,
    startSink,
    async killSink(slot) {
      const member = members[slot];
      if (!member) return;
      member.child.kill('SIGKILL');
      await member.exited;
    },
    async stopSink(slot) {
      const member = members[slot];
      if (!member) return;
      members[slot] = null;
      member.child.kill('SIGTERM');
      const timer = setTimeout(() => member.child.kill('SIGKILL'), 20_000);
      await member.exited;
      clearTimeout(timer);
    },
    faults: {
      async rateLimit(rate, retryAfterS, forMs) {
        const mine = ++rateGeneration;
        sim.setFaults({ rateLimitRate: rate, retryAfterS });
        await sleep(forMs);
        if (rateGeneration === mine) sim.setFaults({ rateLimitRate: 0 });
      },
      async errors(rate, forMs) {
        const mine = ++errorGeneration;
        sim.setFaults({ errorRate: rate });
        await sleep(forMs);
        if (errorGeneration === mine) sim.setFaults({ errorRate: 0 });
      },
      async projectDown(project, forMs) {
        down.set(project, (down.get(project) ?? 0) + 1);
        setDown();
        await sleep(forMs);
        down.set(project, down.get(project)! - 1);
        setDown();
      },
    },
    async settle(timeoutMs) {
      // Every fault ends as it was drawn (each lasts a few seconds at most) before the clock starts.
      while (tasks.size > 0) await Promise.all([...tasks]);
      const started = Date.now();
      const { rows } = await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      const lsn = rows[0]!.lsn;
      let good = 0;
      let lastBad = '';
      let quietBadSince: number | null = null;
      for (;;) {
        const pending = await pendingWork(lsn);
        const snapshot = await snapshotDb(db);
        const held = sim.state().projects;
        const violations = [...accessViolations(snapshot, held, OUTSIDERS), ...auditViolations(snapshot, held)];
        const result = { ms: Date.now() - started, violations, pending, parks: describeParks(snapshot.parks) };
        if (pending.length === 0 && violations.length === 0) {
          // Twice in a row: a call in flight when the first look was taken could still have changed it.
          if (++good >= 2) return { ok: true, ...result };
        } else good = 0;
        // Idle (everything published, every event committed, nothing parked or waiting to be swept): nothing more
        // will change before the interval sweep, so a difference that stays is the end state.
        const bad = JSON.stringify(violations);
        if (pending.length === 0 && violations.length > 0) {
          if (bad !== lastBad || quietBadSince === null) quietBadSince = Date.now();
          if (Date.now() - quietBadSince > 5_000) return { ok: false, ...result };
        } else quietBadSince = null;
        lastBad = bad;
        if (Date.now() - started > timeoutMs) return { ok: false, ...result };
        await sleep(250);
      }
    },
    async stop() {
      stopping = true;
      for (const child of alive) child.kill('SIGKILL');
      await Promise.all([...tasks]);
      await Promise.all(members.map((m) => m?.exited));
      await source.stop().catch(() => {});
      const topics = (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(`${name}.`));
      if (topics.length > 0) await admin.deleteTopics({ topics }).catch(() => {});
      await admin.disconnect().catch(() => {});
      await proxy.close();
      await sim.stop();
      await db.end();
      // MODEL_KEEP_DB=1 keeps a seed's database for a look at its tables (call_center_audit, grants) after a failure.
      if (!process.env.MODEL_KEEP_DB) await database.drop();
    },
  };
  for (const [slot, running] of options.model.sinks.entries()) if (running) startSink(slot);
  return world;
}

// ---------------------------------------------------------------------------------------------------------------
// The operations. Each command's picks are indexes resolved against the model when it runs, so a sequence writes
// the same rows every time, and a shrunk sequence still means something.

type Kind = 'op' | 'fault' | 'wait';
type Cmd = fc.AsyncCommand<Model, World>;

class Step implements Cmd {
  constructor(
    private readonly label: string,
    private readonly kind: Kind,
    private readonly applies: (m: Readonly<Model>) => boolean,
    private readonly act: (m: Model, w: World) => Promise<string | void>,
  ) {
    // fast-check prints a sequence as its commands joined with commas, and the report splits it back on them.
    if (label.includes(',')) throw new Error(`a command's label must not contain a comma: ${label}`);
  }
  check(m: Readonly<Model>): boolean {
    return this.applies(m);
  }
  async run(m: Model, w: World): Promise<void> {
    m.commands++;
    if (this.kind === 'op') m.ops++;
    if (this.kind === 'fault') m.faults++;
    // The line is written when the command starts; what it resolved to is added once known.
    const at = w.trace.length;
    w.note(this.label);
    const what = await this.act(m, w);
    if (what) w.trace[at] += ` — ${what}`;
  }
  toString(): string {
    return this.label;
  }
}

type UidChoice = { kind: 'new' } | { kind: 'existing'; k: number } | { kind: 'none' };

const uidsIn = (m: Readonly<Model>) => [...new Set(m.users.map((u) => u.uid).filter((u): u is string => u !== null))];

function resolveUid(m: Model, choice: UidChoice): string | null {
  const uids = uidsIn(m);
  if (choice.kind === 'none') return null;
  if (choice.kind === 'existing' && uids.length > 0) return uids[choice.k % uids.length]!;
  return uidOf(m.nextUid++);
}

function liveRole(m: Readonly<Model>, park: ParkId, key: RoleKey | null): string | null {
  if (key === null) return null;
  const id = roleId(park, key);
  return m.deletedRoles.has(id) ? null : id;
}

const showUser = (u: ModelUser) => `${u.uid ?? '(no uid)'}@${u.park}`;
const showUidChoice = (c: UidChoice) => (c.kind === 'existing' ? `uid#${c.k}` : c.kind === 'new' ? 'new uid' : 'no uid');

const park = fc.constantFrom(...PARKS);
const project = fc.constantFrom(...PROJECTS);
const roleKey = fc.constantFrom<RoleKey | null>('r1', 'r2', 'r3', null);
const pick = fc.nat({ max: 999 });
const uidChoice: fc.Arbitrary<UidChoice> = fc.oneof(
  { arbitrary: pick.map((k): UidChoice => ({ kind: 'existing', k })), weight: 3 },
  { arbitrary: fc.constant<UidChoice>({ kind: 'new' }), weight: 2 },
  { arbitrary: fc.constant<UidChoice>({ kind: 'none' }), weight: 1 },
);
const mostly = (value: boolean) => fc.oneof({ arbitrary: fc.constant(value), weight: 5 }, { arbitrary: fc.constant(!value), weight: 1 });
const mapping = fc.record({ r1: fc.option(fc.constantFrom(...CC_ROLES)), r2: fc.option(fc.constantFrom(...CC_ROLES)), r3: fc.option(fc.constantFrom(...CC_ROLES)) });

interface ParkOnArgs {
  park: ParkId;
  project: string;
  map: Record<RoleKey, string | null>;
  ytr: string | null;
}
const parkOnArgs: fc.Arbitrary<ParkOnArgs> = fc.record({ park, project, map: mapping, ytr: fc.option(fc.constantFrom('cc-support', 'cc-lead')) });
const showParkOn = ({ park, project, map, ytr }: ParkOnArgs) =>
  `on ${park}→${project} {${ROLE_KEYS.flatMap((k) => (map[k] ? [`${k}:${map[k]}`] : [])).join(' ')}}${ytr ? ` yt:${ytr}` : ''}`;

/** park/on as the api does it: a new mapping, a remap to another project, or on again. */
async function applyParkOn(m: Model, w: World, { park, project, map, ytr }: ParkOnArgs): Promise<string> {
  const roles = ROLE_KEYS.flatMap((k) => {
    const cc = map[k];
    const role = liveRole(m, park, k);
    return cc && role ? [{ role_id: role, call_center_role_id: cc }] : [];
  });
  await turnParkOn(w.db, { parkId: park, projectId: project, roles, yandexTeamRoleId: ytr });
  const was = m.parks[park];
  m.parks[park] = { project, roleMap: Object.fromEntries(roles.map((r) => [r.role_id, r.call_center_role_id])), ytr, enabled: true, revoke: was?.revoke ?? true };
  return was ? `was ${was.enabled ? 'on' : 'off'} → ${was.project}` : 'new row';
}

async function applyParkOff(m: Model, w: World, park: ParkId, revoke: boolean): Promise<void> {
  await turnParkOff(w.db, park, revoke);
  m.parks[park] = { ...m.parks[park]!, enabled: false, revoke };
}

const parkOn = parkOnArgs.map((a) => new Step(showParkOn(a), 'op', () => true, (m, w) => applyParkOn(m, w, a)));

const parkOffWith = (revokes: fc.Arbitrary<boolean>) =>
  fc
    .record({ park, revoke: revokes })
    .map(({ park, revoke }) => new Step(`off ${park} revoke=${revoke}`, 'op', (m) => m.parks[park] !== null, (m, w) => applyParkOff(m, w, park, revoke)));
const parkOff = parkOffWith(mostly(true));

const truncateParks = fc.constant(null).map(
  () =>
    new Step('TRUNCATE call_center_parks', 'op', (m) => PARKS.some((p) => m.parks[p] !== null), async (m, w) => {
      await w.db.query('TRUNCATE call_center_parks');
      for (const p of PARKS) m.parks[p] = null;
    }),
);

const deleteParkRow = park.map(
  (park) =>
    new Step(`DELETE call_center_parks ${park}`, 'op', (m) => m.parks[park] !== null, async (m, w) => {
      await w.db.query('DELETE FROM call_center_parks WHERE park_id = $1', [park]);
      m.parks[park] = null;
    }),
);

interface InsertArgs {
  uid: UidChoice;
  role: RoleKey | null;
  enabled: boolean;
  yt: boolean;
}
const insertArgs: fc.Arbitrary<InsertArgs> = fc.record({ uid: uidChoice, role: roleKey, enabled: mostly(true), yt: mostly(false) });
const showInsert = (park: ParkId, c: InsertArgs) =>
  `insert user in ${park} (${showUidChoice(c.uid)} ${c.role ?? 'no role'}${c.enabled ? '' : ' disabled'}${c.yt ? ' yandex-team' : ''})`;

async function applyInsert(m: Model, w: World, park: ParkId, c: InsertArgs): Promise<string> {
  const user: ModelUser = { id: userIdOf(m.nextUser++), park, uid: resolveUid(m, c.uid), role: liveRole(m, park, c.role), enabled: c.enabled, yt: c.yt };
  await insertUser(w.db, user);
  m.users.push(user);
  return showUser(user);
}

const userInsert = fc.record({ park, c: insertArgs }).map(({ park, c }) => new Step(showInsert(park, c), 'op', () => true, (m, w) => applyInsert(m, w, park, c)));

type UserChange = { kind: 'enabled' } | { kind: 'yt' } | { kind: 'role'; role: RoleKey | null };
const userChange: fc.Arbitrary<UserChange> = fc.oneof(
  { arbitrary: fc.constant<UserChange>({ kind: 'enabled' }), weight: 2 },
  { arbitrary: fc.constant<UserChange>({ kind: 'yt' }), weight: 1 },
  { arbitrary: roleKey.map((role): UserChange => ({ kind: 'role', role })), weight: 3 },
);
const showChange = (c: UserChange) => (c.kind === 'enabled' ? 'flip is_enabled' : c.kind === 'yt' ? 'flip is_yandex_team' : `role → ${c.role ?? 'NULL'}`);

const hasUsers = (m: Readonly<Model>) => m.users.length > 0;
const userAt = (m: Readonly<Model>, k: number) => m.users[k % m.users.length]!;

async function applyChange(m: Model, w: World, u: ModelUser, change: UserChange): Promise<string> {
  if (change.kind === 'enabled') u.enabled = !u.enabled;
  else if (change.kind === 'yt') u.yt = !u.yt;
  else u.role = liveRole(m, u.park, change.role);
  await w.db.query('UPDATE users SET is_enabled = $2, is_yandex_team = $3, role_id = $4 WHERE id = $1', [u.id, u.enabled, u.yt, u.role]);
  return `${showUser(u)} now ${u.enabled ? 'enabled' : 'disabled'}, ${u.yt ? 'yandex-team, ' : ''}${u.role ?? 'no role'}`;
}

const userUpdate = fc
  .record({ k: pick, change: userChange })
  .map(({ k, change }) => new Step(`user#${k} ${showChange(change)}`, 'op', hasUsers, (m, w) => applyChange(m, w, userAt(m, k), change)));

/**
 * A park toggled, then after a short gap one of its users changed: the event of the change meets a sink member
 * whose view of the park may not have the toggle yet, while the toggle's sweep may have read the users already.
 */
type Toggle = { kind: 'on'; on: ParkOnArgs } | { kind: 'off'; revoke: boolean };
type Touch = { kind: 'insert'; c: InsertArgs } | { kind: 'change'; k: number; change: UserChange };
const touchArgs: fc.Arbitrary<Touch> = fc.oneof(
  insertArgs.map((c): Touch => ({ kind: 'insert', c })),
  fc.record({ k: pick, change: userChange }).map((t): Touch => ({ kind: 'change', ...t })),
);

/** The touch of toggleThenTouch: a change of one of the park's users (a new one if it has none). */
async function applyTouch(m: Model, w: World, park: ParkId, touch: Touch): Promise<string> {
  const ofPark = m.users.filter((u) => u.park === park);
  if (touch.kind === 'change' && ofPark.length > 0) return applyChange(m, w, ofPark[touch.k % ofPark.length]!, touch.change);
  return applyInsert(m, w, park, touch.kind === 'insert' ? touch.c : { uid: { kind: 'new' }, role: 'r1', enabled: true, yt: false });
}

const toggleThenTouchWith = (revokes: fc.Arbitrary<boolean>) =>
  fc
    .record({
      park,
      toggle: fc.oneof(
        { arbitrary: parkOnArgs.map((on): Toggle => ({ kind: 'on', on })), weight: 2 },
        { arbitrary: revokes.map((revoke): Toggle => ({ kind: 'off', revoke })), weight: 1 },
      ),
      gapMs: fc.integer({ min: 0, max: 400 }),
      touch: touchArgs,
    })
    .map(({ park, toggle, gapMs, touch }) => {
      const first = toggle.kind === 'on' ? showParkOn({ ...toggle.on, park }) : `off ${park} revoke=${toggle.revoke}`;
      const then = touch.kind === 'insert' ? showInsert(park, touch.c) : `user#${touch.k} of ${park} ${showChange(touch.change)}`;
      const applies = (m: Readonly<Model>) => toggle.kind === 'on' || m.parks[park] !== null;
      return new Step(`${first}; ${gapMs} ms later ${then}`, 'op', applies, async (m, w) => {
        const was = toggle.kind === 'on' ? await applyParkOn(m, w, { ...toggle.on, park }) : await applyParkOff(m, w, park, toggle.revoke).then(() => 'off');
        await sleep(gapMs);
        return `${was}; ${await applyTouch(m, w, park, touch)}`;
      });
    });
const toggleThenTouch = toggleThenTouchWith(mostly(true));

const userDelete = pick.map(
  (k) =>
    new Step(`delete user#${k}`, 'op', hasUsers, async (m, w) => {
      const u = userAt(m, k);
      await w.db.query('DELETE FROM users WHERE id = $1', [u.id]);
      m.users.splice(m.users.indexOf(u), 1);
      return showUser(u);
    }),
);

const userMove = fc.record({ k: pick, to: park, role: roleKey }).map(
  ({ k, to, role }) =>
    new Step(`move user#${k} to ${to} as ${role ?? 'no role'}`, 'op', hasUsers, async (m, w) => {
      const u = userAt(m, k);
      const from = showUser(u);
      // Moving to the park it is in already would be a role change: the next park then.
      const target = to === u.park ? PARKS[(PARKS.indexOf(to) + 1) % PARKS.length]! : to;
      u.park = target;
      u.role = liveRole(m, target, role);
      await w.db.query('UPDATE users SET park_id = $2, role_id = $3 WHERE id = $1', [u.id, u.park, u.role]);
      return `${from} → ${showUser(u)} (${u.role ?? 'no role'})`;
    }),
);

const uidChange = fc.record({ k: pick, uid: uidChoice }).map(
  ({ k, uid }) =>
    new Step(`user#${k} yandex_uid → ${showUidChoice(uid)}`, 'op', hasUsers, async (m, w) => {
      const u = userAt(m, k);
      const from = showUser(u);
      u.uid = resolveUid(m, uid);
      await w.db.query('UPDATE users SET yandex_uid = $2 WHERE id = $1', [u.id, u.uid]);
      return `${from} → ${u.uid ?? '(no uid)'}`;
    }),
);

const roleDelete = fc.record({ park, key: fc.constantFrom(...ROLE_KEYS) }).map(
  ({ park, key }) =>
    new Step(`DELETE role ${roleId(park, key)}`, 'op', (m) => !m.deletedRoles.has(roleId(park, key)), async (m, w) => {
      const id = roleId(park, key);
      await w.db.query('DELETE FROM roles WHERE id = $1', [id]);
      m.deletedRoles.add(id);
      const orphaned = m.users.filter((u) => u.role === id);
      for (const u of orphaned) u.role = null;
      return `${orphaned.length} users' role_id became NULL`;
    }),
);

const slowUid = fc.record({ k: pick, delayMs: fc.integer({ min: 200, max: 2600 }), forMs: fc.integer({ min: 500, max: 3000 }) }).map(
  ({ k, delayMs, forMs }) =>
    new Step(`slow uid#${k} by ${delayMs} ms for ${forMs} ms`, 'fault', (m) => uidsIn(m).length > 0, async (m, w) => {
      const uids = uidsIn(m);
      const uid = uids[k % uids.length]!;
      w.background(w.proxy.slow(uid, delayMs, forMs));
      return `${uid}${delayMs > 2000 ? ' (beyond the 2 s call timeout: its calls time out)' : ''}`;
    }),
);

const rateLimit = fc.record({ rate: fc.constantFrom(0.5, 1), retryAfterS: fc.constantFrom(0, 1), forMs: fc.integer({ min: 200, max: 800 }) }).map(
  ({ rate, retryAfterS, forMs }) =>
    new Step(`429 on ${rate * 100}% (Retry-After ${retryAfterS}) for ${forMs} ms`, 'fault', () => true, async (_m, w) => {
      w.background(w.faults.rateLimit(rate, retryAfterS, forMs));
    }),
);

const errorBurst = fc.record({ rate: fc.constantFrom(0.3, 0.7, 1), forMs: fc.integer({ min: 200, max: 1000 }) }).map(
  ({ rate, forMs }) =>
    new Step(`5xx on ${rate * 100}% for ${forMs} ms`, 'fault', () => true, async (_m, w) => {
      w.background(w.faults.errors(rate, forMs));
    }),
);

const projectDown = fc.record({ project, forMs: fc.integer({ min: 300, max: 3000 }) }).map(
  ({ project, forMs }) =>
    new Step(`${project} down for ${forMs} ms`, 'fault', () => true, async (_m, w) => {
      w.background(w.faults.projectDown(project, forMs));
    }),
);

const killMember = fc.record({ slot: fc.constantFrom(0, 1), restartAfterMs: fc.integer({ min: 0, max: 1500 }) }).map(
  ({ slot, restartAfterMs }) =>
    new Step(`kill -9 sink ${slot} and start it after ${restartAfterMs} ms`, 'fault', (m) => m.sinks[slot]!, async (m, w) => {
      await w.killSink(slot);
      await sleep(restartAfterMs);
      w.startSink(slot);
    }),
);

const startMember = fc.constantFrom(0, 1).map(
  (slot) =>
    new Step(`start sink ${slot}`, 'fault', (m) => !m.sinks[slot], async (m, w) => {
      m.sinks[slot] = true;
      w.startSink(slot);
    }),
);

const stopMember = fc.constantFrom(0, 1).map(
  (slot) =>
    new Step(`stop sink ${slot} (SIGTERM)`, 'fault', (m) => m.sinks[slot]! && m.sinks[1 - slot]!, async (m, w) => {
      m.sinks[slot] = false;
      w.background(w.stopSink(slot));
    }),
);

const pause = fc.integer({ min: 50, max: 1500 }).map(
  (ms) =>
    new Step(`pause ${ms} ms`, 'wait', () => true, async () => {
      await sleep(ms);
    }),
);

/** A check in the middle of a sequence: a later operation must not be what hides a wrong state. */
const settleNow = fc.constant(null).map(
  () =>
    new Step('settle and check', 'wait', () => true, async (_m, w) => {
      const r = await w.settle(MID_SETTLE_MS);
      if (!r.ok) throw new ModelFailure('the check in the middle of the sequence failed', r, w.trace);
      return `held after ${(r.ms / 1000).toFixed(1)} s`;
    }),
);

// A member killed -9 (or stopped) while it sweeps a park leaves the sweep leased (SWEEP_LEASE_MS in
// connector/sink/retry-loops.ts, 15 s): every settle limit is well beyond that lease.
const MID_SETTLE_MS = 30_000;


export interface GeneratorOptions {
  maxCommands: number;
  /** Only user changes, park on and off with revoke, and pauses: no faults, no truncate, no role deletes. */
  simple?: boolean;
  /** fast-check's replayPath of a shrunk sequence (needed, with seed and path, to replay it). */
  replayPath?: string;
}

export function modelCommands(options: GeneratorOptions): fc.Arbitrary<Iterable<Cmd>> {
  const w = (arbitrary: fc.Arbitrary<Cmd>, weight: number) => ({ arbitrary, weight });
  const simple = [
    w(parkOn, 4),
    w(toggleThenTouchWith(fc.constant(true)), 2),
    w(parkOffWith(fc.constant(true)), 3),
    w(userInsert, 3),
    w(userUpdate, 5),
    w(userDelete, 2),
    w(pause, 3),
  ];
  const all = [
    w(parkOn, 4),
    w(toggleThenTouch, 3),
    w(parkOff, 3),
    w(truncateParks, 1),
    w(deleteParkRow, 1),
    w(userInsert, 3),
    w(userUpdate, 5),
    w(userDelete, 2),
    w(userMove, 2),
    w(uidChange, 2),
    w(roleDelete, 1),
    w(slowUid, 1),
    w(rateLimit, 1),
    w(errorBurst, 1),
    w(projectDown, 1),
    w(killMember, 1),
    w(startMember, 1),
    w(stopMember, 1),
    w(pause, 3),
    w(settleNow, 1),
  ];
  return fc.commands([fc.oneof(...(options.simple ? simple : all))], {
    maxCommands: options.maxCommands,
    size: 'medium',
    ...(options.replayPath ? { replayPath: options.replayPath } : {}),
  });
}

// ---------------------------------------------------------------------------------------------------------------
// One seed: fast-check generates the sequence, runs it on a fresh world, and on a failure shrinks it within a
// time budget, each candidate on a fresh world again.

/** A run's failure, with what the runner saw: the message fast-check reports for the shrunk sequence. */
export class ModelFailure extends Error {
  constructor(
    readonly what: string,
    readonly settle: SettleResult,
    readonly trace: string[],
  ) {
    super(
      [
        `${what} (after ${(settle.ms / 1000).toFixed(1)} s of settling)`,
        ...(settle.violations.length > 0 ? ['differences:', ...settle.violations.map((v) => `  ${v}`)] : []),
        ...(settle.pending.length > 0 ? ['still pending:', ...settle.pending.map((p) => `  ${p}`)] : []),
        `parks at the end: ${settle.parks}`,
        'what happened:',
        ...trace.map((t) => `  ${t}`),
      ].join('\n'),
    );
    this.name = 'ModelFailure';
  }
}

export interface RunStats {
  commands: number;
  ops: number;
  faults: number;
  settleMs: number | null;
  passed: boolean;
  durationMs: number;
  /** what happened, as in a failure's report */
  trace: string[];
}

export interface SeedOptions extends GeneratorOptions {
  seed: number;
  services: Services;
  /** fast-check's counterexample path: replays that (shrunk) sequence only. */
  path?: string;
  /** Time allowed to shrink a failing sequence; 0: report the sequence as generated. */
  shrinkBudgetMs: number;
  /** Limit of the final settle. */
  settleTimeoutMs: number;
  logFile?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface SeedResult {
  seed: number;
  passed: boolean;
  /** the first run: the sequence as generated (or as replayed from a path) */
  first: RunStats | null;
  runs: number;
  durationMs: number;
  failure?: {
    /** sink members at the start */
    members: 1 | 2;
    sequence: string;
    commands: number;
    path: string | null;
    replayPath: string | null;
    report: string;
    shrinks: number;
    /** shrinking stopped at the budget with candidates left untried */
    shrinkCutShort: boolean;
    shrinkMs: number;
  };
}

/** The command that replays a seed (and, with a path, its shrunk sequence). */
export function replayCommand(o: { seed: number; maxCommands: number; simple?: boolean | undefined; path?: string | null; replayPath?: string | null }): string {
  const parts = ['npm run chaos -- --model', `--seed ${o.seed}`, `--max-commands ${o.maxCommands}`];
  if (o.simple) parts.push('--simple');
  if (o.path) parts.push(`--path '${o.path}'`);
  if (o.replayPath) parts.push(`--replay-path '${o.replayPath}'`);
  return parts.join(' ');
}

async function runSequence(cmds: Iterable<Cmd>, model: Model, o: SeedOptions): Promise<RunStats> {
  const started = Date.now();
  const world = await startWorld({ services: o.services, model, ...(o.logFile ? { logFile: o.logFile } : {}) });
  try {
    const ready = await world.settle(60_000);
    if (!ready.ok) throw new ModelFailure('the world did not converge before the first command', ready, world.trace);
    world.note('initial state converged; commands start');
    await fc.asyncModelRun(() => ({ model, real: world }), cmds);
    world.note('commands done; settling');
    const limit = o.settleTimeoutMs;
    const r = await world.settle(limit);
    if (!r.ok) {
      throw new ModelFailure(r.violations.length > 0 ? 'the call center does not hold what SPEC §5 says' : `the pipeline did not go idle within ${limit / 1000} s`, r, world.trace);
    }
    world.note(`settled in ${(r.ms / 1000).toFixed(1)} s; the call center holds ${JSON.stringify(world.sim.state().projects)}`);
    return { commands: model.commands, ops: model.ops, faults: model.faults, settleMs: r.ms, passed: true, durationMs: Date.now() - started, trace: world.trace };
  } finally {
    await world.stop();
  }
}

export async function runModelSeed(o: SeedOptions): Promise<SeedResult> {
  const log = o.log ?? (() => {});
  const started = Date.now();
  let runs = 0;
  let first: RunStats | null = null;
  let shrinkStartedAt = 0;
  let cutShort = false;
  // One or two sink members from the start: with two, the users and the parks partitions are often in different
  // processes, each with its own view of the parks.
  const property = fc.asyncProperty(fc.constantFrom<1 | 2>(1, 2), modelCommands(o), async (members, cmds) => {
    runs++;
    if (runs > 1 && Date.now() - shrinkStartedAt > o.shrinkBudgetMs) {
      // Past the budget: a candidate is counted as passing without running, so shrinking ends at the smallest
      // failure found so far.
      cutShort = true;
      return true;
    }
    const runStarted = Date.now();
    const model = initialModel(members);
    try {
      const stats = await runSequence(cmds, model, o);
      if (runs === 1) {
        first = stats;
        log(`seed ${o.seed}: ${members} sink member${members === 2 ? 's' : ''}, ${stats.commands} commands (${stats.ops} operations, ${stats.faults} faults), settled in ${((stats.settleMs ?? 0) / 1000).toFixed(1)} s; ${(stats.durationMs / 1000).toFixed(0)} s in all`);
      } else log(`  shrink run ${runs - 1}: passes (${((Date.now() - runStarted) / 1000).toFixed(0)} s)`);
      return true;
    } catch (e) {
      const commands = model.commands;
      if (runs === 1) {
        first = {
          commands,
          ops: model.ops,
          faults: model.faults,
          settleMs: e instanceof ModelFailure ? e.settle.ms : null,
          passed: false,
          durationMs: Date.now() - runStarted,
          trace: e instanceof ModelFailure ? e.trace : [],
        };
        log(`seed ${o.seed}: ${members} sink member${members === 2 ? 's' : ''}, ${commands} commands (${model.ops} operations, ${model.faults} faults) FAILED: ${(e as Error).message.split('\n')[0]}; after ${((Date.now() - runStarted) / 1000).toFixed(0)} s`);
        shrinkStartedAt = Date.now();
        if (o.shrinkBudgetMs > 0 && !o.path) log(`  shrinking, for at most ${o.shrinkBudgetMs / 1000} s (each candidate runs on a fresh world)`);
      } else log(`  shrink run ${runs - 1}: still fails with ${commands} commands (${((Date.now() - runStarted) / 1000).toFixed(0)} s)`);
      throw e;
    }
  });
  const details = await fc.check(property, {
    seed: o.seed,
    numRuns: 1,
    ...(o.path ? { path: o.path } : {}),
    endOnFailure: o.path !== undefined || o.shrinkBudgetMs <= 0,
  });
  const result: SeedResult = { seed: o.seed, passed: !details.failed, first, runs, durationMs: Date.now() - started };
  if (details.failed) {
    const text = details.counterexample ? String(details.counterexample[1]) : '(none)';
    const replayPath = /\/\*replayPath="([^"]*)"\*\//.exec(text)?.[1] ?? null;
    const sequence = text.replace(/\s*\/\*replayPath="[^"]*"\*\//, '');
    const error = details.errorInstance;
    result.failure = {
      members: details.counterexample?.[0] ?? 1,
      sequence,
      commands: sequence === '' ? 0 : sequence.split(',').length,
      path: details.counterexamplePath,
      replayPath,
      report: error instanceof Error ? (error instanceof ModelFailure ? error.message : (error.stack ?? error.message)) : String(error),
      shrinks: details.numShrinks,
      shrinkCutShort: cutShort,
      shrinkMs: shrinkStartedAt ? Date.now() - shrinkStartedAt : 0,
    };
  }
  return result;
}

/** A failing seed as a reader needs it: the seed, the (shrunk) sequence, what differed, and how to replay it. */
export function formatFailure(r: SeedResult, o: Pick<SeedOptions, 'maxCommands' | 'simple' | 'shrinkBudgetMs' | 'path'>): string {
  const f = r.failure;
  if (!f) return `seed ${r.seed}: passed`;
  const shrinking = o.path
    ? 'replayed from its path, not shrunk again'
    : o.shrinkBudgetMs <= 0
      ? 'not shrunk: shrinking is off'
      : `shrunk ${f.shrinks} times in ${(f.shrinkMs / 1000).toFixed(0)} s${f.shrinkCutShort ? `, stopped at the ${o.shrinkBudgetMs / 1000} s budget with candidates untried (not minimal)` : ''}`;
  return [
    `seed ${r.seed} FAILED — ${f.members} sink member${f.members === 2 ? 's' : ''} at the start, then the sequence (${shrinking}):`,
    `  ${f.sequence.split(',').join('\n  ') || '(no commands: the initial state)'}`,
    f.report,
    `replay this sequence: ${replayCommand({ seed: r.seed, maxCommands: o.maxCommands, simple: o.simple, path: f.path, replayPath: f.replayPath })}`,
    `replay the seed from the start (and shrink): ${replayCommand({ seed: r.seed, maxCommands: o.maxCommands, simple: o.simple })}`,
  ].join('\n');
}
