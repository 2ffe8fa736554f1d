// GET /healthz, /readyz, /metrics and /docs: no auth, no rate limit.
import type { FastifyPluginAsync } from 'fastify';
import type { Registry } from 'prom-client';

export type ReadinessCheck = () => Promise<void>;

export interface HealthOptions {
  readiness: Record<string, ReadinessCheck>;
  registry: Registry;
  checkTimeoutMs: number;
}

const checksSchema = {
  type: 'object',
  additionalProperties: { type: 'object', additionalProperties: false, required: ['ok'], properties: { ok: { type: 'boolean' }, error: { type: 'string' } } },
} as const;

/** Runs one check with a deadline; a check that hangs counts as failed. */
async function runCheck(check: ReadinessCheck, timeoutMs: number): Promise<{ ok: boolean; error?: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([check(), timeout]);
    return { ok: true };
  } catch (e) {
    return { ok: false, error: (e as Error)?.message ?? String(e) };
  } finally {
    clearTimeout(timer);
  }
}

export const healthRoutes: FastifyPluginAsync<HealthOptions> = async (app, { readiness, registry, checkTimeoutMs }) => {
  app.get(
    '/healthz',
    { schema: { summary: 'Liveness: 200 while the process runs', tags: ['ops'], response: { 200: { type: 'object', additionalProperties: false, required: ['status'], properties: { status: { type: 'string' } } } } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness: the database, Kafka and the call center are reachable',
        tags: ['ops'],
        response: {
          200: { type: 'object', additionalProperties: false, required: ['status', 'checks'], properties: { status: { type: 'string' }, checks: checksSchema } },
          503: {
            type: 'object',
            additionalProperties: false,
            required: ['code', 'message', 'checks'],
            properties: { code: { type: 'string' }, message: { type: 'string' }, checks: checksSchema },
          },
        },
      },
    },
    async (_request, reply) => {
      const names = Object.keys(readiness);
      const results = await Promise.all(names.map((name) => runCheck(readiness[name]!, checkTimeoutMs)));
      const checks = Object.fromEntries(names.map((name, i) => [name, results[i]!]));
      const failing = names.filter((_, i) => !results[i]!.ok);
      if (failing.length === 0) return { status: 'ready', checks };
      return reply.code(503).send({ code: 'NOT_READY', message: `not ready: ${failing.join(', ')} unreachable`, checks });
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['ops'] } }, async (_request, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });

  app.get('/docs', { schema: { summary: 'This OpenAPI document', tags: ['ops'] } }, async () => app.swagger());
};
