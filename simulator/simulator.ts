// A development tool, not production: an in-memory call center speaking SPEC §5 over real HTTP,
// with fault injection (errors, latency, 429 + Retry-After, rejected uids) for tests, demos and benchmarks.
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import { pino } from 'pino';
import type { Logger } from '../connector/log.js';

export interface Faults {
  /** Share of /v1 requests answered 500, 502 or 503 before anything is done. */
  errorRate: number;
  /** Added to every /v1 request before it is handled. */
  latencyMs: number;
  /** Share of /v1 requests answered 429 with `Retry-After: retryAfterS`. */
  rateLimitRate: number;
  retryAfterS: number;
  /** Any call about these uids answers a permanent 422. */
  rejectUids: string[];
  /** Every call about these projects (roles, listings) answers 503: one project's outage. */
  failProjects: string[];
  /** Calls about these uids (profile, roles) or these projects (roles, listings) take slowMs more: a slow call in flight. */
  slowUids: string[];
  slowProjects: string[];
  slowMs: number;
  /** A PUT of these users answers 200 but keeps nothing: their roles calls go on answering 404 (user missing). */
  forgetUids: string[];
}

export interface SimUser {
  login: string;
  name: string;
  phone: string | null;
  email: string | null;
}

export interface SimState {
  users: Record<string, SimUser>;
  /** project → uid → role ids (sorted, unique); only uids holding at least one role. */
  projects: Record<string, Record<string, string[]>>;
}

export interface SimCalls {
  /** /v1 PUTs received, faulted ones included. */
  writes: number;
  /** /v1 GETs received, faulted ones included. */
  reads: number;
  /** `METHOD /route/:param` → requests received. */
  byRoute: Record<string, number>;
  /** Requests answered by an injected error or 429. */
  faulted: number;
  /** Most /v1 requests the simulator held at once since the last reset. */
  maxInFlight: number;
}

export interface Simulator {
  readonly url: string;
  start(port?: number, host?: string): Promise<string>;
  stop(): Promise<void>;
  setFaults(faults: Partial<Faults>): void;
  faults(): Faults;
  state(): SimState;
  rolesOf(projectId: string, uid: string): string[];
  /** A grant made by hand by the call-center team (or drift); [] removes the uid from the project. */
  setRolesByHand(projectId: string, uid: string, roleIds: string[]): void;
  putUserByHand(uid: string, profile: { login: string; name: string; phone?: string | null; email?: string | null }): void;
  calls(): SimCalls;
  resetCalls(): void;
  /** Forgets every user and grant and the call counts; faults stay. */
  reset(): void;
}

export interface SimulatorOptions {
  token: string;
  faults?: Partial<Faults>;
  /** Seeds the fault PRNG so a run is repeatable (default 1). */
  seed?: number;
  log?: Logger;
  /** Called after a role set was stored (benchmarks time commit → applied with it). */
  onRolesSet?: (projectId: string, uid: string, roleIds: string[]) => void;
}

const NO_FAULTS: Faults = { errorRate: 0, latencyMs: 0, rateLimitRate: 0, retryAfterS: 1, rejectUids: [], failProjects: [], slowUids: [], slowProjects: [], slowMs: 0, forgetUids: [] };
const ERROR_STATUSES = [500, 502, 503] as const;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;

interface Project {
  roles: Map<string, string[]>;
  /** uids in order, rebuilt lazily after a change so that paging a big project stays cheap. */
  sorted: string[] | null;
}

const nullableString = { anyOf: [{ type: 'string' }, { type: 'null' }] };
const userBody = {
  type: 'object',
  required: ['login', 'name'],
  properties: { login: { type: 'string' }, name: { type: 'string' }, phone: nullableString, email: nullableString },
};
const rolesBody = {
  type: 'object',
  required: ['role_ids'],
  properties: { role_ids: { type: 'array', items: { type: 'string' } } },
};
const faultsBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    errorRate: { type: 'number', minimum: 0, maximum: 1 },
    latencyMs: { type: 'number', minimum: 0 },
    rateLimitRate: { type: 'number', minimum: 0, maximum: 1 },
    retryAfterS: { type: 'integer', minimum: 0 },
    rejectUids: { type: 'array', items: { type: 'string' } },
    failProjects: { type: 'array', items: { type: 'string' } },
    slowUids: { type: 'array', items: { type: 'string' } },
    slowProjects: { type: 'array', items: { type: 'string' } },
    slowMs: { type: 'number', minimum: 0 },
    forgetUids: { type: 'array', items: { type: 'string' } },
  },
};

export function createSimulator(opts: SimulatorOptions): Simulator {
  const users = new Map<string, SimUser>();
  const projects = new Map<string, Project>();
  let faults: Faults = checkFaults({ ...NO_FAULTS, ...opts.faults });
  let rejected = new Set(faults.rejectUids);
  const random = mulberry32(opts.seed ?? 1);
  const expectedAuth = `Bearer ${opts.token}`;
  let calls = emptyCalls();
  let inFlight = 0;
  let url: string | undefined;
  let app: ReturnType<typeof build> | undefined;

  function setRoles(projectId: string, uid: string, roleIds: string[]): string[] {
    const roles = [...new Set(roleIds)].sort();
    let project = projects.get(projectId);
    if (roles.length === 0) {
      if (project?.roles.delete(uid)) project.sorted = null;
      return roles;
    }
    if (!project) projects.set(projectId, (project = { roles: new Map(), sorted: null }));
    if (!project.roles.has(uid)) project.sorted = null;
    project.roles.set(uid, roles);
    return roles;
  }

  function putUser(uid: string, p: { login: string; name: string; phone?: string | null; email?: string | null }): SimUser {
    // PUT replaces: a field left out is cleared.
    const user = { login: p.login, name: p.name, phone: p.phone ?? null, email: p.email ?? null };
    users.set(uid, user);
    return user;
  }

  function reject(reply: FastifyReply, uid: string) {
    return reply.code(422).send({ code: 'REJECTED', message: `the call center refuses user ${uid}` });
  }

  function build() {
    const server = Fastify({
      loggerInstance: opts.log ?? pino({ enabled: false }),
      // No line per request: the sink benchmark drives thousands a second through here.
      logController: new LogController({ disableRequestLogging: true }),
      // Bodies must be valid as sent: no coercing 123 into "123".
      ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
      forceCloseConnections: true,
    });

    server.setErrorHandler((err: { statusCode?: number; code?: string; message: string; validation?: unknown }, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
      reply.code(status).send({ code: err.validation ? 'BAD_REQUEST' : (err.code ?? 'INTERNAL'), message: err.message });
    });
    server.setNotFoundHandler((req, reply) => {
      reply.code(404).send({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` });
    });

    server.register(async (v1) => {
      // Faults come first, before the token is even looked at, as with a failing proxy in front of the real service.
      v1.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
        const route = `${req.method} ${req.routeOptions.url}`;
        calls.byRoute[route] = (calls.byRoute[route] ?? 0) + 1;
        if (req.method === 'GET') calls.reads++;
        else calls.writes++;
        calls.maxInFlight = Math.max(calls.maxInFlight, ++inFlight);
        reply.raw.once('close', () => inFlight--);

        if (faults.latencyMs > 0) await new Promise((r) => setTimeout(r, faults.latencyMs));
        const params = (req.params ?? {}) as { project_id?: string; uid?: string };
        const slow = (params.uid !== undefined && faults.slowUids.includes(params.uid)) || (params.project_id !== undefined && faults.slowProjects.includes(params.project_id));
        if (slow && faults.slowMs > 0) await new Promise((r) => setTimeout(r, faults.slowMs));
        if (faults.errorRate > 0 && random() < faults.errorRate) {
          calls.faulted++;
          const status = ERROR_STATUSES[Math.floor(random() * ERROR_STATUSES.length)]!;
          return reply.code(status).send({ code: 'SIMULATED_ERROR', message: `simulated ${status}` });
        }
        const project = (req.params as { project_id?: string } | undefined)?.project_id;
        if (project !== undefined && faults.failProjects.includes(project)) {
          calls.faulted++;
          return reply.code(503).send({ code: 'SIMULATED_OUTAGE', message: `simulated outage of project ${project}` });
        }
        if (faults.rateLimitRate > 0 && random() < faults.rateLimitRate) {
          calls.faulted++;
          return reply
            .code(429)
            .header('retry-after', String(faults.retryAfterS))
            .send({ code: 'RATE_LIMITED', message: 'simulated rate limit' });
        }
        if (req.headers.authorization !== expectedAuth) {
          return reply.code(401).send({ code: 'UNAUTHORIZED', message: 'missing or wrong bearer token' });
        }
        return undefined;
      });

      v1.put<{ Params: { uid: string }; Body: { login: string; name: string; phone?: string | null; email?: string | null } }>(
        '/v1/users/:uid',
        { schema: { body: userBody } },
        async (req, reply) => {
          const { uid } = req.params;
          if (rejected.has(uid)) return reject(reply, uid);
          if (faults.forgetUids.includes(uid)) return { uid, ...req.body };
          return { uid, ...putUser(uid, req.body) };
        },
      );

      v1.get<{ Params: { uid: string } }>('/v1/users/:uid', async (req, reply) => {
        const { uid } = req.params;
        if (rejected.has(uid)) return reject(reply, uid);
        const user = users.get(uid);
        if (!user) return reply.code(404).send({ code: 'USER_NOT_FOUND', message: `no user ${uid}` });
        return { uid, ...user };
      });

      v1.put<{ Params: { project_id: string; uid: string }; Body: { role_ids: string[] } }>(
        '/v1/projects/:project_id/users/:uid/roles',
        { schema: { body: rolesBody } },
        async (req, reply) => {
          const { project_id, uid } = req.params;
          if (rejected.has(uid)) return reject(reply, uid);
          if (req.body.role_ids.length > 0 && !users.has(uid)) {
            return reply.code(404).send({ code: 'USER_NOT_FOUND', message: `no user ${uid}; create it first` });
          }
          const roleIds = setRoles(project_id, uid, req.body.role_ids);
          opts.onRolesSet?.(project_id, uid, roleIds);
          return { project_id, uid, role_ids: roleIds };
        },
      );

      v1.get<{ Params: { project_id: string }; Querystring: { limit?: string; cursor?: string } }>(
        '/v1/projects/:project_id/users',
        async (req, reply) => {
          const limitText = req.query.limit;
          const limit = limitText === undefined || limitText === '' ? DEFAULT_LIMIT : Number(limitText);
          if (!Number.isInteger(limit) || limit < 1) {
            return reply.code(400).send({ code: 'BAD_REQUEST', message: 'limit must be a positive integer' });
          }
          let after: string | undefined;
          if (req.query.cursor !== undefined) {
            after = decodeCursor(req.query.cursor);
            if (after === undefined) return reply.code(400).send({ code: 'BAD_CURSOR', message: 'cursor is not one this server gave' });
          }
          const project = projects.get(req.params.project_id);
          if (!project) return { users: [] };
          const sorted = (project.sorted ??= [...project.roles.keys()].sort());
          const from = after === undefined ? 0 : firstAfter(sorted, after);
          const page = sorted.slice(from, from + Math.min(limit, MAX_LIMIT));
          const body: { users: { uid: string; role_ids: string[] }[]; next_cursor?: string } = {
            users: page.map((uid) => ({ uid, role_ids: project.roles.get(uid)! })),
          };
          if (from + page.length < sorted.length) body.next_cursor = encodeCursor(page[page.length - 1]!);
          return body;
        },
      );
    });

    // Control routes for tests and demos in other processes; no token, and never faulted.
    server.get('/_sim/state', async () => snapshot());
    server.get('/_sim/calls', async () => calls);
    server.get('/_sim/faults', async () => faults);
    server.put<{ Body: Partial<Faults> }>('/_sim/faults', { schema: { body: faultsBody } }, async (req) => {
      setFaults(req.body);
      return faults;
    });
    server.post('/_sim/reset', async () => {
      reset();
      return { ok: true };
    });
    return server;
  }

  function snapshot(): SimState {
    return {
      users: Object.fromEntries([...users].map(([uid, u]) => [uid, { ...u }])),
      projects: Object.fromEntries(
        [...projects].map(([id, p]) => [id, Object.fromEntries([...p.roles].map(([uid, roles]) => [uid, [...roles]]))]),
      ),
    };
  }

  function setFaults(f: Partial<Faults>): void {
    faults = checkFaults({ ...faults, ...f });
    rejected = new Set(faults.rejectUids);
  }

  function reset(): void {
    users.clear();
    projects.clear();
    calls = emptyCalls();
  }

  return {
    get url() {
      if (url === undefined) throw new Error('simulator not started');
      return url;
    },
    async start(port = 0, host = '127.0.0.1') {
      if (app) throw new Error('simulator already started');
      app = build();
      const address = await app.listen({ port, host });
      url = address;
      return address;
    },
    async stop() {
      const running = app;
      app = undefined;
      url = undefined;
      await running?.close();
    },
    setFaults,
    faults: () => checkFaults(faults),
    state: snapshot,
    rolesOf: (projectId, uid) => [...(projects.get(projectId)?.roles.get(uid) ?? [])],
    setRolesByHand: (projectId, uid, roleIds) => void setRoles(projectId, uid, roleIds),
    putUserByHand: (uid, profile) => void putUser(uid, profile),
    calls: () => ({ ...calls, byRoute: { ...calls.byRoute } }),
    resetCalls() {
      calls = emptyCalls();
      calls.maxInFlight = inFlight;
    },
    reset,
  };
}

function emptyCalls(): SimCalls {
  return { writes: 0, reads: 0, byRoute: {}, faulted: 0, maxInFlight: 0 };
}

function checkFaults(f: Faults): Faults {
  for (const key of ['errorRate', 'rateLimitRate'] as const) {
    if (!(f[key] >= 0 && f[key] <= 1)) throw new Error(`fault ${key} must be within 0..1, got ${f[key]}`);
  }
  if (!(f.latencyMs >= 0)) throw new Error(`fault latencyMs must be >= 0, got ${f.latencyMs}`);
  if (!(Number.isInteger(f.retryAfterS) && f.retryAfterS >= 0)) throw new Error(`fault retryAfterS must be a whole number >= 0, got ${f.retryAfterS}`);
  if (!(f.slowMs >= 0)) throw new Error(`fault slowMs must be >= 0, got ${f.slowMs}`);
  return { ...f, rejectUids: [...f.rejectUids], failProjects: [...f.failProjects], slowUids: [...f.slowUids], slowProjects: [...f.slowProjects], forgetUids: [...f.forgetUids] };
}

function encodeCursor(lastUid: string): string {
  return Buffer.from(lastUid, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): string | undefined {
  const uid = Buffer.from(cursor, 'base64url').toString('utf8');
  return uid !== '' && encodeCursor(uid) === cursor ? uid : undefined;
}

/** Index of the first uid sorting after `after` (keyset paging: grants added or removed meanwhile shift nothing). */
function firstAfter(sorted: string[], after: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Small, fast, seedable PRNG (public domain); Math.random cannot be seeded. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
