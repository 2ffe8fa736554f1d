// The timeline of chaos's last fault: when the broker answered again, when the group and the stages came back
// (from their pino logs), when the source and the sink caught up, and when the call center converged. Times are
// epoch ms; the printed timeline counts from the moment the broker answered again.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import type pg from 'pg';
import { sleep } from '../../connector/time.js';
import { partitionsBehind } from './group-offsets.js';

/** A moment of the recovery: what happened, to whom (a stage, chaos itself), and when. */
export interface Mark {
  at: number;
  who: string;
  what: string;
  /** How many times a stage logged it since the fault (its first time is `at`). */
  count?: number;
}

/**
 * When the broker answers again after a restart: the first metadata answer (a fresh connection, no client retries)
 * that names a leader for every partition of `topics`. Polled every 100 ms until `signal` aborts.
 */
export async function brokerAnswers(brokers: string[], topics: string[], signal: AbortSignal): Promise<number | null> {
  const probe = new Kafka({ brokers, clientId: 'chaos-probe', logLevel: logLevel.NOTHING, connectionTimeout: 1_000, requestTimeout: 2_000, retry: { retries: 0 } });
  while (!signal.aborted) {
    const admin = probe.admin();
    try {
      await admin.connect();
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
      if (metadata.length === topics.length && metadata.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return Date.now();
    } catch {
      /* not yet */
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await sleep(100, signal);
  }
  return null;
}

/**
 * Watches what the recovery is waiting for, every 250 ms, marking each change: the group's state and members (the
 * coordinator answering at all is the first mark), the source caught up with the WAL as it was when the load
 * stopped, the group's committed offsets at the topics' ends, and the sink's work queue (parked uids, park sweeps).
 */
export function watchRecovery(deps: { brokers: string[]; db: pg.Pool; groupId: string; slot: string; topics: string[]; marks: Mark[] }): {
  /** The load stopped: from now on, catching up is measured against the WAL and the topics as they are now. */
  loadStopped(): Promise<void>;
  stop(): Promise<void>;
} {
  const { db, groupId, marks } = deps;
  // A few quick retries: without any, kafkajs fails to find the group coordinator even when the broker is up.
  const retry = { retries: 3, initialRetryTime: 50, maxRetryTime: 200 };
  const kafka = new Kafka({ brokers: deps.brokers, clientId: 'chaos-watch', logLevel: logLevel.NOTHING, connectionTimeout: 1_000, requestTimeout: 3_000, retry });
  const stopping = new AbortController();
  const mark = (what: string) => marks.push({ at: Date.now(), who: 'chaos', what });
  let walAtStop: string | null = null;
  let group = '';
  let sourceCaughtUp = false;
  let sinkCaughtUp = false;
  let queue = '';

  const groupLoop = (async () => {
    let coordinator = false;
    while (!stopping.signal.aborted) {
      const admin = kafka.admin();
      try {
        await admin.connect();
        const { groups } = await admin.describeGroups([groupId]);
        const g = groups[0];
        if (g) {
          if (!coordinator) mark('the group coordinator answers');
          coordinator = true;
          const now = `group ${g.state}, ${g.members.length} member${g.members.length === 1 ? '' : 's'}`;
          if (now !== group) mark(now);
          group = now;
        }
      } catch {
        /* the coordinator is not there yet, or loading */
      } finally {
        await admin.disconnect().catch(() => {});
      }
      await sleep(250, stopping.signal);
    }
  })();

  const catchUpLoop = async () => {
    const admin = kafka.admin();
    while (!stopping.signal.aborted && !(sourceCaughtUp && sinkCaughtUp && queue === 'work queue empty')) {
      try {
        if (!sourceCaughtUp) {
          const { rows } = await db.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [deps.slot, walAtStop]);
          if (rows[0]?.ok) {
            sourceCaughtUp = true;
            mark('source caught up (slot confirmed past the WAL at load stop)');
          }
        }
        if (!sinkCaughtUp) {
          await admin.connect();
          const behind = await partitionsBehind(admin, groupId, deps.topics);
          if (sourceCaughtUp && behind === 0) {
            sinkCaughtUp = true;
            mark('sink caught up (group offsets at the topics’ ends)');
          }
        }
        const { rows } = await db.query<{ retries: number; sweeps: number }>(
          'SELECT (SELECT count(*)::int FROM call_center_retries) AS retries, (SELECT count(*)::int FROM call_center_park_sweeps) AS sweeps',
        );
        const now = rows[0]!.retries + rows[0]!.sweeps === 0 ? 'work queue empty' : `work queue: ${rows[0]!.retries} parked uids, ${rows[0]!.sweeps} park sweeps`;
        if (now !== queue && (now === 'work queue empty' || queue === '' || queue === 'work queue empty')) mark(now);
        queue = now;
      } catch {
        /* the broker or the database is not answering yet */
      }
      await sleep(250, stopping.signal);
    }
    await admin.disconnect().catch(() => {});
  };
  let catchingUp: Promise<void> = Promise.resolve();

  return {
    async loadStopped() {
      const { rows } = await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      walAtStop = rows[0]!.lsn;
      catchingUp = catchUpLoop();
    },
    async stop() {
      stopping.abort();
      await Promise.all([groupLoop, catchingUp]);
    },
  };
}

/** A stage's log lines that tell the recovery's story: messages (or their beginnings) → how the timeline says them. */
const STORY: [string, string][] = [
  ['source is the leader for this slot', 'source: leader for the slot'],
  ['Kafka not reachable to create topics; retrying', 'source: Kafka not reachable (creating topics)'],
  ['replication session ended; reconnecting', 'source: replication session ended'],
  ['streaming', 'source: replication session started'],
  ['publishing to Kafka failed; retrying', 'source: a publish failed'],
  ['reading the stream mark back', 'source: reading the stream mark back'],
  ['Kafka acknowledged after retrying', 'source: Kafka acknowledged a retried publish'],
  ['first batch of the session published', 'source: first batch of the session published'],
  ['Kafka fenced the producer', 'source: producer fenced, starting a new one'],
  ['creating the topics failed; retrying', 'sink: Kafka not reachable (creating topics)'],
  ['joining the consumer group failed; retrying', 'sink: joining the group failed'],
  ['the group consumer crashed', 'sink: group consumer crashed'],
  ['Restarting the consumer in', 'sink: kafkajs restarts the consumer'],
  ['the consumer group is rebalancing', 'sink: group rebalancing'],
  ['joined the consumer group', 'sink: joined the group'],
  ['sink consuming', 'sink: consuming'],
  ['first batch after joining done', 'sink: first batch after joining done'],
  ['batch failed; retrying', 'sink: a batch failed'],
  ['park changed: sweeping it', 'sink: park sweep started'],
  ['sweep of a changed park failed; retrying it later', 'sink: park sweep failed, deferred'],
  ['park asked for again while being swept', 'sink: park sweep superseded'],
];
/** A sweep's end, whatever it found: the ones a park change asked for belong to the story (not the interval's). */
const SWEEP_DONE = ['sweep corrected drift', 'sweep did the work of', 'sweep found everything in sync'];

/**
 * The story lines each stage logged since `since`, one mark per (stage, line) at its first time, with a count.
 * `files` maps a log file's name to the stage it belongs to.
 */
export function stageMarks(logDir: string, since: number): Mark[] {
  const marks = new Map<string, Mark>();
  for (const file of readdirSync(logDir).filter((f) => f.endsWith('.log'))) {
    const who = file.replace(/\.log$/, '').replace(/-/g, ' ');
    for (const line of readFileSync(join(logDir, file), 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      let entry: { time?: number; msg?: string; module?: string; park_id?: string; reason?: string };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      if (!entry.time || entry.time < since || !entry.msg) continue;
      const sweepDone = SWEEP_DONE.some((m) => entry.msg!.startsWith(m)) && entry.reason !== 'interval';
      const story: [string, string] | undefined = sweepDone ? [entry.msg, `sink: park sweep done (${entry.reason})`] : STORY.find(([start]) => entry.msg!.startsWith(start));
      if (!story || (story[0] === 'streaming' && entry.msg !== 'streaming')) continue;
      const what = story[1].replace(/^\w+: /, '') + (entry.park_id ? ` (${entry.park_id})` : '');
      const key = `${who}\u0000${what}`;
      const known = marks.get(key);
      if (known) known.count = (known.count ?? 1) + 1;
      else marks.set(key, { at: entry.time, who, what });
    }
  }
  return [...marks.values()];
}

/** The marks in time order, each as seconds from `origin` (negative before it). */
export function formatTimeline(marks: Mark[], origin: number): string[] {
  return [...marks]
    .sort((a, b) => a.at - b.at)
    .map((m) => {
      const s = (m.at - origin) / 1000;
      const when = `${s >= 0 ? '+' : '−'}${Math.abs(s).toFixed(1)} s`.padStart(9);
      return `${when}  ${m.who.padEnd(15)} ${m.what}${m.count && m.count > 1 ? ` (×${m.count})` : ''}`;
    });
}
