import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers.js';
import { groupCaughtUp, heldGrants, startPipeline, waitForConvergence, type Pipeline } from './pipeline.js';

describe('sink: changes reach the call center by the SPEC §5 rules', () => {
  let p: Pipeline;
  const q = (sql: string, params: unknown[] = []) => p.db.pool.query(sql, params);
  const converged = (what: string) => waitForConvergence(p, what);

  beforeAll(async () => {
    p = await startPipeline({ sink: false });
    await q(`INSERT INTO parks (id, name) VALUES ('p1', 'One'), ('p2', 'Two'), ('p3', 'Three (no call center)')`);
    await q(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'p1', 'Dispatcher'), ('r2', 'p1', 'Senior'), ('r3', 'p2', 'Dispatcher'), ('r4', 'p3', 'Dispatcher')`);
    await q(
      `INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p1', 'uid-p1-' || g, 'l' || g, 'User ' || g, CASE WHEN g % 2 = 0 THEN 'r1' ELSE 'r2' END FROM generate_series(1, 20) g`,
    );
    await q(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p3', 'uid-p3-' || g, 'l' || g, 'User ' || g, 'r4' FROM generate_series(1, 5) g`);
    p.startSink();
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => p?.stop());

  it('a park turned on gets all its existing users with mapped roles; other parks never reach the call center', async () => {
    await q(`INSERT INTO call_center_parks (park_id, project_id, role_map, enabled, enabled_at) VALUES ('p1', 'proj-1', '{"r1":"cc-operator","r2":"cc-lead"}', true, now())`);
    await converged('the backfill of p1');
    const held = heldGrants(p.sim);
    expect(Object.keys(held['proj-1']!)).toHaveLength(20);
    expect(held['proj-1']!['uid-p1-2']).toEqual(['cc-operator']);
    expect(held['proj-1']!['uid-p1-3']).toEqual(['cc-lead']);
    expect(Object.keys(p.sim.state().users).some((uid) => uid.startsWith('uid-p3'))).toBe(false);
    expect(p.sim.state().users['uid-p1-2']).toMatchObject({ login: 'l2', name: 'User 2' });
  });

  it('follows insert, role change, disable, delete, move, deleted role, yandex-team, missing uid and one uid in two parks', async () => {
    await q(`INSERT INTO call_center_parks (park_id, project_id, role_map, yandex_team_role_id, enabled) VALUES ('p2', 'proj-2', '{"r3":"cc-operator"}', 'cc-support', true)`);
    const id = () => randomUUID();
    const [newbie, mover, team, nouid, twin] = [id(), id(), id(), id(), id()];
    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, 'p1', 'uid-new', 'new', 'Newbie', 'r1')`, [newbie]);
    await converged('an inserted user');
    expect(p.sim.rolesOf('proj-1', 'uid-new')).toEqual(['cc-operator']);

    await q(`UPDATE users SET role_id = 'r2' WHERE id = $1`, [newbie]);
    await converged('a role change');
    expect(p.sim.rolesOf('proj-1', 'uid-new')).toEqual(['cc-lead']);

    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = 'uid-p1-4'`);
    await converged('a disabled user');
    expect(p.sim.rolesOf('proj-1', 'uid-p1-4')).toEqual([]);

    await q(`DELETE FROM users WHERE yandex_uid = 'uid-p1-5'`);
    await converged('a deleted user');
    expect(p.sim.rolesOf('proj-1', 'uid-p1-5')).toEqual([]);

    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, 'p1', 'uid-mover', 'mover', 'Mover', 'r1')`, [mover]);
    await converged('the mover in p1');
    await q(`UPDATE users SET park_id = 'p2', role_id = 'r3' WHERE id = $1`, [mover]);
    await converged('a move to another park');
    expect(p.sim.rolesOf('proj-1', 'uid-mover')).toEqual([]);
    expect(p.sim.rolesOf('proj-2', 'uid-mover')).toEqual(['cc-operator']);

    const holdersOfR2 = (await q(`SELECT yandex_uid FROM users WHERE role_id = 'r2' AND is_enabled`)).rows.map((r) => r.yandex_uid);
    expect(holdersOfR2.length).toBeGreaterThan(0);
    await q(`DELETE FROM roles WHERE id = 'r2'`);
    await converged('a deleted role');
    for (const uid of holdersOfR2) expect(p.sim.rolesOf('proj-1', uid)).toEqual([]);

    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id, is_yandex_team) VALUES ($1, 'p2', 'uid-team', 'team', 'Team', NULL, true)`, [team]);
    await converged('a yandex-team user');
    expect(p.sim.rolesOf('proj-2', 'uid-team')).toEqual(['cc-support']);

    const skippedBefore = (await p.metrics.skippedNoUid.get()).values[0]?.value ?? 0;
    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, 'p1', NULL, 'nouid', 'No Uid', 'r1')`, [nouid]);
    await waitFor(async () => ((await p.metrics.skippedNoUid.get()).values[0]?.value ?? 0) > skippedBefore, { what: 'the user without uid to be counted' });
    expect(Object.values(p.sim.state().users).some((u) => u.login === 'nouid')).toBe(false);

    await q(`INSERT INTO users (id, park_id, yandex_uid, login, name, role_id) VALUES ($1, 'p2', 'uid-p1-6', 'twin', 'Twin', 'r3')`, [twin]);
    await converged('one uid in two parks');
    expect(p.sim.rolesOf('proj-1', 'uid-p1-6')).toEqual(['cc-operator']);
    expect(p.sim.rolesOf('proj-2', 'uid-p1-6')).toEqual(['cc-operator']);
    await q(`UPDATE users SET is_enabled = false WHERE id = $1`, [twin]);
    await converged('the twin disabled in one park only');
    expect(p.sim.rolesOf('proj-1', 'uid-p1-6')).toEqual(['cc-operator']);
    expect(p.sim.rolesOf('proj-2', 'uid-p1-6')).toEqual([]);
  });

  it('a park turned off with revoke loses the roles fleet-sync granted; a hand-made role in the project stays', async () => {
    p.sim.putUserByHand('uid-by-hand', { login: 'hand', name: 'By Hand' });
    p.sim.setRolesByHand('proj-1', 'uid-by-hand', ['cc-admin']);
    await q(`UPDATE call_center_parks SET enabled = false, disabled_at = now(), revoke_on_disable = true WHERE park_id = 'p1'`);
    await waitFor(() => Object.keys(p.sim.state().projects['proj-1'] ?? {}).join() === 'uid-by-hand', { what: 'proj-1 to hold only the hand-made grant' });
    expect(p.sim.rolesOf('proj-1', 'uid-by-hand')).toEqual(['cc-admin']);
    const { rows } = await q(`SELECT count(*)::int AS n FROM call_center_grants WHERE project_id = 'proj-1'`);
    expect(rows[0].n).toBe(0);
    p.sim.setRolesByHand('proj-1', 'uid-by-hand', []);
    await converged('everything else after p1 was turned off');
  });

  it('a park remapped to another project: the old project loses what fleet-sync granted, the new one gains it', async () => {
    await converged('a quiet start');
    const holders = Object.keys(heldGrants(p.sim)['proj-2'] ?? {});
    expect(holders.length).toBeGreaterThan(0);
    await q(`UPDATE call_center_parks SET project_id = 'proj-2b' WHERE park_id = 'p2'`);
    await converged('the remap of p2');
    expect(heldGrants(p.sim)['proj-2']).toBeUndefined();
    expect(Object.keys(heldGrants(p.sim)['proj-2b']!).sort()).toEqual(holders.sort());
  });

  it('a park turned off without revoke keeps its grants, and stops following its users', async () => {
    const held = heldGrants(p.sim)['proj-2b']!;
    await q(`UPDATE call_center_parks SET enabled = false, disabled_at = now(), revoke_on_disable = false WHERE park_id = 'p2'`);
    await q(`UPDATE users SET name = name || ' (renamed)' WHERE park_id = 'p2'`);
    await q(`UPDATE users SET is_enabled = false WHERE yandex_uid = 'uid-team'`);
    await waitFor(() => groupCaughtUp(p), { what: 'the sink to process every change' });
    const { rows } = await q(`SELECT count(*)::int AS n FROM reconcile_runs WHERE park_id = 'p2' AND reason = 'park_off' AND finished_at IS NOT NULL`);
    expect(rows[0].n).toBe(1);
    // and a sweep of everything may not touch them either
    await p.reconciler().sweepAll('interval');
    expect(heldGrants(p.sim)['proj-2b']).toEqual(held);
  });

  it('a truncate of users revokes everything fleet-sync granted', async () => {
    await q(`UPDATE call_center_parks SET enabled = true, revoke_on_disable = true WHERE park_id = 'p2'`);
    await q(`UPDATE users SET is_enabled = true WHERE yandex_uid = 'uid-team'`);
    await converged('p2 on again');
    expect(Object.keys(heldGrants(p.sim)).length).toBeGreaterThan(0);
    await q('TRUNCATE users');
    await waitFor(() => Object.keys(heldGrants(p.sim)).length === 0, { what: 'every grant to be revoked' });
    const { rows } = await q('SELECT count(*)::int AS n FROM call_center_grants');
    expect(rows[0].n).toBe(0);
  });
});
