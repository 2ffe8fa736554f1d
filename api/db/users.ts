// SQL of the users list: one keyset page of a park's users, a plain scan of the index users (park_id, id) that stops
// after limit + 1 rows. Node writes the JSON: PostgreSQL's json_agg and to_char cost several times the scan. Each row
// comes as one text, its record, because node-postgres decoding one string a column cost the api more than the rest
// of the request.
import pg from 'pg';
import type { UserRow } from '../../connector/sync/desired.js';
import { parseRecord } from './record-text.js';

export interface UsersPageQuery {
  parkId: string;
  afterId: string | null;
  limit: number;
  updatedSince: Date | null;
  includeDisabled: boolean;
}

/** A user as the api answers it (the User schema): the row the sync reads, with its times in the api's format. */
export interface UserView extends UserRow {
  created_at: string | null;
  updated_at: string | null;
}

export interface UsersPage {
  /** The page's users, in id order. */
  users: UserView[];
  /** Id of the page's last user when another page follows, else null. */
  nextAfterId: string | null;
}

export interface UsersPages {
  /** Up to `limit` users of the park with id > afterId. Filters only narrow; the walk stays on (park_id, id). */
  page(q: UsersPageQuery): Promise<UsersPage>;
}

const BAD_TIME = (text: string) => new Error(`unexpected timestamp text ${JSON.stringify(text)} (the session's DateStyle must be ISO)`);

/**
 * A timestamp's text (DateStyle ISO, which node-postgres assumes too) in the api's time format, exactly as
 * to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') writes it: milliseconds truncated, not rounded; a BC year without
 * its era; infinity as null.
 */
export function apiTime(text: string): string | null {
  const space = text.indexOf(' ');
  if (space < 0) {
    if (text === 'infinity' || text === '-infinity') return null;
    throw BAD_TIME(text);
  }
  if (text.charCodeAt(space + 3) !== 58 /* : */) throw BAD_TIME(text);
  const fraction = space + 9;
  // PostgreSQL drops a fraction's trailing zeros: ".5" is 500 ms, none is 0.
  const ms = text.charCodeAt(fraction) === 46 /* . */ ? text.slice(fraction + 1, fraction + 4).padEnd(3, '0') : '000';
  return `${text.slice(0, space)}T${text.slice(space + 1, fraction)}.${ms}Z`;
}

// The page's columns, in the order of each row's record.
const COLUMNS = `id, park_id, yandex_uid, login, name, phone, email, role_id, is_enabled, is_yandex_team,
                 created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at`;
const COLUMN_COUNT = 12;

function required(fields: Array<string | null>, i: number): string {
  const value = fields[i];
  if (value === null || value === undefined) throw new Error(`a users record has no value in column ${i + 1}`);
  return value;
}

/** The user of one row's record: the strings as they are, booleans from t and f, the times in the api's format. */
function userOf(record: string): UserView {
  const fields = parseRecord(record, COLUMN_COUNT);
  const created = fields[10] ?? null;
  const updated = fields[11] ?? null;
  return {
    id: required(fields, 0),
    park_id: required(fields, 1),
    yandex_uid: fields[2] ?? null,
    login: required(fields, 3),
    name: required(fields, 4),
    phone: fields[5] ?? null,
    email: fields[6] ?? null,
    role_id: fields[7] ?? null,
    is_enabled: required(fields, 8) === 't',
    is_yandex_team: required(fields, 9) === 't',
    created_at: created === null ? null : apiTime(created),
    updated_at: updated === null ? null : apiTime(updated),
  };
}

/**
 * Page sizes whose statements each connection prepares: PostgreSQL then plans a walk once instead of on every page.
 * The first ones seen, no more, since every page size is a statement of its own on every connection.
 */
const PREPARED_PAGE_SIZES = 16;

export function usersPages(pool: pg.Pool): UsersPages {
  const preparedSizes = new Set<number>();
  return {
    async page(q) {
      if (!Number.isInteger(q.limit) || q.limit < 1) throw new Error(`page size ${q.limit} is not a positive integer`);
      const params: unknown[] = [q.parkId];
      const where = ['park_id = $1'];
      if (q.afterId !== null) where.push(`id > $${params.push(q.afterId)}::uuid`);
      if (q.updatedSince !== null) where.push(`updated_at >= $${params.push(q.updatedSince.toISOString())}::timestamptz`);
      if (!q.includeDisabled) where.push('is_enabled');
      // The limit is written into the statement: with a parameter, PostgreSQL's plan for any page would assume a tenth
      // of the park, so it would never keep one. One row more than the page tells whether another page follows.
      const text = `SELECT u::text FROM (SELECT ${COLUMNS} FROM users WHERE ${where.join(' AND ')} ORDER BY id LIMIT ${q.limit + 1}) u`;
      // How many rows pass updated_since depends on its value: those walks are planned for it on every page.
      let name: string | undefined;
      if (q.updatedSince === null && (preparedSizes.has(q.limit) || preparedSizes.size < PREPARED_PAGE_SIZES)) {
        preparedSizes.add(q.limit);
        name = `users_page_${q.afterId === null ? 'first' : 'next'}_${q.includeDisabled ? 'all' : 'enabled'}_${q.limit}`;
      }
      // Rows as arrays: the one column needs no object of its own.
      const { rows } = await pool.query<[string]>({ ...(name ? { name } : {}), text, values: params, rowMode: 'array' });
      const more = rows.length > q.limit;
      if (more) rows.pop();
      const users = rows.map((row) => userOf(row[0]));
      return { users, nextAfterId: more ? users[users.length - 1]!.id : null };
    },
  };
}

export async function parkExists(pool: pg.Pool, parkId: string): Promise<boolean> {
  return (await pool.query('SELECT 1 FROM parks WHERE id = $1', [parkId])).rowCount === 1;
}
