// A users batch as the applier needs it: which uids to bring to the database's state, which (project, uid) keys
// the events name, whose profile changed, and per-park progress. Pure: table-tested in test/sink-group.test.ts.
import type { DecodedEnvelope } from '../events.js';
import { managedKeys, profileChanged, type UserRow } from '../sync/desired.js';
import type { ParkProgress } from '../sync/store.js';
import type { ParkSync } from '../sync/desired.js';

export interface DecodedMessage<M> {
  message: M;
  /** null for a tombstone. */
  env: DecodedEnvelope | null;
}

export interface UsersBatch<M> {
  /** uids to sync, in first-seen order. */
  uids: string[];
  /** (project, uid) keys the events' rows reach through enabled parks (managed even once no row shows them). */
  managed: string[];
  profileChanged: Set<string>;
  /** The events behind each uid: dead-lettered together if the call center refuses the uid for good. */
  eventsByUid: Map<string, DecodedMessage<M>[]>;
  progress: Map<string, ParkProgress>;
  /** A truncate: every uid fleet-sync manages must be brought to the (now empty) table's state. */
  truncated: boolean;
  /** Events of enabled parks whose rows carry no yandex_uid: not sent, counted. */
  skippedNoUid: number;
}

const asUser = (row: Record<string, unknown> | null): UserRow | null => (row ? (row as unknown as UserRow) : null);

export function groupUsersBatch<M>(decoded: readonly DecodedMessage<M>[], parks: (parkId: string) => ParkSync | undefined): UsersBatch<M> {
  const batch: UsersBatch<M> = { uids: [], managed: [], profileChanged: new Set(), eventsByUid: new Map(), progress: new Map(), truncated: false, skippedNoUid: 0 };
  const progressOf = (parkId: string) => {
    let p = batch.progress.get(parkId);
    if (!p) batch.progress.set(parkId, (p = { parkId, events: 0, skippedNoUid: 0, deadLettered: 0, lastLsn: null, lastCommitTsMs: null }));
    return p;
  };
  const managed = new Set<string>();
  for (const item of decoded) {
    const { env } = item;
    if (!env) continue; // tombstone: the delete before it carried the change
    if (env.op === 't') {
      batch.truncated = true;
      continue;
    }
    const before = asUser(env.before);
    const after = asUser(env.after);
    const enabledParks = [before?.park_id, after?.park_id].filter((p): p is string => Boolean(p && parks(p)?.enabled));
    if (enabledParks.length === 0) continue; // neither side in a park that syncs
    const uids = [...new Set([before?.yandex_uid, after?.yandex_uid].filter((u): u is string => Boolean(u)))];
    for (const parkId of new Set(enabledParks)) {
      const p = progressOf(parkId);
      p.lastLsn = env.source.lsn;
      p.lastCommitTsMs = env.source.commit_ts_ms;
      if (uids.length === 0) p.skippedNoUid++;
      else p.events++;
    }
    if (uids.length === 0) {
      batch.skippedNoUid++;
      continue;
    }
    for (const key of managedKeys([before, after], parks)) managed.add(key);
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
  batch.managed = [...managed];
  return batch;
}
