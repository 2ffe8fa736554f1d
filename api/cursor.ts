// The users list's opaque keyset cursor: base64url of the park and the last user id seen, plus a check tag.
// The tag catches a corrupted or hand-edited cursor; it is no secret, because a cursor grants nothing the token cannot already read.
import { createHmac } from 'node:crypto';
import { FleetSyncError } from '../connector/errors.js';

const TAG_KEY = 'fleet-sync users cursor v1';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface CursorPosition {
  parkId: string;
  /** Filters of the walk: a cursor is only valid for the walk that made it. */
  filter: string;
  lastId: string;
}

const tag = (payload: string) => createHmac('sha256', TAG_KEY).update(payload).digest('base64url').slice(0, 16);

export function encodeCursor(position: CursorPosition): string {
  const payload = JSON.stringify([position.parkId, position.filter, position.lastId]);
  return `${Buffer.from(payload).toString('base64url')}.${tag(payload)}`;
}

/** Throws BAD_CURSOR unless the cursor is intact and belongs to this park and filter. */
export function decodeCursor(cursor: string, parkId: string, filter: string): string {
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
  if (!Array.isArray(parsed) || parsed.length !== 3 || typeof parsed[2] !== 'string' || !UUID.test(parsed[2])) throw bad('damaged');
  if (parsed[0] !== parkId) throw bad('it belongs to another park');
  if (parsed[1] !== filter) throw bad('it was made with other filters (updated_since, include_disabled)');
  return parsed[2];
}
