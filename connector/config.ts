// The one configuration schema: environment variables validated at start; a bad one is named in the error.
import { createHash } from 'node:crypto';
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

export type Scope = 'sync:write' | 'users:read' | 'audit:read';
const SCOPES: readonly Scope[] = ['sync:write', 'users:read', 'audit:read'];

/** A configured api token: its scopes, and the name the audit trail and logs know it by (never the token). */
export interface ApiToken {
  name: string;
  scopes: Set<Scope>;
}

const TOKEN_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * `[name:]token=scope,scope;...`. A token without a name is known by `token-` and the first 8 hex digits of its
 * sha256, which identifies it to whoever holds it and reveals nothing of it.
 */
export function parseApiTokens(text: string): Map<string, ApiToken> {
  const tokens = new Map<string, ApiToken>();
  const names = new Set<string>();
  for (const entry of text.split(';').map((e) => e.trim()).filter(Boolean)) {
    const n = tokens.size + 1;
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new Error(`entry ${n} has no "token=scope"`);
    const head = entry.slice(0, eq).trim();
    const colon = head.indexOf(':');
    const token = colon < 0 ? head : head.slice(colon + 1);
    const name = colon < 0 ? `token-${createHash('sha256').update(token).digest('hex').slice(0, 8)}` : head.slice(0, colon);
    if (!TOKEN_NAME.test(name)) throw new Error(`entry ${n} has a bad name "${name}" (letters, digits, ".", "_", "-"; at most 64)`);
    if (token === '') throw new Error(`entry ${n} has an empty token`);
    if (names.has(name)) throw new Error(`entry ${n} repeats the name "${name}"`);
    if (tokens.has(token)) throw new Error(`entry ${n} repeats a token of an earlier entry`);
    const scopes = entry.slice(eq + 1).split(',').map((s) => s.trim()).filter(Boolean);
    if (scopes.length === 0) throw new Error(`entry ${n} has no scope`);
    for (const s of scopes) {
      if (!SCOPES.includes(s as Scope)) throw new Error(`entry ${n} has unknown scope "${s}" (known: ${SCOPES.join(', ')})`);
    }
    names.add(name);
    tokens.set(token, { name, scopes: new Set(scopes as Scope[]) });
  }
  return tokens;
}

export const configSchema = z.object({
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL').describe("the dispatcher's PostgreSQL (`postgres://user:password@host:port/db`); `wal_level=logical`, a role allowed to replicate"),
  KAFKA_BROKERS: brokers.describe('Kafka bootstrap brokers, comma-separated `host:port`'),
  KAFKA_CLIENT_ID: z.string().min(1).default('fleet-sync').describe('client id the Kafka clients present to the brokers'),
  TOPIC_PREFIX: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'expected letters, digits, ".", "_" or "-"').default('fleet').describe('topics are `<prefix>.public.<table>`; also names the dead-letter topic `<prefix>.callcenter.dlq`'),
  TOPIC_PARTITIONS: positiveInt.default(6).describe('partitions of the topics the source creates'),
  TOPIC_REPLICATION_FACTOR: z.coerce.number().int().min(-1).default(-1).describe("replication factor of the topics the source creates; -1: the broker's default"),
  TOPIC_CLEANUP_POLICY: z.enum(['compact,delete', 'compact', 'delete']).default('compact,delete').describe('`cleanup.policy` of the topics the source creates'),
  CDC_SLOT: identifier.default('fleet_sync').describe('logical replication slot of the source (created when missing)'),
  CDC_PUBLICATION: identifier.default('fleet_sync').describe('publication of the captured tables (created when missing)'),
  CDC_HEARTBEAT_INTERVAL_MS: positiveInt.default(10_000).describe('while the captured tables are idle, a heartbeat travels the stream this often (ms) so the slot still advances'),
  // Each transaction costs the broker five requests and a marker per partition: bigger batches drain a backlog
  // faster (bench:source, 8,000 against 2,000: 1.3× the changes/s) for ~15 MB more peak RSS. Users rows of ~300
  // bytes meet CDC_MAX_BATCH_BYTES first, near 3,000 events; a 4 MB cap measured no faster.
  CDC_MAX_BATCH_EVENTS: positiveInt.default(8_000).describe('most change events in one Kafka batch (one transaction when exactly-once)'),
  // The broker refuses a partition's record batch over its message.max.bytes (1 MiB by default): a batch whose
  // records all land on one partition must stay under it, or it would be refused on every retry.
  CDC_MAX_BATCH_BYTES: positiveInt
    .default(900_000)
    .describe("most bytes of records (keys and values) in one Kafka batch; keep it under the broker's message.max.bytes"),
  // Ten batches of lookahead: more buys no throughput and costs memory (peak RSS through a 1M burst).
  CDC_MAX_PENDING_EVENTS: positiveInt.default(20_000).describe('most decoded events waiting for Kafka; beyond, the replication stream is paused'),
  CDC_LINGER_MS: z.coerce.number().int().min(0).default(5).describe('how long (ms) the source waits for more events before sending a batch that is not full'),
  CDC_STANDBY_POLL_MS: positiveInt.default(2_000).describe('how often (ms) a standby source checks whether the streaming one died'),
  // Kafka transactions: a crash and restart of the source publishes no event twice (the broker must support them).
  CDC_EXACTLY_ONCE: z.enum(['true', 'false']).default('true').describe('publish each batch in one Kafka transaction, so a crash and restart publishes no event twice').transform((v) => v === 'true'),
  CALL_CENTER_URL: z.url().default('http://127.0.0.1:8090').describe('base URL of the call-center API'),
  CALL_CENTER_TOKEN: z.string().min(1).default('dev-call-center-token').describe('bearer token sent to the call center (redacted in logs)'),
  CALL_CENTER_TIMEOUT_MS: positiveInt.default(5_000).describe('deadline (ms) of one call-center request; a timeout is retried'),
  CALL_CENTER_CONCURRENCY: positiveInt.default(32).describe('most call-center requests in flight at once'),
  // The ceiling per project agreed with the call-center team; a backfill of a large park runs at it.
  CALL_CENTER_RATE_PER_PROJECT_PER_S: positiveInt.default(10_000).describe('most call-center requests a second per project'),
  CALL_CENTER_RETRY_BASE_MS: positiveInt.default(100).describe('first backoff (ms) after a 429, 5xx or timeout; doubles up to CALL_CENTER_RETRY_MAX_MS'),
  CALL_CENTER_RETRY_MAX_MS: positiveInt.default(30_000).describe('longest backoff (ms) between two attempts of one call-center request'),
  // Attempts of one call inside the sink before its uid is parked and retried apart (call_center_retries): a
  // failing project must not hold the events of the others.
  CALL_CENTER_MAX_ATTEMPTS: positiveInt
    .default(3)
    .describe('attempts of one call-center request before the sink parks its uid and retries it apart (call_center_retries), without end'),
  // The longest wait between two retries of a parked uid: how soon a project that came back is caught up.
  SINK_RETRY_MAX_DELAY_MS: positiveInt.default(5_000).describe('longest wait (ms) between two retries of a parked uid: how soon a project that came back is caught up'),
  SINK_GROUP_ID: z.string().min(1).default('fleet-sync-sink').describe('Kafka consumer group of the sink'),
  SINK_MAX_IN_FLIGHT_USERS: positiveInt.default(64).describe("most uids the sink applies in parallel in one lock chunk of up to 256 uids; a batch applies two chunks at once, a retry round four (one uid's changes stay in order)"),
  SINK_SESSION_TIMEOUT_MS: z.coerce.number().int().min(6_000).default(30_000).describe('consumer session timeout (ms): how soon the group notices a dead sink'),
  API_HOST: z.string().min(1).default('0.0.0.0').describe('address the api listens on'),
  API_PORT: port.default(8080).describe('port the api listens on'),
  API_TOKENS: z
    .string()
    .default('')
    .describe(
      'api tokens and their scopes, `[name:]token=scope,scope;...` (scopes `sync:write`, `users:read`, `audit:read`); the name is what the audit trail and logs show (default `token-` and 8 hex digits of its sha256); empty: every /v1 request is refused',
    )
    .transform((text, ctx) => {
      try {
        return parseApiTokens(text);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }),
  API_BODY_LIMIT_BYTES: positiveInt.default(64 * 1024).describe('largest request body the api accepts (bytes)'),
  API_RATE_LIMIT_PER_MINUTE: positiveInt.default(60_000).describe('most api requests a minute per token; beyond, 429'),
  AUDIT_RETENTION_DAYS: positiveInt.default(90).describe('days the audit trail keeps a row; older rows are pruned by the interval sweep, oldest first, in small batches'),
  RECONCILE_INTERVAL_S: positiveInt.default(300).describe('seconds between the sink group\'s reconciliation passes over every enabled park (one member asks for each pass; the members share its park sweeps)'),
  RECONCILE_PAGE_SIZE: positiveInt.default(500).describe('users read per page by the sweep, from the database and the call center'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino level of the JSON logs on stderr'),
});

export type Config = z.infer<typeof configSchema>;

/** Validates the environment; throws CONFIG_INVALID naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = configSchema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? '?');
    const shown = env[name] === undefined ? 'is missing' : `is invalid: ${issue.message}`;
    return `${name} ${shown}`;
  });
  throw new FleetSyncError('CONFIG_INVALID', `configuration: ${problems.join('; ')}`);
}
