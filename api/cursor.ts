// Opaque keyset cursors of the api's lists: base64url of the walk's scope, its filters and the last key seen, plus a
// check tag. The tag catches a corrupted or hand-edited cursor; it is no secret, because a cursor grants nothing the
// token cannot already read. Each list has its own tag key, so a cursor of one list is refused by another.
import { createHmac } from 'node:crypto';
import { FleetSyncError } from '../connector/errors.js';

export interface CursorPosition {
  /** What the walk is over (the users list's park; a fixed name where the filters say it all). */
  scope: string;
  /** Filters of the walk: a cursor is only valid for the walk that made it. */
  filter: string;
  lastId: string;
}

export interface KeysetCursor {
  encode(position: CursorPosition): string;
  /** The last key seen; throws BAD_CURSOR unless the cursor is intact and belongs to this scope and filter. */
  decode(cursor: string, scope: string, filter: string): string;
}

export interface KeysetCursorOptions {
  /** Distinct per list. */
  tagKey: string;
  /** Whether a decoded last key is one the list's query accepts (a forged one must be a 400, not a database error). */
  validKey(key: string): boolean;
  /** The reason given for a cursor of another scope, and for one of other filters. */
  otherScope: string;
  otherFilter: string;
}

export function keysetCursor(options: KeysetCursorOptions): KeysetCursor {
  const tag = (payload: string) => createHmac('sha256', options.tagKey).update(payload).digest('base64url').slice(0, 16);
  return {
    encode(position) {
      const payload = JSON.stringify([position.scope, position.filter, position.lastId]);
      return `${Buffer.from(payload).toString('base64url')}.${tag(payload)}`;
    },
    decode(cursor, scope, filter) {
      const bad = (why: string) => new FleetSyncError('BAD_CURSOR', `cursor is not valid for this request: ${why}`);
      const [encoded, check, extra] = cursor.split('.');
      if (!encoded || !check || extra !== undefined) throw bad('malformed');
      const payload = Buffer.from(encoded, 'base64url').toString('utf8');
      if (tag(payload) !== check) throw bad('damaged');
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload);
      } catch {
        throw bad('damaged');
      }
      if (!Array.isArray(parsed) || parsed.length !== 3 || typeof parsed[2] !== 'string' || !options.validKey(parsed[2])) throw bad('damaged');
      if (parsed[0] !== scope) throw bad(options.otherScope);
      if (parsed[1] !== filter) throw bad(options.otherFilter);
      return parsed[2];
    },
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The users list's cursor (POST /v1/users/list): scope is the park, the key a user id. */
export const usersCursor = keysetCursor({
  // Unchanged since v1: cursors handed out before stay valid.
  tagKey: 'fleet-sync users cursor v1',
  validKey: (key) => UUID.test(key),
  otherScope: 'it belongs to another park',
  otherFilter: 'it was made with other filters (updated_since, include_disabled)',
});

export interface UsersCursorPosition {
  parkId: string;
  filter: string;
  lastId: string;
}

export function encodeCursor(position: UsersCursorPosition): string {
  return usersCursor.encode({ scope: position.parkId, filter: position.filter, lastId: position.lastId });
}

/** Throws BAD_CURSOR unless the cursor is intact and belongs to this park and filter. */
export function decodeCursor(cursor: string, parkId: string, filter: string): string {
  return usersCursor.decode(cursor, parkId, filter);
}

const BIGINT_MAX = 2n ** 63n - 1n;

/** The audit trail's cursor (GET /v1/audit): the key is the last row id seen (a bigint, as text). */
export const auditCursor = keysetCursor({
  tagKey: 'fleet-sync audit cursor v1',
  validKey: (key) => /^[1-9][0-9]{0,18}$/.test(key) && BigInt(key) <= BIGINT_MAX,
  otherScope: 'it belongs to another list',
  otherFilter: 'it was made with other filters (uid, project_id, park_id, since, until)',
});
