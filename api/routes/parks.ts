// POST /v1/sync/call_center/park/on and /off: the park toggles (scope sync:write).
// They only write call_center_parks; the change reaches the sink through the CDC stream, which does the backfill or revocation.
import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { FleetSyncError } from '../../connector/errors.js';
import { turnParkOff, turnParkOn, type RoleMapping } from '../db/parks.js';
import { V1_ERRORS, errorResponses, idSchema, roleMappingSchema } from '../schemas.js';

interface ParkOnBody {
  park_id: string;
  project_id: string;
  roles: RoleMapping[];
  yandex_team_role_id?: string | null;
}

interface ParkOffBody {
  park_id: string;
  revoke?: boolean;
}

export const parksRoutes: FastifyPluginAsync<{ pool: pg.Pool }> = async (app, { pool }) => {
  app.post<{ Body: ParkOnBody }>(
    '/v1/sync/call_center/park/on',
    {
      config: { scope: 'sync:write' },
      schema: {
        summary: "Turn the park's call-center sync on, or change its mapping",
        description:
          'Idempotent: an identical repeat writes nothing and answers the same record. Another mapping updates the record, ' +
          "which makes the sink re-sync the park. Turning a park on starts the park's backfill.",
        tags: ['sync'],
        security: [{ bearer: [] }],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['park_id', 'project_id', 'roles'],
          properties: {
            park_id: idSchema,
            project_id: idSchema,
            roles: { type: 'array', maxItems: 1000, items: roleMappingSchema },
            yandex_team_role_id: { anyOf: [idSchema, { type: 'null' }] },
          },
        },
        response: { 200: { $ref: 'SyncRecord#' }, ...errorResponses(...V1_ERRORS, 404) },
      },
    },
    async (request) => {
      const { park_id, project_id, roles, yandex_team_role_id } = request.body;
      const seen = new Set<string>();
      for (const r of roles) {
        if (seen.has(r.role_id)) throw new FleetSyncError('VALIDATION_FAILED', `body/roles maps role ${r.role_id} more than once`);
        seen.add(r.role_id);
      }
      const record = await turnParkOn(pool, { parkId: park_id, projectId: project_id, roles, yandexTeamRoleId: yandex_team_role_id ?? null });
      request.log.info({ park_id, project_id, roles: roles.length }, 'park sync on');
      return record;
    },
  );

  app.post<{ Body: ParkOffBody }>(
    '/v1/sync/call_center/park/off',
    {
      config: { scope: 'sync:write' },
      schema: {
        summary: "Turn the park's call-center sync off",
        description:
          'Idempotent. With revoke (the default) the sink removes every role fleet-sync granted in the project. ' +
          'A park whose sync was never turned on answers 404 PARK_NOT_FOUND, as does an unknown park.',
        tags: ['sync'],
        security: [{ bearer: [] }],
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['park_id'],
          properties: { park_id: idSchema, revoke: { type: 'boolean', default: true } },
        },
        response: { 200: { $ref: 'SyncRecord#' }, ...errorResponses(...V1_ERRORS, 404) },
      },
    },
    async (request) => {
      const { park_id, revoke = true } = request.body;
      const record = await turnParkOff(pool, park_id, revoke);
      request.log.info({ park_id, revoke }, 'park sync off');
      return record;
    },
  );
};
