// SPEC §8's rule for who holds what, tried at the moments a stale view would decide wrong: right after a toggle,
// while a call is still in flight, after the parks table is truncated or a park's row deleted, with the new project
// down, and while another park's backfill runs. Each test makes its own parks and projects.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { turnParkOff, turnParkOn } from '../api/db/parks.js';
import { deadLetterCount, groupCaughtUp, heldGrants, pipelineCaughtUp, prefillProject, seedPark, startPipeline, waitForProject, type Pipeline, type SeededPark } from './pipeline.js';
import { waitFor } from './helpers.js';

describe('access: every decision from state at least as new as what it decides', () => {
  let p: Pipeline;
  const q = (sql: string, params: unknown[] = []) => p.db.pool.query(sql, params);
  const mapping = (park: SeededPark) => [
    { role_id: park.roles[0], call_center_role_id: 'cc-operator' },
    { role_id: park.roles[1], call_center_role_id: 'cc-lead' },
  ];
  const parkOn = (park: SeededPark, projectId = park.projectId) => turnParkOn(p.db.pool, { parkId: park.parkId, projectId, roles: mapping(park), yandexTeamRoleId: null });
  const holders = (projectId: string) => Object.keys(heldGrants(p.sim)[projectId] ?? {}).sort();

  beforeAll(async () => {
    p = await startPipeline();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('users disabled, deleted and moved to an unmapped role right after park/on answered, over a project already filled, lose their roles by the stream', async () => {
    const park = await seedPark(p.db.pool, { users: 60, enable: false });
    const unmapped = `${park.parkId}-r3`;
    await q(`INSERT INTO roles (id, park_id, name) VALUES ($1, $2, 'Unmapped')`, [unmapped, park.parkId]);
    prefillProject(p.sim, park);
    // The park's sync row exists, off (turned on and off long ago): every sink has heard of it as off.
    await q(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled, revoke_on_disable) VALUES ($1, $2, '{}', false, false)`, [park.parkId, park.projectId]);
    await pipelineCaughtUp(p);
    await parkOn(park);
    // No wait for the backfill: the events may reach the sink before anything else tells it the park is on.
    const [disabled, deleted, moved] = [park.uids.slice(0, 20), park.uids.slice(20, 30), park.uids.slice(30, 50)];
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = ANY($1)`, [disabled]);
    await q(`DELETE FROM users WHERE yandex_uid = ANY($1)`, [deleted]);
    await q(`UPDATE users SET role_id = $2 WHERE yandex_uid = ANY($1)`, [moved, unmapped]);
    await waitForProject(p, park.projectId, 'the 50 revocations');
    for (const uid of deleted) expect(p.sim.rolesOf(park.projectId, uid)).toEqual([]);
    expect(holders(park.projectId)).toEqual([...park.uids.slice(50)].sort());
  });

  it('a grant still in flight when the park is turned off with revoke is taken away once it lands, and stays taken', async () => {
    const park = await seedPark(p.db.pool, { users: 3 });
    await waitForProject(p, park.projectId, 'the backfill');
    const late = `${park.parkId}-late`;
    p.sim.setFaults({ slowUids: [late], slowMs: 3_000 });
    try {
      await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'late', 'Late', $3)`, [park.parkId, late, park.roles[0]]);
      // The grant is recorded pending just before its call: the call is in flight.
      await waitFor(async () => (await q(`SELECT 1 FROM call_center_grants WHERE uid = $1 AND pending`, [late])).rowCount === 1, { what: 'the grant in flight' });
      await turnParkOff(p.db.pool, park.parkId, true);
      await waitFor(async () => (await q(`SELECT 1 FROM call_center_grants WHERE uid = $1 AND NOT pending`, [late])).rowCount === 1, { what: 'the slow grant to land' });
      await waitFor(async () => (await q(`SELECT 1 FROM call_center_park_sweeps WHERE park_id = $1`, [park.parkId])).rowCount === 0, { what: 'the revocation sweep done' });
      await waitFor(() => holders(park.projectId).length === 0, { what: 'every role of the park taken away, the late grant too' });
      // and fleet-sync no longer manages any of them there (each record settles right after its call lands)
      await waitFor(async () => (await q(`SELECT 1 FROM call_center_grants WHERE project_id = $1 AND managed`, [park.projectId])).rowCount === 0, { what: 'the records forgotten' });
      expect(holders(park.projectId)).toEqual([]);
    } finally {
      p.sim.setFaults({ slowUids: [], slowMs: 0 });
    }
  });

  it('a truncate of call_center_parks revokes every park as park/off does by default; a park turned on again afterwards follows its disables by the stream, after a sink restart too', async () => {
    const [a, b] = [await seedPark(p.db.pool, { users: 6 }), await seedPark(p.db.pool, { users: 4 })];
    await waitForProject(p, a.projectId, 'park a');
    await waitForProject(p, b.projectId, 'park b');
    p.sim.putUserByHand('outsider-t', { login: 'hand', name: 'By Hand' });
    p.sim.setRolesByHand(a.projectId, 'outsider-t', ['cc-admin']);
    await q('TRUNCATE call_center_parks');
    await waitFor(() => holders(a.projectId).join() === 'outsider-t' && holders(b.projectId).length === 0, { what: 'both parks revoked, the outsider left alone' });

    await parkOn(a);
    await waitForProject(p, a.projectId, 'park a backfilled again', { outsiders: ['outsider-t'] });
    // A sink started now reads the truncate's copies on every partition, and park a's re-enable on one of them.
    await p.sink!.stop();
    p.startSink();
    await waitFor(() => p.sink!.isReady(), { what: 'the new sink to consume', timeoutMs: 60_000 });
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = ANY($1)`, [a.uids.slice(0, 5)]);
    await waitForProject(p, a.projectId, 'the 5 disables', { outsiders: ['outsider-t'] });
    expect(holders(a.projectId)).toEqual([a.uids[5]!, 'outsider-t'].sort());
  });

  it('a role id that is a built-in property name is no mapped role: a user moved to role `constructor` loses the mapped one', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    await q(`INSERT INTO roles (id, park_id, name) VALUES ('constructor', $1, 'Built-in name')`, [park.parkId]);
    await q(`UPDATE users SET role_id = 'constructor' WHERE yandex_uid = $1`, [park.uids[0]]);
    await waitFor(() => p.sim.rolesOf(park.projectId, park.uids[0]!).length === 0, { what: 'the mapped role taken away' });
    await waitForProject(p, park.projectId, 'the project as the database says');
    expect(holders(park.projectId)).toEqual([park.uids[1]!]);
  });

  it('a park remapped to a project that is down, then turned off without revoke: what it granted in the project it left is taken away', async () => {
    const park = await seedPark(p.db.pool, { users: 4 });
    await waitForProject(p, park.projectId, 'the backfill');
    const next = `${park.projectId}-next`;
    p.sim.setFaults({ failProjects: [next] });
    try {
      await parkOn(park, next);
      await turnParkOff(p.db.pool, park.parkId, false);
      await waitFor(() => holders(park.projectId).length === 0, { what: 'the old project emptied' });
    } finally {
      p.sim.setFaults({ failProjects: [] });
    }
    await waitFor(async () => (await q(`SELECT 1 FROM call_center_park_sweeps WHERE park_id = $1`, [park.parkId])).rowCount === 0, { what: 'the sweeps done' });
    // Off without revoke grants nothing more: the new project never got anything.
    expect(holders(next)).toEqual([]);
    expect(holders(park.projectId)).toEqual([]);
  });

  it('a park whose sync row is deleted: what fleet-sync granted for it is taken away, by its event and by the interval sweep', async () => {
    const park = await seedPark(p.db.pool, { users: 4 });
    await waitForProject(p, park.projectId, 'the backfill');
    await q(`DELETE FROM call_center_parks WHERE park_id = $1`, [park.parkId]);
    await waitFor(() => holders(park.projectId).length === 0, { what: 'the project emptied' });

    // A grant whose park's row went without its event ever being applied (a record of a park with no sync row,
    // as a lost event would leave it) is found by the interval sweep through fleet-sync's records.
    const orphan = { parkId: `${park.parkId}-orphan`, projectId: `${park.projectId}-orphan`, uid: `${park.parkId}-orphan-u` };
    await q(`INSERT INTO parks (id, name) VALUES ($1, $1)`, [orphan.parkId]);
    p.sim.putUserByHand(orphan.uid, { login: 'o', name: 'Orphan' });
    p.sim.setRolesByHand(orphan.projectId, orphan.uid, ['cc-operator']);
    await q(`INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending) VALUES ($1, $2, $3, '{cc-operator}', false)`, [orphan.projectId, orphan.uid, orphan.parkId]);
    const results = await p.reconciler().sweepAll('interval');
    expect(results.get(orphan.parkId)).toMatchObject({ revoked: 1 });
    expect(holders(orphan.projectId)).toEqual([]);
  });

  it('a uid in two parks of one project, earning its role through one: deleting that park\'s sync row takes the role', async () => {
    const granting = await seedPark(p.db.pool, { users: 1 });
    const other = await seedPark(p.db.pool, { users: 0, projectId: granting.projectId });
    const uid = granting.uids[0]!;
    // Its row in the other park earns nothing (disabled); the record may name either park.
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_enabled) VALUES ($1, $2, 'twin', 'Twin', $3, false)`, [other.parkId, uid, other.roles[0]]);
    await waitForProject(p, granting.projectId, 'the grant through the first park');
    expect(p.sim.rolesOf(granting.projectId, uid)).toEqual(['cc-operator']);
    await q(`DELETE FROM call_center_parks WHERE park_id = $1`, [granting.parkId]);
    await waitFor(() => p.sim.rolesOf(granting.projectId, uid).length === 0, { what: 'the role taken' });
    await waitForProject(p, granting.projectId, 'the project as the database says');
  });

  it('a park moved to another project and at once turned off with revoke: a uid it granted in the old project, recorded under its other park there, loses the role', async () => {
    const granting = await seedPark(p.db.pool, { users: 1 });
    const other = await seedPark(p.db.pool, { users: 0, projectId: granting.projectId });
    const uid = granting.uids[0]!;
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_enabled) VALUES ($1, $2, 'twin', 'Twin', $3, false)`, [other.parkId, uid, other.roles[0]]);
    // The record names the other park (as it may when a uid is in two parks of one project).
    await waitForProject(p, granting.projectId, 'the grant through the first park');
    await waitFor(async () => (await q(`UPDATE call_center_grants SET park_id = $2 WHERE uid = $1 AND NOT pending RETURNING 1`, [uid, other.parkId])).rowCount === 1, { what: 'the record' });
    await waitFor(async () => (await q(`SELECT 1 FROM call_center_park_sweeps WHERE park_id IN ($1, $2)`, [granting.parkId, other.parkId])).rowCount === 0, { what: 'both backfills done' });
    // Both toggles reach the sink together: only the revocation's sweep runs, none for the move.
    await p.sink!.stop();
    await parkOn(granting, `${granting.projectId}-moved`);
    await turnParkOff(p.db.pool, granting.parkId, true);
    p.startSink();
    await waitFor(() => p.sim.rolesOf(granting.projectId, uid).length === 0, { what: 'the role in the old project taken' });
    await waitForProject(p, granting.projectId, 'the old project as the database says');
  });

  it('a park turned off with revoke is revoked while another park\'s long backfill still runs', async () => {
    const small = await seedPark(p.db.pool, { users: 3 });
    await waitForProject(p, small.projectId, 'the small park');
    const big = await seedPark(p.db.pool, { users: 5, enable: false });
    // The big park's users reached the sink while it was off: its backfill has every grant to make. Each call about
    // its project takes 4 s (under the client's 5 s timeout, so none is retried or parked): a listing, then the
    // grants, 8 s or more.
    await pipelineCaughtUp(p);
    p.sim.setFaults({ slowProjects: [big.projectId], slowMs: 4_000 });
    try {
      await parkOn(big);
      const backfill = await waitFor(
        async () => (await q(`SELECT id FROM reconcile_runs WHERE park_id = $1 AND reason = 'park_on' AND finished_at IS NULL`, [big.parkId])).rows[0] as { id: string } | undefined,
        { what: 'the big park backfill running' },
      );
      await turnParkOff(p.db.pool, small.parkId, true);
      await waitFor(() => holders(small.projectId).length === 0, { what: 'the small park revoked' });
      const { rows } = await q(`SELECT finished_at FROM reconcile_runs WHERE id = $1`, [backfill.id]);
      expect(rows[0].finished_at).toBeNull();
    } finally {
      p.sim.setFaults({ slowProjects: [], slowMs: 0 });
    }
    await waitForProject(p, big.projectId, 'the big park backfilled');
  });

  it('a user the call center still does not know after it was created is dead-lettered, not retried without end', async () => {
    const park = await seedPark(p.db.pool, { users: 1 });
    await waitForProject(p, park.projectId, 'the backfill');
    const ghost = `${park.parkId}-ghost`;
    const before = await deadLetterCount(p);
    p.sim.setFaults({ forgetUids: [ghost] });
    try {
      await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'ghost', 'Ghost', $3)`, [park.parkId, ghost, park.roles[0]]);
      await waitFor(async () => (await deadLetterCount(p)) === before + 1, { what: 'the insert dead-lettered' });
      await waitFor(() => groupCaughtUp(p), { what: 'the sink to commit every event' });
      expect((await q(`SELECT 1 FROM call_center_retries WHERE uid = $1`, [ghost])).rowCount).toBe(0);
    } finally {
      p.sim.setFaults({ forgetUids: [] });
    }
  });
});
