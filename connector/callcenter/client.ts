// Typed HTTP client of the call-center API (SPEC §5): keep-alive pool, global concurrency limit,
// per-project rate limit, and retries of transient failures inside the client; permanent ones surface as FleetSyncError.
import { setMaxListeners } from 'node:events';
import { Pool, errors as undiciErrors } from 'undici';
import type { Config } from '../config.js';
import { FleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { sleepOrThrow } from '../time.js';

export interface CallCenterProfile {
  login: string;
  name: string;
  phone?: string | null;
  email?: string | null;
}
export interface ProjectUserRoles {
  uid: string;
  role_ids: string[];
}
export interface CallOptions {
  signal?: AbortSignal;
  /** Fewer attempts than the client's own for this call (a caller holding locks parks the work instead of waiting). */
  maxAttempts?: number;
}

export interface CallCenterClient {
  putUser(uid: string, profile: CallCenterProfile, opts?: CallOptions): Promise<void>;
  /** null when the call center does not know the uid. */
  getUser(uid: string, opts?: CallOptions): Promise<(CallCenterProfile & { uid: string }) | null>;
  /** Replaces the user's roles in the project; [] revokes all. CALL_CENTER_USER_MISSING: create the user, then retry. */
  setRoles(projectId: string, uid: string, roleIds: string[], opts?: CallOptions): Promise<void>;
  listProjectUsers(
    projectId: string,
    page: { limit: number; cursor?: string },
    opts?: CallOptions,
  ): Promise<{ users: ProjectUserRoles[]; nextCursor?: string }>;
  /** Reachability for readiness: one attempt, any HTTP answer below 500 counts. */
  ping(opts?: CallOptions): Promise<void>;
  /** Stops retries and waiting calls (they reject with CALL_CENTER_TRANSIENT) and closes the connections; idempotent. */
  close(): Promise<void>;
}

export interface CallCenterClientDeps {
  baseUrl: string;
  token: string;
  /** Bounds connecting, waiting for the answer's headers, and each pause in its body; enforced on undici's ~0.5 s clock. */
  timeoutMs: number;
  /** Requests in flight at most (and pooled keep-alive connections); more callers wait in arrival order. */
  concurrency: number;
  /** Requests a second per project for the project-scoped calls (setRoles, listProjectUsers). */
  ratePerProjectPerS: number;
  /** Backoff: a random delay up to min(retryMaxMs, retryBaseMs · 2^(attempt-1)), at least any Retry-After. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** Attempts per call including the first; default unlimited (an outage of any length is waited out). */
  maxAttempts?: number;
  log: Logger;
  metrics?: Metrics;
}

export function callCenterClientDepsFromConfig(config: Config, log: Logger, metrics?: Metrics): CallCenterClientDeps {
  return {
    baseUrl: config.CALL_CENTER_URL,
    token: config.CALL_CENTER_TOKEN,
    timeoutMs: config.CALL_CENTER_TIMEOUT_MS,
    concurrency: config.CALL_CENTER_CONCURRENCY,
    ratePerProjectPerS: config.CALL_CENTER_RATE_PER_PROJECT_PER_S,
    retryBaseMs: config.CALL_CENTER_RETRY_BASE_MS,
    retryMaxMs: config.CALL_CENTER_RETRY_MAX_MS,
    maxAttempts: config.CALL_CENTER_MAX_ATTEMPTS,
    log,
    ...(metrics ? { metrics } : {}),
  };
}

const BODY_IN_DETAILS_CHARS = 500;

type Method = 'GET' | 'PUT';
interface Answer {
  status: number;
  text: string;
  retryAfter?: string;
  /** Set by request(): attempts it took. */
  attempts?: number;
}
interface Call {
  method: Method;
  path: string;
  /** Serialized once per call, not per attempt. */
  body?: string;
  /** Project-scoped calls share that project's rate budget. */
  projectId?: string;
  /** Statuses the caller interprets itself (e.g. 404 → null), returned instead of thrown. */
  accept?: readonly number[];
  /** A 404 means the user is missing (roles calls), not a rejection. */
  userMissingOn404?: boolean;
  signal: AbortSignal | undefined;
  maxAttempts?: number | undefined;
}

export function createCallCenterClient(deps: CallCenterClientDeps): CallCenterClient {
  const log = deps.log.child({ module: 'callcenter' });
  const base = new URL(deps.baseUrl);
  const prefix = base.pathname.replace(/\/+$/, '');
  // undici's own timers bound each attempt (connect, headers, each pause in the body): cheaper than a timer and an
  // AbortController per request, which matters at thousands of applies a second.
  const pool = new Pool(base.origin, {
    connections: deps.concurrency,
    keepAliveTimeout: 30_000,
    connectTimeout: deps.timeoutMs,
    headersTimeout: deps.timeoutMs,
    bodyTimeout: deps.timeoutMs,
  });
  const headers = { authorization: `Bearer ${deps.token}`, 'content-type': 'application/json', accept: 'application/json' };
  const maxAttempts = deps.maxAttempts ?? Infinity;
  const slots = createConcurrencyLimit(deps.concurrency);
  const budget = createProjectRateLimit(deps.ratePerProjectPerS);
  const closing = new AbortController();
  // Every call waiting out a backoff or a queue listens for close(): hundreds at once is normal during an outage.
  setMaxListeners(0, closing.signal);
  let closed: Promise<void> | undefined;

  async function send(call: Call): Promise<Answer> {
    const res = await pool.request({ method: call.method, path: prefix + call.path, headers, body: call.body ?? null, signal: call.signal });
    const text = await res.body.text();
    const retryAfter = res.headers['retry-after'];
    return retryAfter === undefined ? { status: res.statusCode, text } : { status: res.statusCode, text, retryAfter: String(retryAfter) };
  }

  async function request(call: Call): Promise<Answer> {
    const { method, path } = call;
    const signals = [closing.signal, call.signal];
    for (let attempt = 1; ; attempt++) {
      const stop = abortedReason(signals);
      if (stop) throw stop.reason;
      if (call.projectId !== undefined) await budget.take(call.projectId, signals);
      await slots.acquire(signals);
      let answer: Answer | undefined;
      let failure: { reason: string; err: string } | undefined;
      try {
        answer = await send(call);
      } catch (e) {
        const stop = abortedReason(signals);
        if (stop) throw stop.reason;
        if (e instanceof undiciErrors.InvalidArgumentError) throw e; // a bug here, not the network: retrying cannot help
        failure = { reason: isTimeout(e) ? 'timeout' : 'connection', err: redact((e as Error).message) };
      } finally {
        slots.release();
      }

      const status = answer?.status;
      if (answer && status !== undefined && (status < 400 || call.accept?.includes(status))) return { ...answer, attempts: attempt };
      const details = { status, attempts: attempt, method, path, body: answer ? redact(answer.text.slice(0, BODY_IN_DETAILS_CHARS)) : undefined };
      if (status === 404 && call.userMissingOn404) {
        throw new FleetSyncError('CALL_CENTER_USER_MISSING', `call center does not know the user of ${method} ${path}`, { details });
      }
      if (status !== undefined && status !== 429 && status < 500) {
        throw new FleetSyncError('CALL_CENTER_REJECTED', `call center rejected ${method} ${path} with ${status}`, { details });
      }
      const reason = failure?.reason ?? (status === 429 ? 'rate_limited' : 'server_error');
      if (attempt >= Math.min(maxAttempts, call.maxAttempts ?? Infinity)) {
        throw new FleetSyncError('CALL_CENTER_TRANSIENT', `call center failed ${method} ${path} ${attempt} times (${status ?? reason})`, {
          details: { ...details, reason, err: failure?.err },
        });
      }
      const exp = Math.min(deps.retryMaxMs, deps.retryBaseMs * 2 ** Math.min(attempt - 1, 30));
      const retryAfterMs = status === 429 || status === 503 ? parseRetryAfterMs(answer?.retryAfter) : undefined;
      // Retry-After is the server's lower bound; jitter on top keeps many waiting callers from returning at one instant.
      const delayMs = Math.round(Math.max(retryAfterMs ?? 0, Math.random() * exp));
      deps.metrics?.callCenterRetries.inc({ reason });
      const fields = { method, path, status, reason, attempt, delayMs, err: failure?.err };
      if (attempt >= 3) log.warn(fields, 'call-center request failed; retrying');
      else log.debug(fields, 'call-center request failed; retrying');
      await sleep(delayMs, signals);
    }
  }

  function json<T>(answer: Answer, method: Method, path: string, check: (v: unknown) => v is T): T {
    let value: unknown;
    try {
      value = JSON.parse(answer.text);
    } catch {
      value = undefined;
    }
    if (check(value)) return value;
    throw new FleetSyncError('CALL_CENTER_REJECTED', `call center answered ${method} ${path} with an unexpected body`, {
      details: { status: answer.status, attempts: answer.attempts ?? 1, method, path, body: redact(answer.text.slice(0, BODY_IN_DETAILS_CHARS)) },
    });
  }

  function redact(text: string): string {
    return text.split(deps.token).join('[redacted]');
  }

  return {
    async putUser(uid, profile, opts) {
      const body = JSON.stringify({ login: profile.login, name: profile.name, phone: profile.phone ?? null, email: profile.email ?? null });
      await request({ method: 'PUT', path: `/v1/users/${encodeURIComponent(uid)}`, body, signal: opts?.signal, maxAttempts: opts?.maxAttempts });
    },

    async getUser(uid, opts) {
      const path = `/v1/users/${encodeURIComponent(uid)}`;
      const answer = await request({ method: 'GET', path, accept: [404], signal: opts?.signal });
      if (answer.status === 404) return null;
      const user = json(answer, 'GET', path, isUser);
      return { uid: user.uid ?? uid, login: user.login, name: user.name, phone: user.phone ?? null, email: user.email ?? null };
    },

    async setRoles(projectId, uid, roleIds, opts) {
      const path = `/v1/projects/${encodeURIComponent(projectId)}/users/${encodeURIComponent(uid)}/roles`;
      const body = JSON.stringify({ role_ids: roleIds });
      await request({ method: 'PUT', path, body, projectId, userMissingOn404: true, signal: opts?.signal, maxAttempts: opts?.maxAttempts });
    },

    async listProjectUsers(projectId, page, opts) {
      const query = new URLSearchParams({ limit: String(page.limit) });
      if (page.cursor !== undefined) query.set('cursor', page.cursor);
      const path = `/v1/projects/${encodeURIComponent(projectId)}/users?${query}`;
      const answer = await request({ method: 'GET', path, projectId, signal: opts?.signal });
      const { users, next_cursor } = json(answer, 'GET', path, isUserPage);
      return next_cursor ? { users, nextCursor: next_cursor } : { users };
    },

    async ping(opts) {
      const call: Call = { method: 'GET', path: '/', signal: opts?.signal };
      let status: number | undefined;
      let err: string | undefined;
      try {
        status = (await send(call)).status;
      } catch (e) {
        const stop = abortedReason([closing.signal, call.signal]);
        if (stop) throw stop.reason;
        err = redact((e as Error).message);
      }
      if (status !== undefined && status < 500) return;
      throw new FleetSyncError('CALL_CENTER_TRANSIENT', `call center unreachable (${status ?? err})`, {
        details: { status, attempts: 1, method: 'GET', path: '/', err },
      });
    },

    close() {
      closed ??= (async () => {
        const reason = new FleetSyncError('CALL_CENTER_TRANSIENT', 'call-center client closed');
        closing.abort(reason);
        await pool.destroy(reason);
      })();
      return closed;
    },
  };
}

function isTimeout(e: unknown): boolean {
  return e instanceof undiciErrors.HeadersTimeoutError || e instanceof undiciErrors.BodyTimeoutError || e instanceof undiciErrors.ConnectTimeoutError;
}

/** Seconds or an HTTP date (RFC 9110 §10.2.3); undefined when absent or unreadable. */
export function parseRetryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function isUser(v: unknown): v is CallCenterProfile & { uid?: string } {
  const u = v as Record<string, unknown> | null;
  return typeof u === 'object' && u !== null && typeof u.login === 'string' && typeof u.name === 'string';
}

function isUserPage(v: unknown): v is { users: ProjectUserRoles[]; next_cursor?: string | null } {
  const p = v as Record<string, unknown> | null;
  if (typeof p !== 'object' || p === null || !Array.isArray(p.users)) return false;
  if (p.next_cursor !== undefined && p.next_cursor !== null && typeof p.next_cursor !== 'string') return false;
  return p.users.every(
    (u: { uid?: unknown; role_ids?: unknown }) =>
      typeof u?.uid === 'string' && Array.isArray(u.role_ids) && u.role_ids.every((r) => typeof r === 'string'),
  );
}

// A signal (a stage's stop, a batch's) is listened to by every call waiting for a slot: hundreds at once. Node's
// EventTarget walks all of a signal's listeners on each add (it looks for duplicates), so each add would cost as
// much as the calls already waiting; instead a signal gets one listener here while anyone waits on it, which calls
// the hooks of a set (constant cost to add and remove), and is removed with the last hook.
const hooksOf = new WeakMap<AbortSignal, { hooks: Set<(reason: unknown) => void>; fire: () => void }>();

function hookAbort(signal: AbortSignal, fn: (reason: unknown) => void): () => void {
  let entry = hooksOf.get(signal);
  if (!entry) {
    const hooks = new Set<(reason: unknown) => void>();
    const fire = () => {
      hooksOf.delete(signal);
      for (const hook of [...hooks]) hook(signal.reason);
    };
    signal.addEventListener('abort', fire, { once: true });
    entry = { hooks, fire };
    hooksOf.set(signal, entry);
  }
  const { hooks, fire } = entry;
  hooks.add(fn);
  return () => {
    hooks.delete(fn);
    // The last hook gone, so is the listener: a signal that outlives its calls holds nothing of theirs.
    if (hooks.size === 0 && hooksOf.get(signal)?.hooks === hooks) {
      signal.removeEventListener('abort', fire);
      hooksOf.delete(signal);
    }
  };
}

/** Calls `fn` once when any of `signals` aborts, with that signal's reason; returns the unhook function. */
function onAbort(signals: readonly (AbortSignal | undefined)[], fn: (reason: unknown) => void): () => void {
  const unhooks: (() => void)[] = [];
  let fired = false;
  for (const s of signals) {
    if (!s) continue;
    unhooks.push(
      hookAbort(s, (reason) => {
        if (fired) return;
        fired = true;
        fn(reason);
      }),
    );
  }
  return () => {
    for (const unhook of unhooks) unhook();
  };
}

function abortedReason(signals: readonly (AbortSignal | undefined)[]): { reason: unknown } | undefined {
  for (const s of signals) if (s?.aborted) return { reason: s.reason };
  return undefined;
}

/** Waits `ms`; rejects with the reason of the first of `signals` to abort (a call given up must not go on). */
function sleep(ms: number, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
  return sleepOrThrow(ms, AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined)));
}

/** At most `max` requests in flight; the rest wait first come, first served. */
function createConcurrencyLimit(max: number) {
  let active = 0;
  const waiting: { resolve: () => void; unhook: () => void }[] = [];
  return {
    acquire(signals: readonly (AbortSignal | undefined)[]): Promise<void> {
      const stop = abortedReason(signals);
      if (stop) return Promise.reject(stop.reason);
      if (active < max) {
        active++;
        return Promise.resolve();
      }
      return new Promise((resolve, reject) => {
        const waiter = {
          resolve,
          unhook: onAbort(signals, (reason) => {
            waiter.unhook();
            waiting.splice(waiting.indexOf(waiter), 1);
            reject(reason);
          }),
        };
        waiting.push(waiter);
      });
    },
    release(): void {
      const next = waiting.shift();
      if (!next) {
        active--;
        return;
      }
      // The slot passes straight to the next waiter, so `active` stays the same.
      next.unhook();
      next.resolve();
    },
  };
}

/**
 * A token bucket per project holding one second's worth of requests. Tokens may go negative: each caller
 * reserves its token at once and sleeps until the bucket has refilled past it, which keeps arrival order.
 */
function createProjectRateLimit(ratePerS: number) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return {
    async take(projectId: string, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
      const now = performance.now();
      const bucket = buckets.get(projectId) ?? { tokens: ratePerS, at: now };
      bucket.tokens = Math.min(ratePerS, bucket.tokens + ((now - bucket.at) * ratePerS) / 1000) - 1;
      bucket.at = now;
      buckets.set(projectId, bucket);
      if (bucket.tokens >= 0) return;
      try {
        await sleep((-bucket.tokens * 1000) / ratePerS, signals);
      } catch (e) {
        bucket.tokens += 1; // an abandoned reservation goes back to the others
        throw e;
      }
    },
  };
}
