// JSON schemas shared by the routes: request pieces, the park's sync record, a user and the error answer.
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
