// POST /v1/sync/call_center/park/on and /off: the park toggles (scope sync:write).
// They only write call_center_parks (and who asked, call_center_toggles); the change reaches the sink through the
// CDC stream, which does the backfill or revocation. With `dry_run` they write nothing and answer what the toggle's
// sweep would do.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type pg from 'pg';
import { FleetSyncError } from '../../connector/errors.js';
import type { ParkSync } from '../../connector/sync/desired.js';
import { parkFromRow } from '../../connector/sync/parks.js';
import { emptyDryRunReport, type Reconciler } from '../../connector/sync/reconciler.js';
import { checkParkOn, currentSyncRow, existingSyncRow, roleMapOf, turnParkOff, turnParkOn, type RoleMapping, type ToggleBy } from '../db/parks.js';
import { V1_ERRORS, errorResponses, idSchema, roleMappingSchema } from '../schemas.js';

/**
 * Runs a park's sweep as a dry run with `park` standing in for its row (the settings the toggle would write).
 * Absent when the api runs without a call center to list (then a dry run answers 503).
 */
export type DryRunner = Reconciler['dryRunPark'];

const dryRunItems = {
  type: 'array',
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['uid', 'project_id', 'park_id', 'roles_before', 'roles_after'],
    properties: {
      uid: { type: 'string' },
      project_id: { type: 'string' },
      park_id: { type: 'string' },
      roles_before: { type: ['array', 'null'], items: { type: 'string' } },
      roles_after: { type: 'array', items: { type: 'string' } },
    },
  },
} as const;

const dryRunSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'What the toggle would do (dry_run: true): nothing was written or called. The first 100 of each kind are listed; counts cover all.',
  required: ['dry_run', 'park_id', 'reason', 'changes_settings', 'counts', 'granted', 'changed', 'adopted', 'revoked'],
  properties: {
    dry_run: { type: 'boolean' },
    park_id: { type: 'string' },
    reason: { type: 'string' },
    changes_settings: { type: 'boolean', description: 'false: the park is already so; the real toggle writes nothing and starts no sweep' },
    counts: {
      type: 'object',
      additionalProperties: false,
      required: ['granted', 'changed', 'adopted', 'revoked'],
      properties: { granted: { type: 'integer' }, changed: { type: 'integer' }, adopted: { type: 'integer' }, revoked: { type: 'integer' } },
    },
    granted: dryRunItems,
    changed: dryRunItems,
    adopted: dryRunItems,
    revoked: dryRunItems,
  },
} as const;

const answer = { anyOf: [{ $ref: 'SyncRecord#' }, dryRunSchema] } as const;

const toggleBy = (request: FastifyRequest): ToggleBy => ({ tokenName: request.tokenName ?? 'unknown', requestId: String(request.id) });

const sameMap = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => Object.hasOwn(b, k) && b[k] === v);

interface ParkOnBody {
  park_id: string;
  project_id: string;
  roles: RoleMapping[];
  yandex_team_role_id?: string | null;
  dry_run?: boolean;
}

interface ParkOffBody {
  park_id: string;
  revoke?: boolean;
  dry_run?: boolean;
}

export const parksRoutes: FastifyPluginAsync<{ pool: pg.Pool; dryRun?: DryRunner | undefined }> = async (app, { pool, dryRun }) => {
  const runDry: DryRunner = (parkId, reason, park) => {
    if (!dryRun) throw new FleetSyncError('NOT_READY', 'this api runs without a call center to list: dry runs are not available');
    return dryRun(parkId, reason, park);
  };

  app.post<{ Body: ParkOnBody }>(
    '/v1/sync/call_center/park/on',
    {
      config: { scope: 'sync:write' },
      schema: {
        summary: "Turn the park's call-center sync on, or change its mapping",
        description:
          'Idempotent: an identical repeat writes nothing and answers the same record. Another mapping updates the record, ' +
          "which makes the sink re-sync the park. Turning a park on starts the park's backfill. With dry_run, nothing is " +
          'written or called: the answer says what the backfill would grant, change, adopt and revoke.',
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
            dry_run: { type: 'boolean', default: false },
          },
        },
        response: { 200: answer, ...errorResponses(...V1_ERRORS, 404) },
      },
    },
    async (request) => {
      const { park_id, project_id, roles, yandex_team_role_id, dry_run } = request.body;
      const seen = new Set<string>();
      for (const r of roles) {
        if (seen.has(r.role_id)) throw new FleetSyncError('VALIDATION_FAILED', `body/roles maps role ${r.role_id} more than once`);
        seen.add(r.role_id);
      }
      const on = { parkId: park_id, projectId: project_id, roles, yandexTeamRoleId: yandex_team_role_id ?? null };
      if (dry_run) {
        await checkParkOn(pool, on, false);
        const current = await currentSyncRow(pool, park_id);
        const park: ParkSync = {
          park_id,
          project_id,
          role_map: roleMapOf(roles),
          yandex_team_role_id: on.yandexTeamRoleId,
          enabled: true,
          revoke_on_disable: current?.revoke_on_disable ?? true,
          disabled_at_ms: null,
        };
        const unchanged =
          current?.enabled === true && current.project_id === project_id && current.yandex_team_role_id === on.yandexTeamRoleId && sameMap(current.role_map, park.role_map);
        request.log.info({ park_id, project_id, roles: roles.length, dry_run: true }, 'park sync on: dry run');
        return unchanged ? emptyDryRunReport(park_id, 'park_on', false) : await runDry(park_id, 'park_on', park);
      }
      const record = await turnParkOn(pool, on, toggleBy(request));
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
          properties: { park_id: idSchema, revoke: { type: 'boolean', default: true }, dry_run: { type: 'boolean', default: false } },
        },
        response: { 200: answer, ...errorResponses(...V1_ERRORS, 404) },
      },
    },
    async (request) => {
      const { park_id, revoke = true, dry_run } = request.body;
      if (dry_run) {
        const current = await existingSyncRow(pool, park_id);
        // As park/off writes it: the first disabled_at stays.
        const disabledAtMs = current.enabled ? Date.now() : (current.disabled_at?.getTime() ?? Date.now());
        const park: ParkSync = { ...parkFromRow(current as unknown as Record<string, unknown>), enabled: false, revoke_on_disable: revoke, disabled_at_ms: disabledAtMs };
        const unchanged = !current.enabled && current.revoke_on_disable === revoke;
        request.log.info({ park_id, revoke, dry_run: true }, 'park sync off: dry run');
        return unchanged ? emptyDryRunReport(park_id, 'park_off', false) : await runDry(park_id, 'park_off', park);
      }
      const record = await turnParkOff(pool, park_id, revoke, toggleBy(request));
      request.log.info({ park_id, revoke }, 'park sync off');
      return record;
    },
  );
};
