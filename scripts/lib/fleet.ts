// A realistic dispatcher fleet for the demo, the same for the same seed: taxi parks with their roles, and users —
// some sharing a yandex_uid across parks, some yandex-team, some without a uid, some disabled; and the live changes
// a dispatcher makes (new users, role changes, disables, moves between parks).
import type pg from 'pg';
import type { UserRow } from '../../connector/sync/desired.js';

export interface Park {
  id: string;
  name: string;
  /** share of the fleet's users */
  weight: number;
}

/** A user row as the demo writes it: the database gives it its id. */
export type FleetUser = Omit<UserRow, 'id'>;

export const PARKS: Park[] = [
  { id: 'msk-north', name: 'Moscow North Taxi', weight: 0.3 },
  { id: 'msk-south', name: 'Moscow South Taxi', weight: 0.25 },
  { id: 'spb-center', name: 'Saint Petersburg Center', weight: 0.15 },
  { id: 'kazan', name: 'Kazan Drive', weight: 0.12 },
  { id: 'ekb', name: 'Yekaterinburg Motors', weight: 0.1 },
  { id: 'nsk', name: 'Novosibirsk Cab', weight: 0.08 },
];

/** Role names of every park, with the share of users holding each; the call center maps only some of them. */
export const ROLES: Array<{ key: string; name: string; weight: number }> = [
  { key: 'operator', name: 'Operator', weight: 0.55 },
  { key: 'senior', name: 'Senior operator', weight: 0.15 },
  { key: 'supervisor', name: 'Supervisor', weight: 0.08 },
  { key: 'dispatcher', name: 'Dispatcher', weight: 0.15 },
  { key: 'accountant', name: 'Accountant', weight: 0.05 },
];

/** What the call-center creation script maps: dispatcher and accountant get no call-center role. */
export const CALL_CENTER_ROLES: Record<string, string> = { operator: 'cc-operator', senior: 'cc-senior-operator', supervisor: 'cc-supervisor' };

export const roleId = (parkId: string, key: string) => `${parkId}.${key}`;

const FIRST = ['Ivan', 'Anna', 'Dmitry', 'Elena', 'Sergey', 'Olga', 'Alexey', 'Maria', 'Pavel', 'Natalia', 'Igor', 'Tatiana', 'Nikolai', 'Irina', 'Andrey', 'Yulia', 'Maxim', 'Svetlana', 'Artem', 'Ksenia', 'Roman', 'Daria', 'Kirill', 'Polina'];
const LAST = ['Ivanov', 'Smirnov', 'Kuznetsov', 'Popov', 'Vasiliev', 'Petrov', 'Sokolov', 'Mikhailov', 'Novikov', 'Fedorov', 'Morozov', 'Volkov', 'Alekseev', 'Lebedev', 'Semenov', 'Egorov', 'Pavlov', 'Kozlov', 'Stepanov', 'Nikolaev', 'Orlov', 'Andreev', 'Makarov', 'Zakharov'];

/** mulberry32: a small seeded PRNG, so a seed gives the same fleet every time. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T extends { weight: number }>(items: T[], r: number): T {
  let acc = 0;
  for (const item of items) if (r < (acc += item.weight)) return item;
  return items[items.length - 1]!;
}

export interface FleetShares {
  /** users whose uid also belongs to a user of another park */
  sharedUid: number;
  yandexTeam: number;
  noUid: number;
  disabled: number;
  /** users with no role at all */
  noRole: number;
}

export const DEFAULT_SHARES: FleetShares = { sharedUid: 0.08, yandexTeam: 0.03, noUid: 0.05, disabled: 0.08, noRole: 0.02 };

/** A generator of users; one per demo run, so new users later on never reuse a login or uid. */
export function fleetGenerator(seed: number, shares: FleetShares = DEFAULT_SHARES) {
  const random = prng(seed);
  const uidsByPark = new Map<string, string[]>();
  let serial = 0;
  const int = (n: number) => Math.floor(random() * n);

  function newUid(): string {
    return `${1_130_000_000 + serial * 7919 + int(7919)}`;
  }

  /** One user of `parkId` (or of a park drawn by weight). */
  function user(parkId?: string): FleetUser {
    serial++;
    const park = parkId ?? pick(PARKS, random()).id;
    const first = FIRST[int(FIRST.length)]!;
    const last = LAST[int(LAST.length)]!;
    const login = `${first}.${last}.${serial}`.toLowerCase();
    let uid: string | null = newUid();
    const r = random();
    if (r < shares.noUid) uid = null;
    else if (r < shares.noUid + shares.sharedUid) {
      // The same person works in another park: one passport uid, one user row per park.
      const others = [...uidsByPark].filter(([p, list]) => p !== park && list.length > 0);
      if (others.length > 0) {
        const list = others[int(others.length)]![1];
        uid = list[int(list.length)]!;
      }
    }
    if (uid !== null) {
      const list = uidsByPark.get(park) ?? [];
      if (!list.includes(uid)) list.push(uid);
      uidsByPark.set(park, list);
    }
    const noRole = random() < shares.noRole;
    return {
      park_id: park,
      yandex_uid: uid,
      login,
      name: `${first} ${last}`,
      phone: random() < 0.85 ? `+79${String(100_000_000 + int(900_000_000))}` : null,
      email: random() < 0.7 ? `${login}@${park}.example` : null,
      role_id: noRole ? null : roleId(park, pick(ROLES, random()).key),
      is_enabled: random() >= shares.disabled,
      is_yandex_team: random() < shares.yandexTeam,
    };
  }

  return { user, random, int };
}

export type FleetGenerator = ReturnType<typeof fleetGenerator>;

/** Figures of a generated fleet, for the summary. */
export function describeFleet(users: FleetUser[]) {
  const parksOfUid = new Map<string, Set<string>>();
  for (const u of users) if (u.yandex_uid) parksOfUid.set(u.yandex_uid, (parksOfUid.get(u.yandex_uid) ?? new Set()).add(u.park_id));
  return {
    users: users.length,
    sharedUid: users.filter((u) => u.yandex_uid && parksOfUid.get(u.yandex_uid)!.size > 1).length,
    yandexTeam: users.filter((u) => u.is_yandex_team).length,
    noUid: users.filter((u) => !u.yandex_uid).length,
    disabled: users.filter((u) => !u.is_enabled).length,
  };
}

/** Inserts users with one statement per thousand (arrays unnested by PostgreSQL). */
export async function insertUsers(db: pg.Pool | pg.PoolClient, users: FleetUser[]): Promise<void> {
  for (let i = 0; i < users.length; i += 1000) {
    const chunk = users.slice(i, i + 1000);
    const column = <K extends keyof FleetUser>(k: K) => chunk.map((u) => u[k]);
    await db.query(
      `INSERT INTO users (park_id, yandex_uid, login, name, phone, email, role_id, is_enabled, is_yandex_team)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::bool[])`,
      [column('park_id'), column('yandex_uid'), column('login'), column('name'), column('phone'), column('email'), column('role_id'), column('is_enabled'), column('is_yandex_team')],
    );
  }
}

/** The parks, their roles and `count` users; returns the users inserted. */
export async function seedFleet(pool: pg.Pool, gen: FleetGenerator, count: number): Promise<FleetUser[]> {
  const users = Array.from({ length: count }, () => gen.user());
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('INSERT INTO parks (id, name) SELECT * FROM unnest($1::text[], $2::text[])', [PARKS.map((p) => p.id), PARKS.map((p) => p.name)]);
    const roles = PARKS.flatMap((p) => ROLES.map((r) => ({ id: roleId(p.id, r.key), park_id: p.id, name: r.name })));
    await client.query('INSERT INTO roles (id, park_id, name) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])', [
      roles.map((r) => r.id),
      roles.map((r) => r.park_id),
      roles.map((r) => r.name),
    ]);
    await insertUsers(client, users);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
  return users;
}

/** Ids of up to `n` users of these parks matching `where`, drawn at random. */
export async function sampleUsers(pool: pg.Pool, parkIds: string[], n: number, where = 'true'): Promise<Array<{ id: string; park_id: string; role_id: string | null }>> {
  const { rows } = await pool.query(`SELECT id, park_id, role_id FROM users WHERE park_id = ANY($1) AND (${where}) ORDER BY random() LIMIT $2`, [parkIds, n]);
  return rows;
}

/** Runs `work` over `items` in transactions of `size`, the way a dispatcher's edits arrive: many small commits. */
export async function inSmallTransactions<T>(pool: pg.Pool, items: T[], size: number, work: (client: pg.PoolClient, item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      for (const item of items.slice(i, i + size)) await work(client, item);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  }
}
