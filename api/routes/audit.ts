// GET /v1/audit: the audit trail, newest first, one keyset page at a time; GET /v1/audit/hourly: changes per park and
// hour for the status page's charts (scope audit:read).
import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { FleetSyncError } from '../../connector/errors.js';
import { auditCursor } from '../cursor.js';
import { auditPage, hourlyChanges } from '../db/audit.js';
import { parkExists } from '../db/users.js';
import { integerQuery } from '../query.js';
import { V1_ERRORS, errorResponses, idSchema } from '../schemas.js';

interface AuditQuery {
  uid?: string;
  project_id?: string;
  park_id?: string;
  since?: string;
  until?: string;
  cursor?: string;
  limit?: number;
}

const timeBound = (description: string) => ({ type: 'string', format: 'date-time', description }) as const;

const auditQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    uid: { ...idSchema, description: "the user's passport uid (yandex_uid)" },
    project_id: { ...idSchema, description: 'call-center project' },
    park_id: { ...idSchema, description: 'the park whose rule the change follows' },
    since: timeBound('rows recorded at or after this time (ISO 8601 with a time zone)'),
    until: timeBound('rows recorded before this time (ISO 8601 with a time zone)'),
    cursor: { type: 'string', minLength: 1, maxLength: 2000, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$', description: 'the previous answer’s cursor, with the same filters' },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  },
} as const;

const hourlyQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { hours: { type: 'integer', minimum: 1, maximum: 168, default: 24, description: 'hours back, the current one included' } },
} as const;

/** A date-time the schema accepted, as a Date PostgreSQL accepts too. */
function parseTime(text: string | undefined, name: string): Date | null {
  if (text === undefined) return null;
  const date = new Date(text);
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 1 || year > 9999) {
    throw new FleetSyncError('VALIDATION_FAILED', `querystring/${name} must be a date-time between years 0001 and 9999`);
  }
  return date;
}

export const auditRoutes: FastifyPluginAsync<{ pool: pg.Pool }> = async (app, { pool }) => {
  app.get<{ Querystring: AuditQuery }>(
    '/v1/audit',
    {
      config: { scope: 'audit:read' },
      preValidation: integerQuery(auditQuerySchema),
      schema: {
        summary: 'The audit trail: every call-center change and adoption fleet-sync made, with its cause',
        description:
          'Newest first (descending id), keyset-paged: pass the answer’s cursor with the same filters for the next page; no cursor in the answer ' +
          'means the last page. Rows appended during a walk never make a page repeat or skip a row. Filters combine (AND). An unknown park ' +
          '(no row in parks) is 404 when it has no rows.',
        tags: ['audit'],
        security: [{ bearer: [] }],
        querystring: auditQuerySchema,
        response: {
          200: {
            type: 'object',
            additionalProperties: false,
            required: ['entries'],
            properties: { entries: { type: 'array', items: { $ref: 'AuditEntry#' } }, cursor: { type: 'string' } },
          },
          ...errorResponses(...V1_ERRORS.filter((s) => s !== 413 && s !== 415), 404),
        },
      },
    },
    async (request, reply) => {
      const { uid, project_id, park_id, cursor, limit = 100 } = request.query;
      const since = parseTime(request.query.since, 'since');
      const until = parseTime(request.query.until, 'until');
      if (since && until && since > until) throw new FleetSyncError('VALIDATION_FAILED', 'querystring/since is after querystring/until');
      const filter = JSON.stringify([uid ?? null, project_id ?? null, park_id ?? null, since?.toISOString() ?? null, until?.toISOString() ?? null]);
      const beforeId = cursor === undefined ? null : auditCursor.decode(cursor, 'audit', filter);
      const page = await auditPage(pool, { uid: uid ?? null, projectId: project_id ?? null, parkId: park_id ?? null, since, until, beforeId, limit });
      // An empty first page may be an unknown park; a park that is gone from parks still shows the rows it has.
      if (page.empty && beforeId === null && park_id !== undefined && !(await parkExists(pool, park_id))) {
        throw new FleetSyncError('PARK_NOT_FOUND', `park ${park_id} does not exist`);
      }
      const next = page.nextBeforeId === null ? '' : `,"cursor":"${auditCursor.encode({ scope: 'audit', filter, lastId: page.nextBeforeId })}"`;
      return reply.type('application/json; charset=utf-8').send(`{"entries":${page.entriesJson}${next}}`);
    },
  );

  app.get<{ Querystring: { hours?: number } }>(
    '/v1/audit/hourly',
    {
      config: { scope: 'audit:read' },
      preValidation: integerQuery(hourlyQuerySchema),
      schema: {
        summary: 'Changes fleet-sync made in the call center per park and hour (the status page’s charts)',
        description: 'Rows of the audit trail with outcome applied, adoptions left out (they change nothing in the call center).',
        tags: ['audit'],
        security: [{ bearer: [] }],
        querystring: hourlyQuerySchema,
        response: {
          200: {
            type: 'object',
            additionalProperties: false,
            required: ['hours', 'start', 'parks'],
            properties: {
              hours: { type: 'integer' },
              start: { type: 'string', format: 'date-time', description: 'start of the first hour (UTC); the last hour is the one in progress' },
              parks: {
                type: 'array',
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['park_id', 'changes', 'total'],
                  properties: {
                    park_id: { type: 'string' },
                    changes: { type: 'array', items: { type: 'integer' }, description: 'one count per hour, oldest first' },
                    total: { type: 'integer' },
                  },
                },
              },
            },
          },
          ...errorResponses(400, 401, 403, 429, 503),
        },
      },
    },
    async (request) => {
      const hours = request.query.hours ?? 24;
      return { hours, ...(await hourlyChanges(pool, hours)) };
    },
  );
};
