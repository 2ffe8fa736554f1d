// Per-client limit on failed authentications (SPEC.md §4): a client that presents too many missing or unknown tokens in
// a minute is refused 429 RATE_LIMITED for the rest of that minute, whatever token it presents, so tokens cannot be guessed.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
// For the types of app.createRateLimit, which the plugin (registered by api/app.ts) decorates the instance with.
import type {} from '@fastify/rate-limit';
import { FleetSyncError } from '../connector/errors.js';

/** Failed authentications a client may make in a minute before it is locked out for the rest of the minute. */
export const FAILED_AUTH_PER_MINUTE = 10;
const WINDOW_MS = 60_000;
// As many clients as @fastify/rate-limit's in-memory store remembers; beyond, the oldest lockout ends early.
const MAX_LOCKED_CLIENTS = 5_000;

export interface FailedAuthLimit {
  /** Throws RATE_LIMITED while the request's client is locked out; called before its token is looked at. */
  refuseIfLocked(request: FastifyRequest, reply: FastifyReply): void;
  /** Counts a failed authentication of the request's client; throws RATE_LIMITED for the one that goes over the limit. */
  countFailure(request: FastifyRequest, reply: FastifyReply): Promise<void>;
}

/** `app` must have @fastify/rate-limit registered; the failures are counted in its store, per client address. */
export function createFailedAuthLimit(app: FastifyInstance): FailedAuthLimit {
  const count = app.createRateLimit({ keyGenerator: (request) => request.ip, max: FAILED_AUTH_PER_MINUTE, timeWindow: WINDOW_MS });
  // The plugin can count a request but cannot tell whether a client is over its limit without counting one more, and
  // here only failures count. A locked-out client must be refused even with the right token (429 for a wrong guess and
  // 200 for the right one would let the guessing go on), so the clients it locked out are kept here until their
  // window ends: client address → epoch ms. Not extended by refused requests, so a page that retries gets back in.
  const lockedUntil = new Map<string, number>();

  function refuse(reply: FastifyReply, until: number): FleetSyncError {
    const retryAfterS = Math.max(1, Math.ceil((until - Date.now()) / 1000));
    void reply.header('retry-after', retryAfterS);
    return new FleetSyncError('RATE_LIMITED', `too many failed authentications from this client; retry in ${retryAfterS} s`);
  }

  return {
    refuseIfLocked(request, reply) {
      const until = lockedUntil.get(request.ip);
      if (until === undefined) return;
      if (until <= Date.now()) {
        lockedUntil.delete(request.ip);
        return;
      }
      throw refuse(reply, until);
    },

    async countFailure(request, reply) {
      const limit = await count(request);
      if (limit.isAllowed || !limit.isExceeded) return;
      const locked = lockedUntil.get(request.ip);
      // Failures in flight together can all go over the limit; the first to get here locks the client out and warns,
      // once per lockout (the refused requests that follow are not counted and do not warn again).
      if (locked !== undefined && locked > Date.now()) throw refuse(reply, locked);
      const until = Date.now() + limit.ttl;
      lockedUntil.delete(request.ip);
      if (lockedUntil.size >= MAX_LOCKED_CLIENTS) lockedUntil.delete(lockedUntil.keys().next().value!);
      lockedUntil.set(request.ip, until);
      request.log.warn(
        { client: request.ip, failedAuthentications: limit.max, windowS: WINDOW_MS / 1000, lockedForS: Math.ceil(limit.ttl / 1000) },
        'client locked out after too many failed authentications',
      );
      throw refuse(reply, until);
    },
  };
}
