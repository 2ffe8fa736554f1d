// Builds the api's Fastify instance from one dependencies object: routes, auth, rate limit, errors, metrics, OpenAPI,
// and the operators' status page at /.
// It does not listen; api/main.ts does, and tests inject requests.
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Config } from '../connector/config.js';
import { FleetSyncError } from '../connector/errors.js';
import type { Logger } from '../connector/log.js';
import type { Metrics } from '../connector/metrics.js';
import { createAuthHook } from './auth.js';
import { errorHandler } from './errors.js';
import { createFailedAuthLimit } from './failed-auth.js';
import { requestForLog } from './request-log.js';
import { auditRoutes } from './routes/audit.js';
import { healthRoutes, type ReadinessCheck } from './routes/health.js';
import { parksRoutes, type DryRunner } from './routes/parks.js';
import { statusPageRoutes } from './routes/status-page.js';
import { statusRoutes } from './routes/status.js';
import { usersRoutes } from './routes/users.js';
import { whyRoutes } from './routes/why.js';
import { auditEntrySchema, errorSchema, syncRecordSchema, userSchema } from './schemas.js';

export interface ApiDeps {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  metrics: Metrics;
  /** Extra readiness checks by name (kafka, callCenter); the database check (SELECT 1 on the pool) is always added. */
  readiness: Record<string, ReadinessCheck>;
  /** Deadline of each readiness check; default 2000 ms. */
  readinessTimeoutMs?: number;
  /** The toggles' dry runs (a sweep that changes nothing); without it `dry_run: true` answers 503 NOT_READY. */
  dryRun?: DryRunner;
}

export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const { config, pool, metrics } = deps;
  // Typed as Fastify's logger so the instance has Fastify's default type (pino's Logger is one). Fastify lets the
  // instance's own `req` serializer win over its default, which would log GET /?token= with the operator's token.
  const logger: FastifyBaseLogger = deps.log.child({ module: 'api' }, { serializers: { req: requestForLog } });
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.API_BODY_LIMIT_BYTES,
    // An unknown field is an error rather than silently dropped; JSON bodies are typed, so nothing is coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true } },
    // Behind a load balancer the request id comes from it; otherwise Fastify makes one.
    requestIdHeader: 'x-request-id',
  });

  // Only JSON bodies: without this Fastify would parse text/plain into a string and answer 400 instead of 415.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request) => {
    throw new FleetSyncError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
  });

  // A response finished while closing tells the client to drop the connection; otherwise an idle keep-alive
  // socket would hold close() until keepAliveTimeout.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (closing) void reply.header('connection', 'close');
  });

  app.addHook('onResponse', async (request, reply) => {
    // routeOptions.url is the route pattern, so unmatched paths do not each make a new label value.
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.httpDurationSeconds.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  for (const schema of [errorSchema, syncRecordSchema, userSchema, auditEntrySchema]) app.addSchema(schema);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'fleet-sync api', version: '1', description: 'Park call-center sync toggles, users list, sync status, audit trail (SPEC.md §4).' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token from API_TOKENS' } } },
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });

  const readiness: Record<string, ReadinessCheck> = {
    database: async () => {
      await pool.query('SELECT 1');
    },
    ...deps.readiness,
  };
  await app.register(healthRoutes, { readiness, registry: metrics.registry, checkTimeoutMs: deps.readinessTimeoutMs ?? 2_000 });
  // No token for the page itself (like /healthz): it holds no data, and fetches /v1 with the operator's token.
  await app.register(statusPageRoutes);

  await app.register(async (v1) => {
    // Its hooks are route hooks, which Fastify runs after the instance's auth hook below: it counts per token
    // (request.tokenId). Failed authentications never get that far; the auth hook counts those per client.
    await v1.register(rateLimit, {
      max: config.API_RATE_LIMIT_PER_MINUTE,
      timeWindow: 60_000,
      keyGenerator: (request) => request.tokenId ?? request.ip,
      errorResponseBuilder: (_request, context) =>
        new FleetSyncError('RATE_LIMITED', `more than ${context.max} requests a minute for this token; retry in ${context.after}`),
    });
    v1.addHook('onRequest', createAuthHook(config.API_TOKENS, createFailedAuthLimit(v1)));
    await v1.register(parksRoutes, { pool, dryRun: deps.dryRun });
    await v1.register(usersRoutes, { pool });
    await v1.register(statusRoutes, { pool, slot: config.CDC_SLOT });
    await v1.register(auditRoutes, { pool });
    await v1.register(whyRoutes, { pool });
  });

  return app;
}
