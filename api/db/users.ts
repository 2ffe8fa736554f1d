// SQL of the users list: one keyset page of a park's users over the index users (park_id, id).
// PostgreSQL renders the page as JSON text: parsing 100 rows with dates in Node costs more than the whole query.
import type pg from 'pg';

export interface UsersPageQuery {
  parkId: string;
  afterId: string | null;
  limit: number;
  updatedSince: Date | null;
  includeDisabled: boolean;
}

export interface UsersPage {
  /** JSON array text of the page's users, in id order, with the api's field names and ISO timestamps. */
  usersJson: string;
  /** Id of the page's last user when another page follows, else null. */
  nextAfterId: string | null;
  empty: boolean;
}

const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** Up to `limit` users of the park with id > afterId. Filters only narrow; the walk stays on (park_id, id). */
export async function usersPage(pool: pg.Pool, q: UsersPageQuery): Promise<UsersPage> {
  const params: unknown[] = [q.parkId, q.limit];
  const where = ['park_id = $1'];
  if (q.afterId !== null) where.push(`id > $${params.push(q.afterId)}::uuid`);
  if (q.updatedSince !== null) where.push(`updated_at >= $${params.push(q.updatedSince.toISOString())}::timestamptz`);
  if (!q.includeDisabled) where.push('is_enabled');
  // One row more than the page tells whether another page follows, without a count.
  const { rows } = await pool.query<{ fetched: number; last_id: string | null; users: string }>(
    `SELECT count(*)::int AS fetched,
            (array_agg(id ORDER BY id))[$2::int]::text AS last_id,
            coalesce(json_agg(json_build_object(
              'id', id, 'park_id', park_id, 'yandex_uid', yandex_uid, 'login', login, 'name', name, 'phone', phone,
              'email', email, 'role_id', role_id, 'is_enabled', is_enabled, 'is_yandex_team', is_yandex_team,
              'created_at', ${iso('created_at')}, 'updated_at', ${iso('updated_at')}) ORDER BY id) FILTER (WHERE n <= $2::int), '[]')::text AS users
       FROM (SELECT *, row_number() OVER (ORDER BY id) AS n
               FROM (SELECT * FROM users WHERE ${where.join(' AND ')} ORDER BY id LIMIT $2::int + 1) page) numbered`,
    params,
  );
  const row = rows[0]!;
  return { usersJson: row.users, nextAfterId: row.fetched > q.limit ? row.last_id : null, empty: row.fetched === 0 };
}

export async function parkExists(pool: pg.Pool, parkId: string): Promise<boolean> {
  return (await pool.query('SELECT 1 FROM parks WHERE id = $1', [parkId])).rowCount === 1;
}
