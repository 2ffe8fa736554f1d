// The model test of who holds which call-center role (scripts/lib/model.ts): three fixed seeds on real services,
// each a generated sequence of park toggles, user changes and faults checked against SPEC §5; and the checker's
// own cases as a table. A failing seed prints its sequence and the `npm run chaos -- --model` command to replay
// and shrink it (no shrinking here: each candidate would cost a fresh pipeline).
import { describe, expect, it } from 'vitest';
import { accessViolations, auditViolations, formatFailure, OUTSIDERS, runModelSeed, type DbSnapshot, type ParkRowSnapshot, type UserRowSnapshot } from '../scripts/lib/model.js';
import type { Grants } from '../scripts/lib/oracle.js';
import { serviceUrls, TEST_LOG_FILE } from './helpers.js';

const park = (park_id: string, over: Partial<ParkRowSnapshot> = {}): ParkRowSnapshot => ({
  park_id,
  project_id: 'proj-a',
  role_map: { [`${park_id}-r1`]: 'cc-operator', [`${park_id}-r2`]: 'cc-lead' },
  yandex_team_role_id: null,
  enabled: true,
  revoke_on_disable: true,
  ...over,
});
const user = (park_id: string, yandex_uid: string, over: Partial<UserRowSnapshot> = {}): UserRowSnapshot => ({
  park_id,
  yandex_uid,
  role_id: `${park_id}-r1`,
  is_enabled: true,
  is_yandex_team: false,
  ...over,
});
const outsiders: Grants = { 'proj-a': { 'out-a': ['cc-lead'] } };

describe('the model checker', () => {
  it.each<[string, DbSnapshot, Grants, string[]]>([
    [
      'a user of an enabled park holding what the oracle gives, and the outsider untouched: nothing to report',
      { expected: { 'proj-a': { u1: ['cc-operator'] } }, parks: [park('p1')], users: [user('p1', 'u1')] },
      { 'proj-a': { u1: ['cc-operator'], 'out-a': ['cc-lead'] } },
      [],
    ],
    [
      'a user of an enabled park holding another role',
      { expected: { 'proj-a': { u1: ['cc-operator'] } }, parks: [park('p1')], users: [user('p1', 'u1')] },
      { 'proj-a': { u1: ['cc-lead'], 'out-a': ['cc-lead'] } },
      ['proj-a/u1: holds ["cc-lead"], SPEC §5 gives ["cc-operator"] (a user of enabled park p1; rule 1)'],
    ],
    [
      'a disabled user of an enabled park still holding its role',
      { expected: {}, parks: [park('p1')], users: [user('p1', 'u1', { is_enabled: false })] },
      { 'proj-a': { u1: ['cc-operator'], 'out-a': ['cc-lead'] } },
      ['proj-a/u1: holds ["cc-operator"], SPEC §5 gives [] (a user of enabled park p1; rule 1)'],
    ],
    [
      'a uid that earns nothing anywhere (its park turned off with revoke) still holding a role',
      { expected: {}, parks: [park('p1', { enabled: false })], users: [user('p1', 'u1')] },
      { 'proj-a': { u1: ['cc-operator'], 'out-a': ['cc-lead'] } },
      ['proj-a/u1: holds ["cc-operator"] but earns nothing from an enabled park, and no park of proj-a is off without revoke (rule 2)'],
    ],
    [
      'a uid whose park row is gone still holding a role in another project',
      { expected: {}, parks: [], users: [user('p1', 'u1')] },
      { 'proj-b': { u1: ['cc-lead'] }, 'proj-a': { 'out-a': ['cc-lead'] } },
      ['proj-b/u1: holds ["cc-lead"] but earns nothing from an enabled park, and no park of proj-b is off without revoke (rule 2)'],
    ],
    [
      'a park off without revoke: its user keeps what its row earns by the last mapping, or less',
      { expected: {}, parks: [park('p1', { enabled: false, revoke_on_disable: false })], users: [user('p1', 'u1'), user('p1', 'u2', { role_id: 'p1-r2' })] },
      { 'proj-a': { u1: ['cc-operator'], 'out-a': ['cc-lead'] } },
      [],
    ],
    [
      'a park off without revoke: a user disabled since, or holding more than the mapping gives, is reported',
      {
        expected: {},
        parks: [park('p1', { enabled: false, revoke_on_disable: false })],
        users: [user('p1', 'u1', { is_enabled: false }), user('p1', 'u2')],
      },
      { 'proj-a': { u1: ['cc-operator'], u2: ['cc-lead', 'cc-operator'], 'out-a': ['cc-lead'] } },
      [
        'proj-a/u1: holds ["cc-operator"] but earns nothing from an enabled park, and park p1 is off without revoke and its last mapping gives the uid\'s rows there [] (rule 2)',
        'proj-a/u2: holds ["cc-lead","cc-operator"] but earns nothing from an enabled park, and park p1 is off without revoke and its last mapping gives the uid\'s rows there ["cc-operator"] (rule 2)',
      ],
    ],
    [
      'a park off without revoke does not excuse a role in a project that is not its current one',
      { expected: {}, parks: [park('p1', { enabled: false, revoke_on_disable: false, project_id: 'proj-b' })], users: [user('p1', 'u1')] },
      { 'proj-a': { u1: ['cc-operator'], 'out-a': ['cc-lead'] } },
      ['proj-a/u1: holds ["cc-operator"] but earns nothing from an enabled park, and no park of proj-a is off without revoke (rule 2)'],
    ],
    [
      'a uid in an enabled and a kept park of one project holds exactly what the enabled one gives',
      {
        expected: { 'proj-a': { u1: ['cc-lead'] } },
        parks: [park('p1'), park('p2', { enabled: false, revoke_on_disable: false })],
        users: [user('p1', 'u1', { role_id: 'p1-r2' }), user('p2', 'u1')],
      },
      { 'proj-a': { u1: ['cc-lead', 'cc-operator'], 'out-a': ['cc-lead'] } },
      ['proj-a/u1: holds ["cc-lead","cc-operator"], SPEC §5 gives ["cc-lead"] (a user of enabled park p1; rule 1)'],
    ],
    [
      "the call-center team's own grant changed or taken away",
      { expected: {}, parks: [], users: [] },
      { 'proj-a': {} },
      ['proj-a/out-a: the call-center team\'s own grant changed: holds [], was given ["cc-lead"] (rule 3)'],
    ],
  ])('%s', (_name, db, held, violations) => {
    expect(accessViolations(db, held, outsiders)).toEqual(violations);
  });

  it("the audit trail's latest applied change of a key must be what the call center holds (rule 4)", () => {
    const db: DbSnapshot = {
      expected: {},
      parks: [],
      users: [],
      audit: [
        { project_id: 'proj-a', uid: 'u1', roles_after: ['cc-lead'], id: '7' },
        { project_id: 'proj-a', uid: 'u2', roles_after: [], id: '9' },
        { project_id: 'proj-b', uid: 'u1', roles_after: [], id: '12' },
      ],
    };
    expect(auditViolations(db, { 'proj-a': { u1: ['cc-lead'] }, 'proj-b': {} })).toEqual([]);
    expect(auditViolations(db, { 'proj-a': { u1: ['cc-operator'], u2: ['cc-lead'] } })).toEqual([
      'proj-a/u1: holds ["cc-operator"], the audit trail\'s latest change (#7) says ["cc-lead"] (rule 4)',
      'proj-a/u2: holds ["cc-lead"], the audit trail\'s latest change (#9) says [] (rule 4)',
    ]);
  });

  it('the outsiders of the model world hold roles in both projects', () => {
    expect(Object.keys(OUTSIDERS).sort()).toEqual(['proj-a', 'proj-b']);
  });
});

// Fixed seeds whose sequences mix park toggles and remaps (some followed at once by a change of their users),
// truncates, deleted sync rows, user changes and moves, and faults, with one or two sink members.
const SEEDS = [6, 9, 14];
const MAX_COMMANDS = 20;

describe('the model on real services: the call center ends as SPEC §5 says', () => {
  it.each(SEEDS)(
    'seed %i: a generated sequence of operations and faults, then a bounded settle, leaves every (project, uid) as the rules give',
    async (seed) => {
      const { databaseUrl, kafkaBrokers } = serviceUrls();
      const options = { maxCommands: MAX_COMMANDS, shrinkBudgetMs: 0, settleTimeoutMs: 30_000 };
      const result = await runModelSeed({ seed, services: { databaseUrl, kafkaBrokers }, logFile: TEST_LOG_FILE, ...options });
      if (!result.passed) expect.fail(formatFailure(result, options));
      expect(result.first?.passed).toBe(true);
    },
    // A failing seed takes up to its settle limit (30 s) on top of its run.
    150_000,
  );
});
