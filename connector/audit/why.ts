// What a uid holds in each call-center project as fleet-sync knows it, since when, and why: the chain of causes back
// to the database (its users rows, the park's sync row and the toggle that set it, the audit row that applied the
// roles). Read by `fleet-sync why` and GET /v1/why: plain functions over a pool, every fact read in one snapshot.
import type pg from 'pg';
import { rolesInPark, type ParkSync } from '../sync/desired.js';
import { auditRowInWords, auditRowJsonSql, causeInWords, isoSql, rolesInWords, toggleInWords, type AuditRowView } from './rows.js';

/** Audit rows of a (project, uid) shown as its history, newest first. */
export const HISTORY_ROWS = 10;

export interface WhyUser {
  id: string;
  park_id: string;
  login: string;
  name: string;
  role_id: string | null;
  role_name: string | null;
  is_enabled: boolean;
  is_yandex_team: boolean;
  updated_at: string;
}

/** The latest toggle of a park (call_center_toggles): which token turned it on or off, with which request. */
export interface WhyToggle {
  at: string;
  enabled: boolean;
  revoke: boolean | null;
  token_name: string;
  request_id: string;
}

/** A park's call_center_parks row, with its latest toggle. */
export interface WhyPark {
  park_id: string;
  project_id: string;
  enabled: boolean;
  revoke_on_disable: boolean;
  enabled_at: string | null;
  disabled_at: string | null;
  role_map: Record<string, string>;
  yandex_team_role_id: string | null;
  toggle: WhyToggle | null;
}

/** One users row of the uid as a ground for (or against) a role in the project. */
export interface WhyGround {
  user_id: string;
  park_id: string;
  /** What the row earns in the project by SPEC §5's rules (a park off without revoke: what it keeps). */
  earns: string[];
  /** The rule that decides, in words. */
  reason: string;
}

/** fleet-sync's record of the (project, uid) (call_center_grants). */
export interface WhyRecord {
  park_id: string;
  role_ids: string[];
  pending: boolean;
  managed: boolean;
  granted_at: string;
  updated_at: string;
}

/**
 * settled: the call center accepted `holds`; pending: a call for `holds` is in flight or parked, not yet confirmed;
 * tombstone: fleet-sync took the access away and no longer manages the uid there; none: no record.
 */
export type HoldingState = 'settled' | 'pending' | 'tombstone' | 'none';

export interface WhyProject {
  project_id: string;
  /** What the uid holds in the project from fleet-sync, as fleet-sync knows it: its record's roles. */
  holds: string[];
  state: HoldingState;
  record: WhyRecord | null;
  /** Start of the latest unbroken run of applied rows that left `holds`; null when no audit row applied it. */
  since: string | null;
  /** What the rows give now: differs from `holds` while a change is on its way or drift awaits a sweep. */
  should_hold: string[];
  grounds: WhyGround[];
  parks: WhyPark[];
  /** The audit row that applied `holds` (the first of that run). */
  applied_by: AuditRowView | null;
  history: AuditRowView[];
  /** The answer in words, as `fleet-sync why` prints it. */
  explanation: string[];
}

export interface WhyRetry {
  attempts: number;
  next_at: string;
  last_error: string | null;
  projects: string[];
  profile: boolean;
}

export interface WhyAnswer {
  uid: string;
  /** False when no users row, grant record or audit row names the uid. */
  known: boolean;
  /** When the facts were read (the database's clock). */
  at: string;
  users: WhyUser[];
  /** The uid parked for retry (call_center_retries), if it is. */
  retry: WhyRetry | null;
  /** The latest profile put (a call-center user is one across projects). */
  profile: AuditRowView | null;
  projects: WhyProject[];
}

const sortedSet = (values: Iterable<string>) => [...new Set(values)].sort();

/** `role r1 (dispatcher)`, `no role`. */
function roleInWords(user: Pick<WhyUser, 'role_id' | 'role_name'>): string {
  if (user.role_id === null) return 'no role';
  return `role ${user.role_id}${user.role_name && user.role_name !== user.role_id ? ` (${user.role_name})` : ''}`;
}

/** `users row 0f… (login ivan, park park-1, role r1 (dispatcher), enabled, yandex-team)` */
export function userInWords(user: WhyUser): string {
  const flags = [user.is_enabled ? 'enabled' : 'disabled', ...(user.is_yandex_team ? ['yandex-team'] : [])];
  return `users row ${user.id} (login ${user.login}, park ${user.park_id}, ${roleInWords(user)}, ${flags.join(', ')})`;
}

/**
 * What one users row of the uid earns in `projectId` and the rule that decides, in words. The roles are
 * rolesInPark's (the applier's own rule); a park off without revoke keeps what its last mapping still gives of
 * what the uid holds (`holds`), and grants nothing.
 */
export function groundOf(uid: string, user: WhyUser, park: WhyPark | undefined, projectId: string, holds: readonly string[]): WhyGround {
  const base = { user_id: user.id, park_id: user.park_id };
  if (!park) return { ...base, earns: [], reason: `park ${user.park_id} has no call-center sync (no call_center_parks row)` };
  if (park.project_id !== projectId) return { ...base, earns: [], reason: `park ${park.park_id} syncs to ${park.project_id} now, not ${projectId}` };
  const row = { ...user, yandex_uid: uid, phone: null, email: null };
  const sync: ParkSync = {
    park_id: park.park_id,
    project_id: park.project_id,
    role_map: park.role_map,
    yandex_team_role_id: park.yandex_team_role_id,
    enabled: park.enabled,
    revoke_on_disable: park.revoke_on_disable,
    disabled_at_ms: park.disabled_at === null ? null : Date.parse(park.disabled_at),
  };
  const kept = !park.enabled && !park.revoke_on_disable;
  const mapped = rolesInPark(row, { ...sync, enabled: true });
  const earns = park.enabled ? rolesInPark(row, sync) : kept ? mapped.filter((r) => holds.includes(r)) : [];
  const rule = (() => {
    if (!user.is_enabled) return 'the user is disabled';
    if (user.is_yandex_team) {
      return park.yandex_team_role_id ? `yandex-team: the park gives yandex-team users ${park.yandex_team_role_id}` : 'yandex-team, and the park sets no yandex-team role';
    }
    if (user.role_id === null) return 'the user has no dispatcher role';
    if (!Object.hasOwn(park.role_map, user.role_id)) return `role ${user.role_id} is not in the park's mapping`;
    return mapped.length ? `its mapping gives ${user.role_id} → ${mapped.join(', ')}` : `its mapping gives ${user.role_id} no role`;
  })();
  if (park.enabled) return { ...base, earns, reason: rule };
  // The park's line (its state, since when, which toggle) comes before this one in the words.
  if (!kept) return { ...base, earns, reason: 'its sync is off, with revoke: nothing is kept' };
  return { ...base, earns, reason: `its sync is off, without revoke: fleet-sync keeps what its last mapping still gives of what the uid held and grants nothing (${rule})` };
}

/** `park park-1 syncs to proj-a since … (turned on by token ops, request req-7, at …)` */
function parkInWords(park: WhyPark | undefined, parkId: string): string {
  if (!park) return `park ${parkId} has no call_center_parks row`;
  const toggle = park.toggle ? toggleInWords(park.toggle) : 'no toggle recorded';
  if (park.enabled) return `park ${park.park_id} syncs to ${park.project_id} since ${park.enabled_at ?? '?'} (${toggle})`;
  return `park ${park.park_id}'s sync to ${park.project_id} is off since ${park.disabled_at ?? '?'}, ${park.revoke_on_disable ? 'with revoke' : 'without revoke'} (${toggle})`;
}

function holdingInWords(p: Pick<WhyProject, 'state' | 'holds' | 'since' | 'record'>): string {
  const since = p.since ? ` since ${p.since}` : '';
  switch (p.state) {
    case 'settled':
      return (p.holds.length ? `holds ${rolesInWords(p.holds)}` : 'holds nothing') + (since || ` (no audit row applied it; recorded ${p.record!.updated_at})`);
    case 'pending':
      return `is being given ${rolesInWords(p.holds)}: a call is in flight or parked for retry, not yet confirmed (recorded ${p.record!.updated_at})`;
    case 'tombstone':
      return `holds nothing${since}: fleet-sync took its access away and no longer manages it there`;
    case 'none':
      return `holds nothing from fleet-sync${since} (no grant record)`;
  }
}

const appliedVerb = (row: AuditRowView) => (row.action === 'adopt' ? 'adopted' : row.action === 'revoke' ? 'revoked' : 'applied');

/** The lines `fleet-sync why` prints for one project. */
export function projectInWords(uid: string, p: Omit<WhyProject, 'explanation'>, users: readonly WhyUser[], retry: WhyRetry | null): string[] {
  const lines = [`uid ${uid} in project ${p.project_id} ${holdingInWords(p)}`];
  const byId = new Map(users.map((u) => [u.id, u]));
  const parks = new Map(p.parks.map((park) => [park.park_id, park]));
  // Grounds that give a role explain a holding; when nothing is held, every ground says why not.
  const giving = p.grounds.filter((g) => g.earns.length > 0);
  const told = p.holds.length > 0 && giving.length > 0 ? giving : p.grounds;
  if (told.length === 0) lines.push(`  because no users row of uid ${uid} is in a park that syncs to ${p.project_id}`);
  told.forEach((g, i) => {
    const user = byId.get(g.user_id);
    const park = parks.get(g.park_id);
    lines.push(`  ${i === 0 ? 'because' : 'and'} ${user ? userInWords(user) : `users row ${g.user_id}`}`);
    lines.push(`  and ${parkInWords(park, g.park_id)}`);
    lines.push(`  and ${g.reason}${g.earns.length ? `: ${rolesInWords(g.earns)}` : ''}`);
  });
  const recordPark = p.record?.park_id;
  if (recordPark && !p.grounds.some((g) => g.park_id === recordPark)) lines.push(`  recorded under ${parkInWords(parks.get(recordPark), recordPark)}`);
  if (JSON.stringify(p.should_hold) !== JSON.stringify(sortedSet(p.holds))) {
    lines.push(`  but by the rows now it should hold ${rolesInWords(p.should_hold)}: a change is on its way, or the next sweep repairs it`);
  }
  if (retry && retry.projects.includes(p.project_id)) {
    lines.push(`  parked for retry: ${retry.attempts} attempt${retry.attempts === 1 ? '' : 's'}, next at ${retry.next_at}${retry.last_error ? `, last error ${retry.last_error}` : ''}`);
  }
  if (p.applied_by) lines.push(`  ${appliedVerb(p.applied_by)} by ${causeInWords(p.applied_by.cause)} at ${p.applied_by.at}`);
  if (p.history.length) {
    lines.push(`  history (latest first):`);
    for (const row of p.history) lines.push(`    ${auditRowInWords(row)}`);
  }
  return lines;
}

/** The whole answer in words. */
export function whyInWords(answer: WhyAnswer): string {
  if (!answer.known) return `uid ${answer.uid} is unknown to fleet-sync: no users row, grant record or audit row names it.\n`;
  const lines: string[] = [];
  if (answer.users.length === 0) lines.push(`uid ${answer.uid} has no users row (deleted, or its yandex_uid changed)`);
  if (answer.projects.length === 0) {
    lines.push(`uid ${answer.uid} holds nothing from fleet-sync in any project: none of its parks syncs to the call center`);
    for (const u of answer.users) lines.push(`  ${userInWords(u)}: park ${u.park_id} has no call-center sync`);
  }
  for (const p of answer.projects) lines.push(...p.explanation);
  if (answer.profile) lines.push(`profile last put at ${answer.profile.at}: ${answer.profile.outcome}, by ${causeInWords(answer.profile.cause)}`);
  if (answer.retry?.profile) lines.push(`profile parked for retry: ${answer.retry.attempts} attempts, next at ${answer.retry.next_at}`);
  return `${lines.join('\n')}\n`;
}

interface BaseFacts {
  users: WhyUser[];
  grants: (WhyRecord & { project_id: string })[];
  audited: string[];
  retry: WhyRetry | null;
  profile: AuditRowView | null;
  at: string;
}

type ParkRow = Omit<WhyPark, 'toggle'>;

async function readParks(db: pg.PoolClient, parkIds: string[]): Promise<Map<string, WhyPark>> {
  const { rows } = await db.query<ParkRow & { toggle: WhyToggle | null }>(
    `SELECT p.park_id, p.project_id, p.enabled, p.revoke_on_disable, ${isoSql('p.enabled_at')} AS enabled_at, ${isoSql('p.disabled_at')} AS disabled_at,
            p.role_map, p.yandex_team_role_id,
            (SELECT json_build_object('at', ${isoSql('t.at')}, 'enabled', t.enabled, 'revoke', t.revoke, 'token_name', t.token_name, 'request_id', t.request_id)
               FROM call_center_toggles t WHERE t.park_id = p.park_id ORDER BY t.id DESC LIMIT 1) AS toggle
       FROM call_center_parks p WHERE p.park_id = ANY($1::text[])`,
    [parkIds],
  );
  return new Map(rows.map((r) => [r.park_id, r]));
}

/**
 * The history of each (project, uid), and the audit row that applied what it holds: the first of the latest unbroken
 * run of applied rows (changes and adoptions) whose roles_after equal `holds` as sets. A change parked or refused
 * in between changed nothing in the call center, so it does not break the run.
 */
async function readAudit(db: pg.PoolClient, uid: string, holdings: { project_id: string; roles: string[] }[]): Promise<Map<string, { history: AuditRowView[]; applied_by: AuditRowView | null }>> {
  if (holdings.length === 0) return new Map();
  const { rows } = await db.query<{ project_id: string; history: AuditRowView[]; applied_by: AuditRowView | null }>(
    `WITH p AS (SELECT h.project_id, ARRAY(SELECT jsonb_array_elements_text(h.roles)) AS roles FROM jsonb_to_recordset($2::jsonb) AS h(project_id text, roles jsonb))
     SELECT p.project_id,
            (SELECT coalesce(json_agg(h.entry ORDER BY h.id DESC), '[]')
               FROM (SELECT a.id, ${auditRowJsonSql('a')} AS entry FROM call_center_audit a
                      WHERE a.uid = $1 AND a.project_id = p.project_id ORDER BY a.id DESC LIMIT ${HISTORY_ROWS}) h) AS history,
            (SELECT ${auditRowJsonSql('a')} FROM call_center_audit a
              WHERE a.id = (SELECT min(x.id) FROM call_center_audit x
                             WHERE x.uid = $1 AND x.project_id = p.project_id AND x.outcome = 'applied'
                               AND x.id > coalesce((SELECT max(y.id) FROM call_center_audit y
                                                     WHERE y.uid = $1 AND y.project_id = p.project_id AND y.outcome = 'applied'
                                                       AND NOT (coalesce(y.roles_after, '{}') @> p.roles AND coalesce(y.roles_after, '{}') <@ p.roles)), 0))) AS applied_by
       FROM p`,
    [uid, JSON.stringify(holdings)],
  );
  return new Map(rows.map((r) => [r.project_id, { history: r.history, applied_by: r.applied_by }]));
}

async function read(db: pg.PoolClient, uid: string, onlyProject: string | undefined): Promise<WhyAnswer> {
  const { rows } = await db.query<BaseFacts>(
    `SELECT (SELECT coalesce(json_agg(json_build_object('id', u.id::text, 'park_id', u.park_id, 'login', u.login, 'name', u.name, 'role_id', u.role_id,
                      'role_name', r.name, 'is_enabled', u.is_enabled, 'is_yandex_team', u.is_yandex_team, 'updated_at', ${isoSql('u.updated_at')})
                    ORDER BY u.park_id, u.id), '[]')
               FROM users u LEFT JOIN roles r ON r.id = u.role_id WHERE u.yandex_uid = $1) AS users,
            (SELECT coalesce(json_agg(json_build_object('project_id', g.project_id, 'park_id', g.park_id, 'role_ids', g.role_ids, 'pending', g.pending,
                      'managed', g.managed, 'granted_at', ${isoSql('g.granted_at')}, 'updated_at', ${isoSql('g.updated_at')})), '[]')
               FROM call_center_grants g WHERE g.uid = $1) AS grants,
            (SELECT coalesce(json_agg(DISTINCT a.project_id), '[]') FROM call_center_audit a WHERE a.uid = $1 AND a.project_id IS NOT NULL) AS audited,
            (SELECT json_build_object('attempts', q.attempts, 'next_at', ${isoSql('q.next_at')}, 'last_error', q.last_error, 'projects', q.projects, 'profile', q.profile)
               FROM call_center_retries q WHERE q.uid = $1) AS retry,
            (SELECT ${auditRowJsonSql('a')} FROM call_center_audit a WHERE a.uid = $1 AND a.project_id IS NULL ORDER BY a.id DESC LIMIT 1) AS profile,
            ${isoSql('now()')} AS at`,
    [uid],
  );
  const facts = rows[0]!;
  const known = facts.users.length > 0 || facts.grants.length > 0 || facts.audited.length > 0 || facts.profile !== null;
  const parks = await readParks(db, [...new Set([...facts.users.map((u) => u.park_id), ...facts.grants.map((g) => g.park_id)])]);

  // Every project the uid has a record or an audit row in, or a users row in a park syncing (or once syncing) to it.
  const everyProject = () =>
    sortedSet([...facts.grants.map((g) => g.project_id), ...facts.audited, ...facts.users.flatMap((u) => parks.get(u.park_id)?.project_id ?? [])]);
  const projectIds = !known ? [] : onlyProject !== undefined ? [onlyProject] : everyProject();
  const records = new Map(facts.grants.map(({ project_id, ...record }) => [project_id, record]));
  const holding = (projectId: string) => records.get(projectId)?.role_ids ?? [];
  const audit = await readAudit(db, uid, projectIds.map((project_id) => ({ project_id, roles: holding(project_id) })));
  // Parks named only by the audit trail (a record gone, a park since moved): read too, so the answer can name them.
  const named = [...audit.values()].flatMap((a) => a.history.map((h) => h.park_id)).filter((id) => id !== '' && !parks.has(id));
  if (named.length) for (const [id, park] of await readParks(db, [...new Set(named)])) parks.set(id, park);

  const projects = projectIds.map((projectId): WhyProject => {
    const record = records.get(projectId) ?? null;
    const holds = holding(projectId);
    const state: HoldingState = !record ? 'none' : !record.managed && record.role_ids.length === 0 ? 'tombstone' : record.pending ? 'pending' : 'settled';
    const grounds = facts.users
      .filter((u) => parks.get(u.park_id)?.project_id === projectId || u.park_id === record?.park_id)
      .map((u) => groundOf(uid, u, parks.get(u.park_id), projectId, holds));
    const { history, applied_by } = audit.get(projectId) ?? { history: [], applied_by: null };
    const parkIds = [...new Set([...grounds.map((g) => g.park_id), ...(record ? [record.park_id] : []), ...(applied_by && applied_by.park_id ? [applied_by.park_id] : [])])];
    const p: Omit<WhyProject, 'explanation'> = {
      project_id: projectId,
      holds,
      state,
      record,
      since: applied_by?.at ?? null,
      should_hold: sortedSet(grounds.flatMap((g) => g.earns)),
      grounds,
      parks: parkIds.flatMap((id) => parks.get(id) ?? []),
      applied_by,
      history,
    };
    return { ...p, explanation: projectInWords(uid, p, facts.users, facts.retry) };
  });
  return { uid, known, at: facts.at, users: facts.users, retry: facts.retry, profile: facts.profile, projects };
}

/** Everything fleet-sync knows of why `uid` holds what it holds, per project (or in `projectId` only). */
export async function explainUid(pool: pg.Pool, uid: string, options: { projectId?: string } = {}): Promise<WhyAnswer> {
  const client = await pool.connect();
  try {
    // One snapshot: the record, the rows and the audit trail are read as of one moment, so the chain agrees with itself.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const answer = await read(client, uid, options.projectId);
    await client.query('COMMIT');
    return answer;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}
