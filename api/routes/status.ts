// GET /v1/sync/call_center/parks: every park with sync on or off, what was granted, the last event applied,
// the last sweep and its drift, and the lag; and the source's replication slot (scope users:read).
import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { toSyncRecord } from '../db/parks.js';
import { parkStatuses, sourceStatus } from '../db/status.js';
import { errorResponses, syncRecordSchema } from '../schemas.js';

const count = { type: 'integer' } as const;
/** Sweeps that carry out a toggle: what they write is the toggle's work, not something the stream missed. */
const TOGGLE_SWEEPS = new Set(['park_on', 'park_off', 'truncate']);
const nullableTimestamp = { type: ['string', 'null'], format: 'date-time' } as const;

const parkStatusSchema = {
  type: 'object',
  additionalProperties: false,
  required: [...syncRecordSchema.required, 'users_granted', 'last_event', 'last_sweep', 'lag_seconds'],
  properties: {
    ...syncRecordSchema.properties,
    users_granted: { ...count, description: 'users holding a role fleet-sync granted in the project for this park' },
    last_event: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['at', 'lsn', 'commit_ts', 'events_applied', 'skipped_no_uid', 'dead_lettered'],
      properties: {
        at: nullableTimestamp,
        lsn: { type: ['string', 'null'] },
        commit_ts: nullableTimestamp,
        events_applied: count,
        skipped_no_uid: count,
        dead_lettered: count,
      },
    },
    last_sweep: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['id', 'reason', 'started_at', 'finished_at', 'checked', 'in_sync', 'drift', 'corrected_profiles', 'corrected_grants', 'revoked', 'skipped_no_uid', 'failed', 'error'],
      properties: {
        id: count,
        reason: { type: 'string' },
        started_at: { type: 'string', format: 'date-time' },
        finished_at: nullableTimestamp,
        checked: count,
        in_sync: count,
        drift: {
          ...count,
          description:
            'differences the sweep repaired (profiles + grants + revocations): what the stream missed; 0 for the sweep of a toggle (reason park_on: the backfill; park_off: the revocation), whose writes are its work',
        },
        corrected_profiles: count,
        corrected_grants: count,
        revoked: count,
        skipped_no_uid: count,
        failed: count,
        error: { type: ['string', 'null'] },
      },
    },
    lag_seconds: { type: ['number', 'null'], description: 'seconds from the last applied event’s commit to its application' },
  },
} as const;

const sourceStatusSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['slot', 'state', 'confirmed_lsn', 'lag_bytes', 'wal_status'],
  description: "the source's replication slot (CDC_SLOT) as PostgreSQL sees it",
  properties: {
    slot: { type: 'string' },
    state: { type: 'string', enum: ['streaming', 'stopped', 'missing'], description: 'streaming: a source holds the slot; stopped: no source reads it; missing: not created yet' },
    confirmed_lsn: { type: ['string', 'null'], description: 'the position up to which Kafka has every change' },
    lag_bytes: { type: ['number', 'null'], description: 'WAL bytes the slot holds past the confirmed position' },
    wal_status: { type: ['string', 'null'], description: "PostgreSQL's wal_status of the slot (reserved, extended, unreserved, lost)" },
  },
} as const;

export const statusRoutes: FastifyPluginAsync<{ pool: pg.Pool; slot: string }> = async (app, { pool, slot }) => {
  app.get(
    '/v1/sync/call_center/parks',
    {
      config: { scope: 'users:read' },
      schema: {
        summary: 'Sync status of every park whose call-center sync was ever turned on',
        tags: ['sync'],
        security: [{ bearer: [] }],
        response: {
          200: {
            type: 'object',
            additionalProperties: false,
            required: ['parks', 'source'],
            properties: { parks: { type: 'array', items: parkStatusSchema }, source: sourceStatusSchema },
          },
          ...errorResponses(401, 403, 429, 503),
        },
      },
    },
    async () => {
      const [rows, source] = await Promise.all([parkStatuses(pool), sourceStatus(pool, slot)]);
      return {
        source,
        parks: rows.map((row) => ({
          ...toSyncRecord(row),
          users_granted: row.users_granted,
          last_event:
            row.last_event_at === null && row.events_applied === null
              ? null
              : {
                  at: row.last_event_at?.toISOString() ?? null,
                  lsn: row.last_event_lsn,
                  commit_ts: row.last_commit_ts?.toISOString() ?? null,
                  events_applied: Number(row.events_applied ?? 0),
                  skipped_no_uid: Number(row.skipped_no_uid ?? 0),
                  dead_lettered: Number(row.dead_lettered ?? 0),
                },
          last_sweep: row.sweep && {
            ...row.sweep,
            drift: TOGGLE_SWEEPS.has(row.sweep.reason) ? 0 : row.sweep.corrected_profiles + row.sweep.corrected_grants + row.sweep.revoked,
          },
          lag_seconds: row.lag_seconds,
        })),
      };
    },
  );
};
