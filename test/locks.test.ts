// The in-process uid lock: one holder per key, in order; a waiter whose signal aborts stops waiting at once and
// never lets a later caller past the holder it waited for.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createKeyedLock } from '../connector/sync/locks.js';

/** A holder of `keys` until the returned release is called; resolves once it holds them. */
async function hold(lock: ReturnType<typeof createKeyedLock>, keys: string[]) {
  let release!: () => void;
  let held!: () => void;
  const holding = new Promise<void>((r) => (held = r));
  const done = lock.withKeys(keys, () => {
    held();
    return new Promise<void>((r) => (release = r));
  });
  await holding;
  return { release: () => release(), done };
}

describe('keyed lock', () => {
  it('runs the holders of one key one after another, in the order they asked', async () => {
    const lock = createKeyedLock();
    const order: string[] = [];
    const first = await hold(lock, ['u1', 'u2']);
    const second = lock.withKeys(['u2'], async () => void order.push('second'));
    const third = lock.withKeys(['u2', 'u3'], async () => void order.push('third'));
    const other = lock.withKeys(['u9'], async () => void order.push('other key'));
    await other;
    expect(order).toEqual(['other key']);
    first.release();
    await Promise.all([first.done, second, third]);
    expect(order).toEqual(['other key', 'second', 'third']);
  });

  it('a waiter whose signal aborts rejects with its reason at once, runs nothing, and a caller after it still waits for the holder', async () => {
    const lock = createKeyedLock();
    const events: string[] = [];
    const holder = await hold(lock, ['u1']);
    const stop = new AbortController();
    let ran = false;
    const aborted = lock.withKeys(['u0', 'u1'], async () => void (ran = true), stop.signal);
    // Every pending promise has settled by the next turn: the waiter holds u0 and waits for u1.
    const turn = () => new Promise((r) => setImmediate(r));
    await turn();
    stop.abort(new Error('the group is rebalancing'));
    await expect(aborted).rejects.toThrow('the group is rebalancing');
    expect(ran).toBe(false);
    // It let go of u0, taken before it waited for u1: another caller takes it now.
    await lock.withKeys(['u0'], async () => void events.push('u0 free'));
    // A caller that comes after the abort waits for the holder all the same.
    const next = lock.withKeys(['u1'], async () => void events.push('next ran'));
    await turn();
    expect(events).toEqual(['u0 free']);
    holder.release();
    await next;
    expect(events).toEqual(['u0 free', 'next ran']);
  });

  it('leaves no listener on the signal, which for a batch lives through thousands of calls', async () => {
    const lock = createKeyedLock();
    const signal = new AbortController().signal;
    const holder = await hold(lock, ['u1']);
    const waiting = lock.withKeys(['u0', 'u1', 'u2'], async () => getEventListeners(signal, 'abort').length, signal);
    await new Promise((r) => setImmediate(r));
    expect(getEventListeners(signal, 'abort')).toHaveLength(1);
    holder.release();
    // Once every key is held the lock stops listening, before the work runs.
    expect(await waiting).toBe(0);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('a signal already aborted takes no key at all', async () => {
    const lock = createKeyedLock();
    const stop = new AbortController();
    stop.abort(new Error('stopping'));
    await expect(lock.withKeys(['u1'], async () => 'ran', stop.signal)).rejects.toThrow('stopping');
    expect(await lock.withKeys(['u1'], async () => 'free')).toBe('free');
  });
});
