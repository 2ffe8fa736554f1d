// The sink against real PostgreSQL and Kafka: each test seeds parks of its own (unique ids and projects) on one
// shared pipeline, so any test runs alone (`vitest -t`) and in any order.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers.js';
import { enablePark, groupCaughtUp, heldGrants, seedPark, startPipeline, waitForProject, type Pipeline } from './pipeline.js';

describe('sink: changes reach the call center by the SPEC §5 rules', () => {
  let p: Pipeline;
  const q = (sql: string, params: unknown[] = []) => p.db.pool.query(sql, params);

  beforeAll(async () => {
    p = await startPipeline();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('a park turned on gets all its existing users with mapped roles; a park that is not on never reaches the call center', async () => {
    const off = await seedPark(p.db.pool, { users: 5, enable: false });
    const park = await seedPark(p.db.pool, { users: 20, enable: false });
    await enablePark(p.db.pool, park);
    await waitForProject(p, park.projectId, 'the backfill');
    const held = p.sim.state().projects[park.projectId]!;
    expect(Object.keys(held)).toHaveLength(20);
    expect(held[park.uids[0]!]).toEqual(['cc-operator']);
    expect(held[park.uids[1]!]).toEqual(['cc-lead']);
    expect(p.sim.state().users[park.uids[0]!]).toMatchObject({ login: `login-${park.uids[0]}`, name: `User ${park.uids[0]}` });
    expect(off.uids.some((uid) => p.sim.state().users[uid])).toBe(false);
  });

  it('an inserted user is granted its mapped role, and a role change replaces it', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    const id = randomUUID();
    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, $3, 'new', 'Newbie', $4)`, [id, park.parkId, `${park.parkId}-new`, park.roles[0]]);
    await waitFor(() => p.sim.rolesOf(park.projectId, `${park.parkId}-new`).join() === 'cc-operator', { what: 'the new user granted' });
    await q(`UPDATE users SET role_id = $2 WHERE id = $1`, [id, park.roles[1]]);
    await waitFor(() => p.sim.rolesOf(park.projectId, `${park.parkId}-new`).join() === 'cc-lead', { what: 'the role change' });
    await waitForProject(p, park.projectId, 'the park');
  });

  it('a disabled user, a deleted user and a user whose role went unmapped lose their roles', async () => {
    const park = await seedPark(p.db.pool, { users: 6 });
    await waitForProject(p, park.projectId, 'the backfill');
    const [disabled, deleted, unmapped] = [park.uids[0]!, park.uids[1]!, park.uids[2]!];
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = $1`, [disabled]);
    await q(`DELETE FROM users WHERE yandex_uid = $1`, [deleted]);
    await q(`UPDATE users SET role_id = NULL WHERE yandex_uid = $1`, [unmapped]);
    await waitForProject(p, park.projectId, 'the three revocations');
    for (const uid of [disabled, deleted, unmapped]) expect(p.sim.rolesOf(park.projectId, uid)).toEqual([]);
    expect(Object.keys(heldGrants(p.sim)[park.projectId]!)).toHaveLength(3);
  });

  it('a user moved to another enabled park leaves the old project and joins the new one', async () => {
    const [from, to] = [await seedPark(p.db.pool, { users: 2 }), await seedPark(p.db.pool, { users: 1 })];
    await waitForProject(p, from.projectId, 'the first park');
    const mover = from.uids[0]!;
    await q(`UPDATE users SET park_id = $2, role_id = $3 WHERE yandex_uid = $1`, [mover, to.parkId, to.roles[1]]);
    // The new park's backfill (its sweep, running apart) may grant the mover before the move's event revokes the old
    // grant: what must hold is the end state, in both projects.
    await waitFor(() => p.sim.rolesOf(to.projectId, mover).join() === 'cc-lead' && p.sim.rolesOf(from.projectId, mover).length === 0, {
      what: 'the mover in the new project and out of the old one',
    });
    await waitForProject(p, from.projectId, 'the old project');
    await waitForProject(p, to.projectId, 'the new project');
  });

  it('a deleted role takes the mapped role away from every holder', async () => {
    const park = await seedPark(p.db.pool, { users: 6 });
    await waitForProject(p, park.projectId, 'the backfill');
    const holders = (await q(`SELECT yandex_uid FROM users WHERE role_id = $1`, [park.roles[1]])).rows.map((r) => r.yandex_uid as string);
    expect(holders).toHaveLength(3);
    await q(`DELETE FROM roles WHERE id = $1`, [park.roles[1]]);
    await waitForProject(p, park.projectId, 'a deleted role');
    for (const uid of holders) expect(p.sim.rolesOf(park.projectId, uid)).toEqual([]);
  });

  it('a yandex-team user holds the park yandex-team role whatever its dispatcher role; a user without uid is skipped and counted', async () => {
    const park = await seedPark(p.db.pool, { users: 1, yandexTeamRoleId: 'cc-support' });
    await waitForProject(p, park.projectId, 'the backfill');
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_yandex_team) VALUES ($1, $2, 'team', 'Team', $3, true)`, [park.parkId, `${park.parkId}-team`, park.roles[0]]);
    await waitFor(() => p.sim.rolesOf(park.projectId, `${park.parkId}-team`).join() === 'cc-support', { what: 'the yandex-team role' });
    const skippedBefore = (await p.metrics.skippedNoUid.get()).values[0]?.value ?? 0;
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, NULL, 'nouid', 'No Uid', $2)`, [park.parkId, park.roles[0]]);
    await waitFor(async () => ((await p.metrics.skippedNoUid.get()).values[0]?.value ?? 0) > skippedBefore, { what: 'the user without uid to be counted' });
    expect(Object.values(p.sim.state().users).some((u) => u.login === 'nouid')).toBe(false);
  });

  it('one uid in two enabled parks holds a grant in each project; disabled in one park, it keeps the other', async () => {
    const [a, b] = [await seedPark(p.db.pool, { users: 1 }), await seedPark(p.db.pool, { users: 0 })];
    const twin = a.uids[0]!;
    const id = randomUUID();
    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, $3, 'twin', 'Twin', $4)`, [id, b.parkId, twin, b.roles[0]]);
    await waitFor(() => p.sim.rolesOf(a.projectId, twin).join() === 'cc-operator' && p.sim.rolesOf(b.projectId, twin).join() === 'cc-operator', { what: 'a grant in each project' });
    await q(`UPDATE users SET is_enabled = false WHERE id = $1`, [id]);
    await waitFor(() => p.sim.rolesOf(b.projectId, twin).length === 0, { what: 'the twin disabled in one park' });
    expect(p.sim.rolesOf(a.projectId, twin)).toEqual(['cc-operator']);
  });

  it('a park turned off with revoke loses every role it managed; a hand-made role of an outsider in the project stays', async () => {
    const park = await seedPark(p.db.pool, { users: 10 });
    await waitForProject(p, park.projectId, 'the backfill');
    p.sim.putUserByHand('outsider', { login: 'hand', name: 'By Hand' });
    p.sim.setRolesByHand(park.projectId, 'outsider', ['cc-admin']);
    await q(`UPDATE call_center_parks SET enabled = false, disabled_at = now(), revoke_on_disable = true WHERE park_id = $1`, [park.parkId]);
    await waitFor(() => Object.keys(heldGrants(p.sim)[park.projectId] ?? {}).join() === 'outsider', { what: 'the project to hold only the hand-made grant' });
    expect(p.sim.rolesOf(park.projectId, 'outsider')).toEqual(['cc-admin']);
    await waitFor(async () => (await q(`SELECT 1 FROM call_center_grants WHERE project_id = $1 AND managed`, [park.projectId])).rowCount === 0, { what: 'the records forgotten' });
  });

  it('a park remapped to another project: the old project loses what fleet-sync granted, the new one gains it', async () => {
    const park = await seedPark(p.db.pool, { users: 4 });
    await waitForProject(p, park.projectId, 'the backfill');
    await q(`UPDATE call_center_parks SET project_id = $2 WHERE park_id = $1`, [park.parkId, `${park.projectId}-b`]);
    await waitForProject(p, `${park.projectId}-b`, 'the new project');
    await waitFor(() => heldGrants(p.sim)[park.projectId] === undefined, { what: 'the old project emptied' });
    expect(Object.keys(heldGrants(p.sim)[`${park.projectId}-b`]!).sort()).toEqual([...park.uids].sort());
  });

  it('a park turned off without revoke keeps its grants and grants nothing more; a user disabled after the toggle still loses the role', async () => {
    const park = await seedPark(p.db.pool, { users: 4 });
    await waitForProject(p, park.projectId, 'the backfill');
    const held = heldGrants(p.sim)[park.projectId]!;
    await q(`UPDATE call_center_parks SET enabled = false, disabled_at = now(), revoke_on_disable = false WHERE park_id = $1`, [park.parkId]);
    await waitFor(async () => (await q(`SELECT 1 FROM reconcile_runs WHERE park_id = $1 AND reason = 'park_off' AND finished_at IS NOT NULL`, [park.parkId])).rowCount! >= 1, {
      what: 'the park_off sweep',
    });
    p.sim.resetCalls();
    await q(`UPDATE users SET name = name || ' (renamed)' WHERE park_id = $1`, [park.parkId]);
    await q(`UPDATE users SET role_id = $2 WHERE yandex_uid = $1`, [park.uids[1], park.roles[0]]);
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ($1, $2, 'new', 'New', $3)`, [park.parkId, `${park.parkId}-new`, park.roles[0]]);
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = $1`, [park.uids[0]]);
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to process every change' });
    await waitFor(() => p.sim.rolesOf(park.projectId, park.uids[0]!).length === 0, { what: 'the disabled user to lose the role' });
    // and a sweep of everything agrees: the others keep what they held, a moved user loses the old role and is
    // not granted the new one, the new user gets nothing, and no profile is sent
    await p.reconciler().sweepAll('interval');
    const { [park.uids[0]!]: _disabled, [park.uids[1]!]: _moved, ...kept } = held;
    expect(heldGrants(p.sim)[park.projectId]).toEqual(kept);
    expect(p.sim.calls().byRoute['PUT /v1/users/:uid'] ?? 0).toBe(0);
  });

  it('a park turned off without revoke, read before an earlier disable still on its way: the disabled user loses the role, the others keep theirs', async () => {
    const park = await seedPark(p.db.pool, { users: 4 });
    await waitForProject(p, park.projectId, 'the backfill');
    const held = heldGrants(p.sim)[park.projectId]!;
    // The sink is away: on its return it reads the parks topic (the park is off) before the users topic (the disable).
    await p.sink!.stop();
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = $1`, [park.uids[0]]);
    await q(`UPDATE call_center_parks SET enabled = false, disabled_at = now(), revoke_on_disable = false WHERE park_id = $1`, [park.parkId]);
    p.startSink();
    await waitFor(() => p.sim.rolesOf(park.projectId, park.uids[0]!).length === 0, { what: 'the user disabled before the toggle to lose the role' });
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to process every change' });
    await waitFor(async () => (await q(`SELECT 1 FROM reconcile_runs WHERE park_id = $1 AND reason = 'park_off' AND finished_at IS NOT NULL`, [park.parkId])).rowCount! >= 1, {
      what: 'the park_off sweep',
    });
    const { [park.uids[0]!]: _revoked, ...kept } = held;
    expect(heldGrants(p.sim)[park.projectId]).toEqual(kept);
  });
});

describe('sink: a truncate of users', () => {
  let p: Pipeline;
  beforeAll(async () => {
    p = await startPipeline();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('revokes everything fleet-sync managed, and forgets it', async () => {
    const [a, b] = [await seedPark(p.db.pool, { users: 5 }), await seedPark(p.db.pool, { users: 3 })];
    await waitForProject(p, a.projectId, 'park a');
    await waitForProject(p, b.projectId, 'park b');
    await p.db.pool.query('TRUNCATE users');
    await waitFor(() => Object.keys(heldGrants(p.sim)).length === 0, { what: 'every grant to be revoked' });
    await waitFor(async () => (await p.db.pool.query('SELECT 1 FROM call_center_grants WHERE managed')).rowCount === 0, { what: 'the records forgotten' });
  });
});
