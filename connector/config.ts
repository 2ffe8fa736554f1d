// The one configuration schema: environment variables validated at start; a bad one is named in the error.
import { z } from 'zod';
import { FleetSyncError } from './errors.js';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

const brokers = z
  .string()
  .min(1)
  .transform((s) => s.split(',').map((b) => b.trim()).filter(Boolean))
  .refine((list) => list.length > 0 && list.every((b) => /^[^\s:]+:\d{1,5}$/.test(b)), {
    message: 'expected comma-separated host:port pairs, e.g. 127.0.0.1:9092',
  });

const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'expected a lower-case SQL identifier ([a-z_][a-z0-9_]*)');

export type Scope = 'sync:write' | 'users:read';
const SCOPES: readonly Scope[] = ['sync:write', 'users:read'];

/** `token=scope,scope;token2=scope` → Map(token → scopes). */
export function parseApiTokens(text: string): Map<string, Set<Scope>> {
  const tokens = new Map<string, Set<Scope>>();
  for (const entry of text.split(';').map((e) => e.trim()).filter(Boolean)) {
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new Error(`entry ${tokens.size + 1} has no "token=scope"`);
    const token = entry.slice(0, eq).trim();
    const scopes = entry.slice(eq + 1).split(',').map((s) => s.trim()).filter(Boolean);
    if (scopes.length === 0) throw new Error(`entry ${tokens.size + 1} has no scope`);
    for (const s of scopes) {
      if (!SCOPES.includes(s as Scope)) throw new Error(`entry ${tokens.size + 1} has unknown scope "${s}" (known: ${SCOPES.join(', ')})`);
    }
    tokens.set(token, new Set(scopes as Scope[]));
  }
  return tokens;
}

const envSchema = z.object({
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL'),
  KAFKA_BROKERS: brokers,
  KAFKA_CLIENT_ID: z.string().min(1).default('fleet-sync'),
  TOPIC_PREFIX: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'expected letters, digits, ".", "_" or "-"').default('fleet'),
  TOPIC_PARTITIONS: positiveInt.default(6),
  TOPIC_REPLICATION_FACTOR: z.coerce.number().int().min(-1).default(-1),
  TOPIC_CLEANUP_POLICY: z.enum(['compact,delete', 'compact', 'delete']).default('compact,delete'),
  CDC_SLOT: identifier.default('fleet_sync'),
  CDC_PUBLICATION: identifier.default('fleet_sync'),
  CDC_HEARTBEAT_INTERVAL_MS: positiveInt.default(10_000),
  // kafkajs groups a request's records per partition by copying the list for each record (quadratic): past a few
  // thousand events a batch costs more CPU per event than the extra round trips it saves.
  CDC_MAX_BATCH_EVENTS: positiveInt.default(2_000),
  // Ten batches of lookahead: more buys no throughput and costs memory (peak RSS through a 1M burst).
  CDC_MAX_PENDING_EVENTS: positiveInt.default(20_000),
  CDC_LINGER_MS: z.coerce.number().int().min(0).default(5),
  CDC_STANDBY_POLL_MS: positiveInt.default(2_000),
  // Kafka transactions: a crash and restart of the source publishes no event twice (the broker must support them).
  CDC_EXACTLY_ONCE: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  CALL_CENTER_URL: z.url().default('http://127.0.0.1:8090'),
  CALL_CENTER_TOKEN: z.string().min(1).default('dev-call-center-token'),
  CALL_CENTER_TIMEOUT_MS: positiveInt.default(5_000),
  CALL_CENTER_CONCURRENCY: positiveInt.default(32),
  // The ceiling per project agreed with the call-center team; a backfill of a large park runs at it.
  CALL_CENTER_RATE_PER_PROJECT_PER_S: positiveInt.default(10_000),
  CALL_CENTER_RETRY_BASE_MS: positiveInt.default(100),
  CALL_CENTER_RETRY_MAX_MS: positiveInt.default(30_000),
  // Attempts of one call inside the sink before its uid is parked and retried apart (call_center_retries): a
  // failing project must not hold the events of the others.
  CALL_CENTER_MAX_ATTEMPTS: positiveInt.default(3),
  // The longest wait between two retries of a parked uid: how soon a project that came back is caught up.
  SINK_RETRY_MAX_DELAY_MS: positiveInt.default(5_000),
  SINK_GROUP_ID: z.string().min(1).default('fleet-sync-sink'),
  SINK_MAX_IN_FLIGHT_USERS: positiveInt.default(64),
  SINK_SESSION_TIMEOUT_MS: z.coerce.number().int().min(6_000).default(30_000),
  API_HOST: z.string().min(1).default('0.0.0.0'),
  API_PORT: port.default(8080),
  API_TOKENS: z
    .string()
    .default('')
    .transform((text, ctx) => {
      try {
        return parseApiTokens(text);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }),
  API_BODY_LIMIT_BYTES: positiveInt.default(64 * 1024),
  API_RATE_LIMIT_PER_MINUTE: positiveInt.default(60_000),
  RECONCILE_INTERVAL_S: positiveInt.default(300),
  RECONCILE_PAGE_SIZE: positiveInt.default(500),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof envSchema>;

/** Validates the environment; throws CONFIG_INVALID naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? '?');
    const shown = env[name] === undefined ? 'is missing' : `is invalid: ${issue.message}`;
    return `${name} ${shown}`;
  });
  throw new FleetSyncError('CONFIG_INVALID', `configuration: ${problems.join('; ')}`);
}
