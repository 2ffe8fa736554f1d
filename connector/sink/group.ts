// A users batch as the applier needs it: which uids to bring to the database's state, the rows the events carried
// (judged by the applier against the parks as the table has them under the uids' locks), whose profile changed,
// and per-park progress. Pure: no park settings are consulted here, so no event is dropped on a stale view.
// Table-tested in test/sink-group.test.ts.
import type { DecodedEnvelope } from '../events.js';
import type { TouchedRow } from '../sync/applier.js';
import { profileChanged, type UserRow } from '../sync/desired.js';
import type { ParkProgress } from '../sync/store.js';

export interface DecodedMessage<M> {
  message: M;
  /** null for a tombstone. */
  env: DecodedEnvelope | null;
}

export interface UsersBatch<M> {
  /** uids to sync, in first-seen order: every uid an event's old or new row carries, whatever its park. */
  uids: string[];
  /** The (park, uid) of each event's old and new row: the applier names the keys of those that sync. */
  touched: TouchedRow[];
  profileChanged: Set<string>;
  /** The events behind each uid: dead-lettered together if the call center refuses the uid for good. */
  eventsByUid: Map<string, DecodedMessage<M>[]>;
  /** Per park of the events' rows; only parks that sync are recorded (store.recordProgress asks the table). */
  progress: Map<string, ParkProgress>;
  /** The commit LSN of a truncate in the batch: every park's users must be brought to the (now empty) table's state. */
  truncatedAt: string | null;
}

const asUser = (row: Record<string, unknown> | null): UserRow | null => (row ? (row as unknown as UserRow) : null);

export function groupUsersBatch<M>(decoded: readonly DecodedMessage<M>[]): UsersBatch<M> {
  const batch: UsersBatch<M> = { uids: [], touched: [], profileChanged: new Set(), eventsByUid: new Map(), progress: new Map(), truncatedAt: null };
  const progressOf = (parkId: string) => {
    let p = batch.progress.get(parkId);
    if (!p) batch.progress.set(parkId, (p = { parkId, events: 0, skippedNoUid: 0, deadLettered: 0, lastLsn: null, lastCommitTsMs: null }));
    return p;
  };
  const touched = new Map<string, TouchedRow>();
  for (const item of decoded) {
    const { env } = item;
    if (!env) continue; // tombstone: the delete before it carried the change
    if (env.op === 't') {
      batch.truncatedAt = env.source.lsn;
      continue;
    }
    const before = asUser(env.before);
    const after = asUser(env.after);
    const uids = [...new Set([before?.yandex_uid, after?.yandex_uid].filter((u): u is string => Boolean(u)))];
    for (const parkId of new Set([before?.park_id, after?.park_id].filter((p): p is string => Boolean(p)))) {
      const p = progressOf(parkId);
      p.lastLsn = env.source.lsn;
      p.lastCommitTsMs = env.source.commit_ts_ms;
      if (uids.length === 0) p.skippedNoUid++;
      else p.events++;
    }
    if (uids.length === 0) continue;
    for (const row of [before, after]) {
      if (!row?.yandex_uid || !row.park_id) continue;
      // Of one (park, uid), the earliest commit is kept: a park turned off after it settles the uid.
      const key = `${row.park_id}\u0000${row.yandex_uid}`;
      const commitTsMs = env.source.commit_ts_ms ?? null;
      const known = touched.get(key);
      if (!known || (known.commitTsMs !== null && (commitTsMs === null || commitTsMs < known.commitTsMs))) touched.set(key, { parkId: row.park_id, uid: row.yandex_uid, commitTsMs });
    }
    if (profileChanged(before, after) && after?.yandex_uid) batch.profileChanged.add(after.yandex_uid);
    for (const uid of uids) {
      const events = batch.eventsByUid.get(uid);
      if (events) events.push(item);
      else {
        batch.eventsByUid.set(uid, [item]);
        batch.uids.push(uid);
      }
    }
  }
  batch.touched = [...touched.values()];
  return batch;
}
