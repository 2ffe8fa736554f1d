// A backlog's uids are applied in lock chunks side by side: one uid whose call hangs holds its own chunk, not every
// uid after it (a batch of a partition's backlog, or a retry round of parked uids, under a slow call center).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers.js';
import { seedPark, startSyncOnly, type SyncOnly } from './pipeline.js';

describe('applier: lock chunks in flight side by side', () => {
  let s: SyncOnly;

  beforeAll(async () => {
    // A hanging call times out within a second and is tried again, without end while the call center hangs.
    s = await startSyncOnly({ CALL_CENTER_TIMEOUT_MS: '1000', CALL_CENTER_MAX_ATTEMPTS: '1000', CALL_CENTER_RETRY_BASE_MS: '20', CALL_CENTER_RETRY_MAX_MS: '200' });
  });
  afterAll(async () => s?.stop());

  it('a uid whose calls hang holds only its own chunk: the chunks after it are applied meanwhile, and it follows once the call center answers', async () => {
    // 600 uids: three chunks of the applier's 256, the hanging uid in the first.
    const { db, sim, stack } = s;
    const park = await seedPark(db.pool, { users: 600 });
    const [stuck, ...others] = park.uids;
    sim.setFaults({ slowUids: [stuck!], slowMs: 60_000 });
    let settled = false;
    const run = stack.sync.applier.syncUids(park.uids, { cause: { kind: 'replay', events: [] }, chunksInFlight: 2 }).finally(() => (settled = true));
    // Awaited below; a failed wait must not leave its rejection unhandled once the pool is closed.
    run.catch(() => {});
    try {
      await waitFor(() => others.every((uid) => sim.rolesOf(park.projectId, uid).length === 1), { what: 'every other uid granted while one call hangs', timeoutMs: 30_000 });
      expect(settled).toBe(false);
      expect(sim.rolesOf(park.projectId, stuck!)).toEqual([]);
    } finally {
      sim.setFaults({ slowUids: [], slowMs: 0 });
    }
    const outcomes = await run;
    expect(outcomes.get(stuck!)).toMatchObject({ granted: 1 });
    expect(sim.rolesOf(park.projectId, stuck!)).toEqual(['cc-operator']);
    expect([...outcomes.values()].filter((o) => o.granted === 1)).toHaveLength(600);
  });
});
