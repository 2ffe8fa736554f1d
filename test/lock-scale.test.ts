// Per-uid order with a bounded number of locks: a park of 100,000 users turned off with revoke. One advisory lock
// per uid for the whole set would need 100,000 slots of PostgreSQL's shared lock table (max_locks_per_transaction
// × max_connections: 64 × 300 on the test services, 64 × 100 on stock settings) and fail with "out of shared
// memory", for this session and every other one meanwhile.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SyncStack } from '../connector/wiring.js';
import type { Simulator } from '../simulator/simulator.js';
import type { TestDatabase } from './helpers.js';
import { startSyncOnly, type SyncOnly } from './pipeline.js';

const USERS = 100_000;

describe('uid locks at the scale of a large park', () => {
  let s: SyncOnly;
  let db: TestDatabase;
  let sim: Simulator;
  let stack: SyncStack;
  beforeAll(async () => {
    s = await startSyncOnly({ CALL_CENTER_CONCURRENCY: '64', SINK_MAX_IN_FLIGHT_USERS: '128' });
    ({ db, sim, stack } = s);
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('big', 'Big'), ('small', 'Small')`);
    await db.pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'big', 'Dispatcher'), ('r2', 'small', 'Dispatcher')`);
    await db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'big', 'big-' || g, 'l', 'n', 'r1' FROM generate_series(1, $1::int) g`, [USERS]);
    await db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('small', 'small-1', 'l', 'n', 'r2')`);
    // Turned on long ago and in sync: the call center holds every grant, fleet-sync recorded each one.
    await db.pool.query(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled) VALUES ('big', 'proj-big', '{"r1":"cc-op"}', true), ('small', 'proj-small', '{"r2":"cc-op"}', true)`);
    await db.pool.query(`INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending) SELECT 'proj-big', 'big-' || g, 'big', '{cc-op}', false FROM generate_series(1, $1::int) g`, [USERS]);
    for (let g = 1; g <= USERS; g++) {
      sim.putUserByHand(`big-${g}`, { login: 'l', name: 'n' });
      sim.setRolesByHand('proj-big', `big-${g}`, ['cc-op']);
    }
  }, 300_000);
  afterAll(async () => s?.stop());

  it('turning off a 100k-user park with revoke takes every role away, while other sessions keep taking their locks', async () => {
    await db.pool.query(`UPDATE call_center_parks SET enabled = false, revoke_on_disable = true WHERE park_id = 'big'`);
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`);
        peak = Math.max(peak, rows[0]!.n);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const revoke = stack.reconciler.reconcilePark('big', 'park_off');
    // Meanwhile another park's user changes and is applied under its own lock.
    await db.pool.query(`UPDATE call_center_parks SET enabled = true WHERE park_id = 'small'`);
    const other = await stack.sync.applier.syncUids(['small-1'], { cause: { kind: 'sweep', run_id: 'test', reason: 'manual', park_id: 'small' } });
    expect(other.get('small-1')).toMatchObject({ granted: 1 });
    const counts = await revoke;
    sampling = false;
    await sampler;
    expect(counts.revoked).toBe(USERS);
    expect(counts.failed).toBe(0);
    expect(Object.keys(sim.state().projects['proj-big'] ?? {}).filter((uid) => sim.rolesOf('proj-big', uid).length > 0)).toEqual([]);
    expect(sim.rolesOf('proj-small', 'small-1')).toEqual(['cc-op']);
    // A few chunks at a time, never the whole park.
    expect(peak).toBeLessThanOrEqual(1_024);
  }, 300_000);
});
