// JSON schemas shared by the routes: request pieces, the park's sync record, a user, an audit entry and the error answer.
// Every object is closed (additionalProperties: false) and ajv runs with removeAdditional: false, so an unknown field is a 400.

/** Ids are the dispatcher's text keys: no control characters (PostgreSQL rejects NUL), bounded so no index lookup is huge. */
export const idSchema = { type: 'string', minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]+$' } as const;

const timestamp = { type: 'string', format: 'date-time' } as const;
const nullableTimestamp = { type: ['string', 'null'], format: 'date-time' } as const;

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' } },
} as const;

export const roleMappingSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['role_id', 'call_center_role_id'],
  properties: { role_id: idSchema, call_center_role_id: idSchema },
} as const;

const syncRecordProperties = {
  park_id: { type: 'string' },
  project_id: { type: 'string' },
  enabled: { type: 'boolean' },
  roles: {
    type: 'array',
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['role_id', 'call_center_role_id'],
      properties: { role_id: { type: 'string' }, call_center_role_id: { type: 'string' } },
    },
  },
  yandex_team_role_id: { type: ['string', 'null'] },
  revoke_on_disable: { type: 'boolean' },
  enabled_at: nullableTimestamp,
  disabled_at: nullableTimestamp,
  updated_at: timestamp,
} as const;

export const syncRecordSchema = {
  $id: 'SyncRecord',
  type: 'object',
  additionalProperties: false,
  required: Object.keys(syncRecordProperties),
  properties: syncRecordProperties,
} as const;

export const userSchema = {
  $id: 'User',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'park_id', 'yandex_uid', 'login', 'name', 'phone', 'email', 'role_id', 'is_enabled', 'is_yandex_team', 'created_at', 'updated_at'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    park_id: { type: 'string' },
    yandex_uid: { type: ['string', 'null'] },
    login: { type: 'string' },
    name: { type: 'string' },
    phone: { type: ['string', 'null'] },
    email: { type: ['string', 'null'] },
    role_id: { type: ['string', 'null'] },
    is_enabled: { type: 'boolean' },
    is_yandex_team: { type: 'boolean' },
    created_at: timestamp,
    updated_at: timestamp,
  },
} as const;

const rolesSchema = { type: ['array', 'null'], items: { type: 'string' } } as const;

const eventCauseSchema = {
  type: 'object',
  additionalProperties: true,
  description: 'a change event: where it is in Kafka and what it says of its transaction',
  properties: {
    topic: { type: 'string' },
    partition: { type: 'integer' },
    offset: { type: 'string' },
    lsn: { type: 'string', description: 'commit LSN of its transaction' },
    tx_id: { type: ['integer', 'null'] },
    commit_ts: { type: ['string', 'null'], format: 'date-time' },
    op: { type: 'string', enum: ['c', 'u', 'd', 'r', 't'] },
    park_id: { type: ['string', 'null'] },
    role_id: { type: ['string', 'null'] },
    user_id: { type: ['string', 'null'] },
  },
} as const;

/** A row of the audit trail (call_center_audit), as GET /v1/audit and GET /v1/why answer it. */
export const auditEntrySchema = {
  $id: 'AuditEntry',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'at', 'project_id', 'uid', 'park_id', 'action', 'roles_before', 'roles_after', 'outcome', 'error', 'cause'],
  properties: {
    id: { type: 'string', description: 'increases with every row (a bigint as text)' },
    at: { type: 'string', format: 'date-time', description: "when fleet-sync recorded the call's outcome" },
    project_id: { type: ['string', 'null'], description: 'null for a profile put (a call-center user is one across projects)' },
    uid: { type: 'string' },
    park_id: { type: 'string', description: "the park whose rule the change follows ('' when none is known)" },
    action: { type: 'string', enum: ['profile', 'roles', 'revoke', 'adopt'], description: 'adopt: found in sync and recorded without a call' },
    roles_before: { ...rolesSchema, description: 'what fleet-sync knew the call center held; null when it did not know' },
    roles_after: rolesSchema,
    outcome: { type: 'string', enum: ['applied', 'parked', 'dead_lettered', 'refused'] },
    error: { type: ['string', 'null'] },
    cause: {
      type: 'object',
      additionalProperties: true,
      required: ['kind'],
      description:
        'event: `events` (first 10, `more` counts the rest); sweep: `run_id` (reconcile_runs), `reason`, `park_id` and, for park_on/park_off, the `toggle` ' +
        '(token_name, request_id, at); retry: `attempts` and `events`; replay: `events`',
      properties: {
        kind: { type: 'string', enum: ['event', 'sweep', 'retry', 'replay'] },
        events: { type: 'array', items: eventCauseSchema },
        more: { type: 'integer' },
        run_id: { type: 'string' },
        reason: { type: 'string' },
        attempts: { type: 'integer' },
      },
    },
  },
} as const;

/** The 4xx answers a /v1 route can give, for the OpenAPI document. */
export function errorResponses(...statuses: number[]): Record<number, { $ref: string; description: string }> {
  const descriptions: Record<number, string> = {
    400: 'invalid input (VALIDATION_FAILED, BAD_REQUEST, BAD_CURSOR, ROLE_NOT_IN_PARK)',
    401: 'no or unknown bearer token (UNAUTHORIZED)',
    403: 'the token lacks the scope (FORBIDDEN)',
    404: 'unknown park (PARK_NOT_FOUND)',
    413: 'body larger than API_BODY_LIMIT_BYTES (PAYLOAD_TOO_LARGE)',
    415: 'body is not application/json (UNSUPPORTED_MEDIA_TYPE)',
    429: 'more than API_RATE_LIMIT_PER_MINUTE requests this minute for the token (RATE_LIMITED)',
    503: 'the database is unreachable (DATABASE_UNAVAILABLE)',
  };
  return Object.fromEntries(statuses.map((s) => [s, { $ref: 'Error#', description: descriptions[s] ?? 'error' }]));
}

export const V1_ERRORS = [400, 401, 403, 413, 415, 429, 503] as const;
