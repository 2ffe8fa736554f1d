// GET /v1/why: what a uid holds in each call-center project, since when, and the chain of causes back to the database
// (scope audit:read). The same answer as `fleet-sync why --json` (connector/audit/why.ts).
import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { explainUid } from '../../connector/audit/why.js';
import { errorResponses, idSchema } from '../schemas.js';

const text = { type: 'string' } as const;
const nullableText = { type: ['string', 'null'] } as const;
const time = { type: 'string', format: 'date-time' } as const;
const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;
const roles = { type: 'array', items: text } as const;
const auditEntry = { anyOf: [{ $ref: 'AuditEntry#' }, { type: 'null' }] } as const;

const closed = <P extends Record<string, unknown>>(properties: P, description?: string) =>
  ({ type: 'object', additionalProperties: false, required: Object.keys(properties), properties, ...(description ? { description } : {}) }) as const;

const toggleSchema = closed({ at: time, enabled: { type: 'boolean' }, revoke: { type: ['boolean', 'null'] }, token_name: text, request_id: text });

const whySchema = closed({
  uid: text,
  known: { type: 'boolean', description: 'false when no users row, grant record or audit row names the uid' },
  at: { ...time, description: 'when the facts were read (one snapshot)' },
  users: {
    type: 'array',
    items: closed({
      id: text,
      park_id: text,
      login: text,
      name: text,
      role_id: nullableText,
      role_name: nullableText,
      is_enabled: { type: 'boolean' },
      is_yandex_team: { type: 'boolean' },
      updated_at: time,
    }),
  },
  retry: {
    anyOf: [closed({ attempts: { type: 'integer' }, next_at: time, last_error: nullableText, projects: roles, profile: { type: 'boolean' } }), { type: 'null' }],
    description: 'the uid parked for retry, if it is',
  },
  profile: { ...auditEntry, description: 'the latest profile put' },
  projects: {
    type: 'array',
    items: closed({
      project_id: text,
      holds: { ...roles, description: "what the uid holds there from fleet-sync, as fleet-sync knows it (its record's roles)" },
      state: {
        type: 'string',
        enum: ['settled', 'pending', 'tombstone', 'none'],
        description: 'pending: a call is in flight or parked; tombstone: access taken away, no longer managed; none: no record',
      },
      record: {
        anyOf: [closed({ park_id: text, role_ids: roles, pending: { type: 'boolean' }, managed: { type: 'boolean' }, granted_at: time, updated_at: time }), { type: 'null' }],
      },
      since: { ...nullableTime, description: 'start of the latest unbroken run of applied audit rows that left these roles' },
      should_hold: { ...roles, description: 'what the users rows give now by the role rules' },
      grounds: {
        type: 'array',
        items: closed({ user_id: text, park_id: text, earns: roles, reason: text }),
      },
      parks: {
        type: 'array',
        items: closed({
          park_id: text,
          project_id: text,
          enabled: { type: 'boolean' },
          revoke_on_disable: { type: 'boolean' },
          enabled_at: nullableTime,
          disabled_at: nullableTime,
          role_map: { type: 'object', additionalProperties: text },
          yandex_team_role_id: nullableText,
          toggle: { anyOf: [toggleSchema, { type: 'null' }], description: 'the latest toggle: which token turned the park on or off' },
        }),
      },
      applied_by: { ...auditEntry, description: 'the audit row that applied what the uid holds' },
      history: { type: 'array', items: { $ref: 'AuditEntry#' }, description: 'the latest audit rows of the uid in the project, newest first' },
      explanation: { ...roles, description: 'the answer in words, as `fleet-sync why` prints it' },
    }),
  },
});

export const whyRoutes: FastifyPluginAsync<{ pool: pg.Pool }> = async (app, { pool }) => {
  app.get<{ Querystring: { uid: string; project_id?: string } }>(
    '/v1/why',
    {
      config: { scope: 'audit:read' },
      schema: {
        summary: 'What a uid holds in each call-center project, since when, and why',
        description:
          'For each project where the uid has a grant record, an audit row, or a users row in a park syncing to it: its roles as fleet-sync ' +
          'knows them, since when, its users rows, the park’s sync row and latest toggle, the audit row that applied the roles, and its history. ' +
          'An unknown uid is an answer (known: false), not an error.',
        tags: ['audit'],
        security: [{ bearer: [] }],
        querystring: {
          type: 'object',
          additionalProperties: false,
          required: ['uid'],
          properties: { uid: { ...idSchema, description: "the user's passport uid (yandex_uid)" }, project_id: { ...idSchema, description: 'only this project' } },
        },
        response: { 200: whySchema, ...errorResponses(400, 401, 403, 429, 503) },
      },
    },
    async (request) => {
      const { uid, project_id } = request.query;
      return explainUid(pool, uid, project_id === undefined ? {} : { projectId: project_id });
    },
  );
};
