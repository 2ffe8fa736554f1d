// POST /v1/users/list: a park's users, one keyset page at a time (scope users:read).
// Keyset on (park_id, id): a user that exists for the whole walk is returned exactly once, whatever is inserted or updated meanwhile.
import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { FleetSyncError } from '../../connector/errors.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { parkExists, usersPages } from '../db/users.js';
import { V1_ERRORS, errorResponses, idSchema } from '../schemas.js';

interface UsersListBody {
  park_id: string;
  limit?: number;
  cursor?: string;
  updated_since?: string;
  include_disabled?: boolean;
}

/** updated_since as a Date PostgreSQL accepts; the schema's date-time format already checked the syntax. */
function parseSince(text: string | undefined): Date | null {
  if (text === undefined) return null;
  const date = new Date(text);
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 1 || year > 9999) {
    throw new FleetSyncError('VALIDATION_FAILED', 'body/updated_since must be a date-time between years 0001 and 9999');
  }
  return date;
}

export const usersRoutes: FastifyPluginAsync<{ pool: pg.Pool }> = async (app, { pool }) => {
  const pages = usersPages(pool);
  app.post<{ Body: UsersListBody }>(
    '/v1/users/list',
    {
      config: { scope: 'users:read' },
      schema: {
        summary: "A page of the park's users",
        description:
          'Keyset pagination in user id order. Pass the answer\'s cursor (with the same park and filters) for the next page; ' +
          'no cursor in the answer means the last page.',
        tags: ['users'],
        security: [{ bearer: [] }],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['park_id'],
          properties: {
            park_id: idSchema,
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', minLength: 1, maxLength: 2000, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$' },
            updated_since: { type: 'string', format: 'date-time' },
            include_disabled: { type: 'boolean', default: false },
          },
        },
        response: {
          200: {
            type: 'object',
            additionalProperties: false,
            required: ['users'],
            properties: { users: { type: 'array', items: { $ref: 'User#' } }, cursor: { type: 'string' } },
          },
          ...errorResponses(...V1_ERRORS, 404),
        },
      },
    },
    async (request, reply) => {
      const { park_id, limit = 100, cursor, updated_since, include_disabled = false } = request.body;
      const since = parseSince(updated_since);
      const filter = `${since?.toISOString() ?? ''}|${include_disabled}`;
      const afterId = cursor === undefined ? null : decodeCursor(cursor, park_id, filter);
      const page = await pages.page({ parkId: park_id, afterId, limit, updatedSince: since, includeDisabled: include_disabled });
      // An empty first page may be an unknown park; a page with users proves the park exists (users.park_id references it).
      if (page.users.length === 0 && afterId === null && !(await parkExists(pool, park_id))) {
        throw new FleetSyncError('PARK_NOT_FOUND', `park ${park_id} does not exist`);
      }
      const answer = page.nextAfterId === null
        ? { users: page.users }
        : { users: page.users, cursor: encodeCursor({ parkId: park_id, filter, lastId: page.nextAfterId }) };
      // The rows are the User schema's objects, their fields in its order, so JSON.stringify writes what the schema's
      // serializer would (as fast), except that a time with no date (infinity) stays null instead of becoming "".
      return reply.type('application/json; charset=utf-8').send(JSON.stringify(answer));
    },
  );
};
