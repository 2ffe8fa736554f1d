// The audit trail, written where the decisions are made: every path that changes the call center (a stream event,
// a sweep of each reason, the retry loop, a replay, a toggle through the api) leaves rows naming its cause; and a
// toggle's dry run answers exactly what the real toggle then does, having changed nothing.
import type { FastifyInstance } from 'fastify';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../api/app.js';
import type { AuditRowView } from '../connector/audit/rows.js';
import type { AuditCause } from '../connector/audit/trail.js';
import { topicFor } from '../connector/events.js';
import { replay } from '../connector/replay.js';
import type { DryRunItem, DryRunReport } from '../connector/sync/reconciler.js';
import { testLogger, waitFor } from './helpers.js';
import { pipelineCaughtUp, seedPark, startPipeline, waitForProject, type Pipeline, type SeededPark } from './pipeline.js';

const TOKEN = 'audit-test-token';

/** A row as stored, with the cause's kind beside it (the api's view has no `at` here: not asserted). */
type AuditRow = Omit<AuditRowView, 'at' | 'cause'> & { cause_kind: string; cause: AuditCause & Record<string, unknown> };

describe('audit trail: every change fleet-sync makes names its cause', () => {
  let p: Pipeline;
  let app: FastifyInstance;
  const q = (sql: string, params: unknown[] = []) => p.db.pool.query(sql, params);
  const audit = async (where: string, params: unknown[]) =>
    (await q(`SELECT id::text, project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause FROM call_center_audit WHERE ${where} ORDER BY id`, params))
      .rows as AuditRow[];
  /** Every park sweep done, and every call fleet-sync made in the park's project settled in its record (and so audited). */
  const sweepsDone = (park: SeededPark) =>
    waitFor(async () => (await q('SELECT 1 FROM call_center_park_sweeps UNION ALL SELECT 1 FROM call_center_grants WHERE pending AND project_id = $1', [park.projectId])).rowCount === 0, {
      what: 'every park sweep done and every call settled',
    });
  const mapping = (park: SeededPark) => [
    { role_id: park.roles[0], call_center_role_id: 'cc-operator' },
    { role_id: park.roles[1], call_center_role_id: 'cc-lead' },
  ];
  const post = async (path: string, body: Record<string, unknown>, requestId: string) => {
    const res = await app.inject({ method: 'POST', url: `/v1/sync/call_center/${path}`, headers: { authorization: `Bearer ${TOKEN}`, 'x-request-id': requestId }, payload: body });
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };
  const parkOn = (park: SeededPark, requestId: string, dryRun = false) =>
    post('park/on', { park_id: park.parkId, project_id: park.projectId, roles: mapping(park), ...(dryRun ? { dry_run: true } : {}) }, requestId);
  const parkOff = (park: SeededPark, requestId: string, dryRun = false) => post('park/off', { park_id: park.parkId, revoke: true, ...(dryRun ? { dry_run: true } : {}) }, requestId);

  beforeAll(async () => {
    // Parked uids are retried within a second, whatever their attempts.
    p = await startPipeline({ overrides: { API_TOKENS: `ops:${TOKEN}=sync:write,users:read,audit:read`, SINK_RETRY_MAX_DELAY_MS: '1000' } });
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
    app = await buildApp({ config: p.config, pool: p.db.pool, log: testLogger(), metrics: p.metrics, readiness: {}, dryRun: p.reconciler().dryRunPark });
  });
  afterAll(async () => {
    await app?.close();
    await p?.stop();
  });

  it('a park turned on and off through the api: its sweeps name the run, the reason and the token and request of the toggle; a user changed in between names its event', async () => {
    const park = await seedPark(p.db.pool, { users: 4, enable: false });
    // The users' own events are behind: only the backfill grants them.
    await pipelineCaughtUp(p);
    await parkOn(park, 'req-on-1');
    await waitForProject(p, park.projectId, 'the backfill');
    // A row is written when the record of its call settles, just after the call lands.
    await waitFor(async () => (await audit(`project_id = $1 AND action = 'roles'`, [park.projectId])).length === park.uids.length, { what: 'the backfill audited' });
    const backfill = await audit(`project_id = $1 AND action = 'roles'`, [park.projectId]);
    expect(backfill.map((r) => r.uid).sort()).toEqual([...park.uids].sort());
    for (const row of backfill) {
      expect(row).toMatchObject({ park_id: park.parkId, outcome: 'applied', cause_kind: 'sweep', roles_before: [] });
      expect(row.roles_after).toEqual(p.sim.rolesOf(park.projectId, row.uid));
      expect(row.cause).toMatchObject({ kind: 'sweep', reason: 'park_on', park_id: park.parkId, toggle: { token_name: 'ops', request_id: 'req-on-1', enabled: true } });
      expect(row.cause.run_id).toMatch(/^\d+$/);
    }
    // The run it names is the park's backfill in reconcile_runs.
    const { rows: runs } = await q('SELECT reason FROM reconcile_runs WHERE id = $1', [backfill[0]!.cause.run_id]);
    expect(runs[0]).toEqual({ reason: 'park_on' });

    const [uid] = park.uids;
    const { rows: user } = await q('UPDATE users SET role_id = $2 WHERE yandex_uid = $1 RETURNING id::text', [uid, park.roles[1]]);
    await waitFor(async () => (await audit(`uid = $1 AND cause_kind = 'event'`, [uid])).length === 1, { what: 'the role change applied by the stream' });
    const [changed] = await audit(`uid = $1 AND cause_kind = 'event'`, [uid]);
    // Seeded with r1 (cc-operator), moved to r2 (cc-lead).
    expect(changed).toMatchObject({ project_id: park.projectId, action: 'roles', roles_before: ['cc-operator'], roles_after: ['cc-lead'], outcome: 'applied' });
    const [event] = (changed!.cause as unknown as { events: Record<string, unknown>[] }).events;
    expect(event).toMatchObject({ topic: topicFor(p.config.TOPIC_PREFIX, 'users'), op: 'u', park_id: park.parkId, role_id: park.roles[1], user_id: user[0].id });
    expect(event!.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(Number(event!.offset)).toBeGreaterThanOrEqual(0);
    expect(typeof event!.tx_id).toBe('number');
    expect(Date.parse(String(event!.commit_ts))).toBeGreaterThan(Date.now() - 60_000);

    await parkOff(park, 'req-off-1');
    await waitFor(async () => (await audit(`project_id = $1 AND action = 'revoke'`, [park.projectId])).length === park.uids.length, { what: 'the revocation audited' });
    expect(p.sim.state().projects[park.projectId] ?? {}).toEqual({});
    const revoked = await audit(`project_id = $1 AND action = 'revoke'`, [park.projectId]);
    expect(revoked.map((r) => r.uid).sort()).toEqual([...park.uids].sort());
    for (const row of revoked) {
      expect(row).toMatchObject({ roles_after: [], outcome: 'applied', cause_kind: 'sweep' });
      expect(row.cause).toMatchObject({ reason: 'park_off', toggle: { token_name: 'ops', request_id: 'req-off-1', enabled: false, revoke: true } });
    }
  });

  it('a project down: the change is audited as parked, then as applied by the retry loop naming its attempts and the event it was parked with', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    // Only the retry loop may bring the change once the project is back (the backfill's sweep would too).
    await sweepsDone(park);
    p.sim.setFaults({ failProjects: [park.projectId] });
    const uid = park.uids[1]!;
    try {
      await q('UPDATE users SET role_id = $2 WHERE yandex_uid = $1', [uid, park.roles[0]]);
      await waitFor(async () => (await audit(`uid = $1 AND outcome = 'parked'`, [uid])).length > 0, { what: 'the change parked' });
    } finally {
      p.sim.setFaults({ failProjects: [] });
    }
    await waitFor(async () => (await audit(`uid = $1 AND cause_kind = 'retry' AND outcome = 'applied'`, [uid])).length === 1, { what: 'the retry loop to apply it', timeoutMs: 30_000 });
    const [parked] = await audit(`uid = $1 AND outcome = 'parked'`, [uid]);
    const [retried] = await audit(`uid = $1 AND cause_kind = 'retry' AND outcome = 'applied'`, [uid]);
    expect(parked).toMatchObject({ cause_kind: 'event', roles_after: ['cc-operator'] });
    expect(parked!.error).toMatch(/CALL_CENTER_TRANSIENT/);
    expect(retried).toMatchObject({ project_id: park.projectId, action: 'roles', roles_after: ['cc-operator'], outcome: 'applied' });
    const cause = retried!.cause as { attempts: number; events: { offset: string; op: string }[] };
    expect(cause.attempts).toBeGreaterThanOrEqual(1);
    // The event the retry finishes is the one that was parked.
    expect(cause.events.map((e) => e.offset)).toEqual((parked!.cause as { events: { offset: string }[] }).events.map((e) => e.offset));
    expect(cause.events[0]!.op).toBe('u');
    expect(p.sim.rolesOf(park.projectId, uid)).toEqual(['cc-operator']);
  });

  it('a change the call center refuses for good is audited as dead-lettered, with the refusal', async () => {
    const park = await seedPark(p.db.pool, { users: 1 });
    await waitForProject(p, park.projectId, 'the backfill');
    await sweepsDone(park);
    const uid = park.uids[0]!;
    p.sim.setFaults({ rejectUids: [uid] });
    try {
      await q('UPDATE users SET role_id = $2 WHERE yandex_uid = $1', [uid, park.roles[1]]);
      await waitFor(async () => (await audit(`uid = $1 AND outcome = 'dead_lettered'`, [uid])).length > 0, { what: 'the refusal audited' });
    } finally {
      p.sim.setFaults({ rejectUids: [] });
    }
    const [refused] = await audit(`uid = $1 AND outcome = 'dead_lettered'`, [uid]);
    expect(refused).toMatchObject({ project_id: park.projectId, action: 'roles', roles_before: ['cc-operator'], roles_after: ['cc-lead'], cause_kind: 'event' });
    expect(refused!.error).toMatch(/^CALL_CENTER_REJECTED: /);
  });

  it('the interval sweep audits the drift it repairs with the listing as roles before; a replay to the call center names the replayed events', async () => {
    const park = await seedPark(p.db.pool, { users: 3 });
    await waitForProject(p, park.projectId, 'the backfill');
    await sweepsDone(park);
    const [drifted, forgotten] = [park.uids[0]!, park.uids[1]!];
    p.sim.setRolesByHand(park.projectId, drifted, ['cc-admin']);
    await p.reconciler().reconcilePark(park.parkId, 'interval');
    const [repair] = await audit(`uid = $1 AND cause->>'reason' = 'interval'`, [drifted]);
    expect(repair).toMatchObject({ roles_before: ['cc-admin'], roles_after: ['cc-operator'], outcome: 'applied', cause_kind: 'sweep' });

    // fleet-sync loses its record of a grant and the call center loses the grant: only a replay (or a sweep) mends it.
    await q('DELETE FROM call_center_grants WHERE uid = $1', [forgotten]);
    p.sim.setRolesByHand(park.projectId, forgotten, []);
    await replay({ config: p.config, log: testLogger(), apply: { sync: p.stack!.sync, reconciler: p.reconciler() } }, { topic: topicFor(p.config.TOPIC_PREFIX, 'users'), from: { kind: 'beginning' }, to: 'callcenter', park: park.parkId });
    const [replayed] = await audit(`uid = $1 AND cause_kind = 'replay'`, [forgotten]);
    expect(replayed).toMatchObject({ project_id: park.projectId, action: 'roles', roles_before: null, roles_after: ['cc-lead'], outcome: 'applied' });
    const events = (replayed!.cause as { events: { topic: string; op: string }[] }).events;
    expect(events.length).toBeGreaterThan(0);
    expect(events[0]).toMatchObject({ topic: topicFor(p.config.TOPIC_PREFIX, 'users'), op: 'c' });
    expect(p.sim.rolesOf(park.projectId, forgotten)).toEqual(['cc-lead']);
  });

  it("a toggle's dry run lists what the real toggle then grants, changes, adopts and revokes, and changes nothing: no row, no event, no call that writes", async () => {
    const park = await seedPark(p.db.pool, { users: 8, enable: false });
    const u = park.uids;
    // Seeded users alternate r1 (cc-operator) and r2 (cc-lead): u0 → cc-operator, u1 → cc-lead, …
    const right = (i: number) => (i % 2 === 0 ? 'cc-operator' : 'cc-lead');
    for (const i of [0, 1, 2, 3]) p.sim.putUserByHand(u[i]!, { login: `login-${u[i]}`, name: `User ${u[i]}` });
    p.sim.setRolesByHand(park.projectId, u[0]!, [right(0)]); // adopted
    p.sim.setRolesByHand(park.projectId, u[1]!, [right(1)]); // adopted
    p.sim.setRolesByHand(park.projectId, u[2]!, ['cc-admin']); // changed
    p.sim.setRolesByHand(park.projectId, u[3]!, [right(3)]); // revoked: disabled below
    p.sim.putUserByHand('outsider-dry', { login: 'hand', name: 'By Hand' });
    p.sim.setRolesByHand(park.projectId, 'outsider-dry', ['cc-admin']); // the call-center team's: untouched
    await q('UPDATE users SET is_enabled = false WHERE yandex_uid = $1', [u[3]]);
    await pipelineCaughtUp(p);

    const snapshot = async () => ({
      tables: (
        await q(`SELECT (SELECT count(*) FROM call_center_parks WHERE park_id = $1) AS parks, (SELECT count(*) FROM call_center_grants) AS grants,
                        (SELECT count(*) FROM call_center_audit) AS audit, (SELECT count(*) FROM call_center_toggles) AS toggles,
                        (SELECT count(*) FROM reconcile_runs) AS runs, (SELECT count(*) FROM call_center_park_sweeps) AS sweeps,
                        (SELECT count(*) FROM call_center_retries) AS retries`, [park.parkId])
      ).rows[0],
      topics: await topicEnds(p),
      writes: p.sim.calls().writes,
      state: JSON.stringify(p.sim.state()),
    });
    const before = await snapshot();
    const onDry = (await parkOn(park, 'req-dry-on', true)) as DryRunReport;
    await pipelineCaughtUp(p);
    expect(await snapshot()).toEqual(before);

    const item = (i: number, rolesBefore: string[] | null, rolesAfter: string[]): DryRunItem => ({ uid: u[i]!, project_id: park.projectId, park_id: park.parkId, roles_before: rolesBefore, roles_after: rolesAfter });
    expect(onDry).toMatchObject({ dry_run: true, park_id: park.parkId, reason: 'park_on', changes_settings: true, counts: { granted: 4, changed: 1, adopted: 2, revoked: 1 } });
    expect(onDry.adopted).toEqual([item(0, [right(0)], [right(0)]), item(1, [right(1)], [right(1)])]);
    expect(onDry.changed).toEqual([item(2, ['cc-admin'], [right(2)])]);
    expect(onDry.revoked).toEqual([item(3, [right(3)], [])]);
    expect(onDry.granted).toEqual([4, 5, 6, 7].map((i) => item(i, [], [right(i)])));

    await parkOn(park, 'req-real-on');
    await waitForProject(p, park.projectId, 'the backfill', { outsiders: ['outsider-dry'] });
    await sweepsDone(park);
    expect(await doneBy(park.parkId, 'req-real-on')).toEqual(listed(onDry));
    expect(p.sim.rolesOf(park.projectId, 'outsider-dry')).toEqual(['cc-admin']);

    // The same toggle again would write nothing: the dry run says so.
    expect(await parkOn(park, 'req-dry-again', true)).toMatchObject({ changes_settings: false, counts: { granted: 0, changed: 0, adopted: 0, revoked: 0 } });

    await pipelineCaughtUp(p);
    const on = await snapshot();
    const offDry = (await parkOff(park, 'req-dry-off', true)) as DryRunReport;
    await pipelineCaughtUp(p);
    expect(await snapshot()).toEqual(on);
    expect(offDry.counts).toEqual({ granted: 0, changed: 0, adopted: 0, revoked: 7 });
    await parkOff(park, 'req-real-off');
    await waitFor(() => Object.keys(p.sim.state().projects[park.projectId] ?? {}).join() === 'outsider-dry', { what: 'the revocation' });
    await sweepsDone(park);
    expect(await doneBy(park.parkId, 'req-real-off')).toEqual(listed(offDry));
  });

  it('a dry run of an unknown park, of a role not of the park, or of a park never turned on is refused with a 4xx naming it, like the real toggle', async () => {
    const park = await seedPark(p.db.pool, { users: 1, enable: false });
    const ask = (path: string, body: Record<string, unknown>) =>
      app.inject({ method: 'POST', url: `/v1/sync/call_center/${path}`, headers: { authorization: `Bearer ${TOKEN}` }, payload: { ...body, dry_run: true } });
    const unknown = await ask('park/on', { park_id: 'no-such-park', project_id: 'x', roles: [] });
    expect([unknown.statusCode, unknown.json().code, unknown.json().message]).toEqual([404, 'PARK_NOT_FOUND', 'park no-such-park does not exist']);
    const foreign = await ask('park/on', { park_id: park.parkId, project_id: park.projectId, roles: [{ role_id: 'not-its-role', call_center_role_id: 'cc-x' }] });
    expect([foreign.statusCode, foreign.json().code]).toEqual([400, 'ROLE_NOT_IN_PARK']);
    expect(foreign.json().message).toContain('not-its-role');
    const never = await ask('park/off', { park_id: park.parkId });
    expect([never.statusCode, never.json().message]).toEqual([404, `call-center sync was never turned on for park ${park.parkId}`]);
    const bad = await app.inject({ method: 'POST', url: '/v1/sync/call_center/park/off', headers: { authorization: `Bearer ${TOKEN}` }, payload: { park_id: park.parkId, dry_run: 'yes' } });
    expect([bad.statusCode, bad.json().code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(bad.json().message).toContain('dry_run');
    expect((await q('SELECT 1 FROM call_center_parks WHERE park_id = $1', [park.parkId])).rowCount).toBe(0);
  });

  it('a reconcile dry run prints the drift a sweep would repair and repairs nothing', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    await sweepsDone(park);
    p.sim.setRolesByHand(park.projectId, park.uids[0]!, ['cc-admin']);
    const writes = p.sim.calls().writes;
    const report = await p.reconciler().dryRunPark(park.parkId, 'manual');
    expect(report.counts).toEqual({ granted: 0, changed: 1, adopted: 0, revoked: 0 });
    expect(report.changed).toEqual([{ uid: park.uids[0], project_id: park.projectId, park_id: park.parkId, roles_before: ['cc-admin'], roles_after: ['cc-operator'] }]);
    expect(p.sim.calls().writes).toBe(writes);
    expect(p.sim.rolesOf(park.projectId, park.uids[0]!)).toEqual(['cc-admin']);
  });

  it('a truncate of users: each park\'s sweep audits its revocations as a truncate', async () => {
    const park = await seedPark(p.db.pool, { users: 2 });
    await waitForProject(p, park.projectId, 'the backfill');
    // The backfill's sweep is done: what it does after the truncate would be its own (park_on) work.
    await sweepsDone(park);
    await q('TRUNCATE users');
    await waitFor(async () => (await audit(`project_id = $1 AND action = 'revoke'`, [park.projectId])).length === park.uids.length, { what: 'the truncate applied and audited' });
    expect(p.sim.state().projects[park.projectId] ?? {}).toEqual({});
    const rows = await audit(`project_id = $1 AND action = 'revoke'`, [park.projectId]);
    expect(rows.map((r) => r.uid).sort()).toEqual([...park.uids].sort());
    for (const row of rows) expect(row.cause).toMatchObject({ kind: 'sweep', reason: 'truncate', park_id: park.parkId });
  });

  /** What the real toggle's sweep did (its audit rows, profiles aside), in the dry run's terms. */
  async function doneBy(parkId: string, requestId: string) {
    const rows = await audit(`cause->>'park_id' = $1 AND cause->'toggle'->>'request_id' = $2 AND action <> 'profile'`, [parkId, requestId]);
    expect(rows.every((r) => r.outcome === 'applied')).toBe(true);
    const kind = (r: AuditRow) => (r.action === 'adopt' ? 'adopted' : r.action === 'revoke' ? 'revoked' : (r.roles_before?.length ?? 0) === 0 ? 'granted' : 'changed');
    return rows
      .map((r) => ({ kind: kind(r), uid: r.uid, project_id: r.project_id, park_id: r.park_id, roles_before: r.roles_before, roles_after: r.roles_after }))
      .sort((a, b) => (a.kind + a.uid < b.kind + b.uid ? -1 : 1));
  }
});

function listed(report: DryRunReport) {
  return (['adopted', 'changed', 'granted', 'revoked'] as const)
    .flatMap((kind) => report[kind].map((i) => ({ kind, ...i })))
    .sort((a, b) => (a.kind + a.uid < b.kind + b.uid ? -1 : 1));
}

/** The end offsets of the captured tables' topics: a dry run publishes nothing. */
async function topicEnds(p: Pipeline): Promise<Record<string, string>> {
  const kafka = new Kafka({ brokers: p.config.KAFKA_BROKERS, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const out: Record<string, string> = {};
    for (const table of ['users', 'call_center_parks'] as const) {
      for (const o of await admin.fetchTopicOffsets(topicFor(p.config.TOPIC_PREFIX, table))) out[`${table}/${o.partition}`] = o.high;
    }
    return out;
  } finally {
    await admin.disconnect();
  }
}
