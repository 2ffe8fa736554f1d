// Bearer-token authentication and per-route scopes for /v1, tokens from config.API_TOKENS.
// Presented tokens are hashed and compared with every configured hash in constant time, so timing reveals nothing;
// failed authentications are limited per client (api/failed-auth.ts), so tokens cannot be guessed either.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiToken, Scope } from '../connector/config.js';
import { FleetSyncError } from '../connector/errors.js';
import type { FailedAuthLimit } from './failed-auth.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a /v1 route needs; the auth hook reads it. */
    scope?: Scope;
  }
  interface FastifyRequest {
    /** sha256 of the caller's token (never the token itself): the rate limit's key. */
    tokenId?: string;
    /** The caller's token's name (API_TOKENS): what the audit trail records of a toggle. */
    tokenName?: string;
  }
}

const sha256 = (text: string) => createHash('sha256').update(text).digest();

export function createAuthHook(tokens: Map<string, ApiToken>, failures: FailedAuthLimit) {
  const known = [...tokens].map(([token, { name, scopes }]) => ({ hash: sha256(token), name, scopes }));

  /** The scopes of the token in `Authorization: Bearer <token>`, or undefined when it is missing or unknown. */
  function scopesOf(header: string | undefined): { scopes: Set<Scope>; name: string; id: string } | undefined {
    const match = header === undefined ? null : /^Bearer +(\S+) *$/i.exec(header);
    if (!match) return undefined;
    const presented = sha256(match[1]!);
    let found: (typeof known)[number] | undefined;
    // No early exit: every configured token is compared whatever matches.
    for (const k of known) if (timingSafeEqual(k.hash, presented) && !found) found = k;
    return found && { scopes: found.scopes, name: found.name, id: presented.toString('hex') };
  }

  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    failures.refuseIfLocked(request, reply);
    const caller = scopesOf(request.headers.authorization);
    if (!caller) {
      await failures.countFailure(request, reply);
      throw new FleetSyncError('UNAUTHORIZED', 'missing or unknown bearer token (Authorization: Bearer <token>)');
    }
    request.tokenId = caller.id;
    request.tokenName = caller.name;
    const needed = request.routeOptions.config.scope;
    if (needed && !caller.scopes.has(needed)) throw new FleetSyncError('FORBIDDEN', `this token lacks the scope ${needed}`);
  };
}
