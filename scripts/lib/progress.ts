// The demo's progress display: what flows (events produced, applies, lag) and each park's state, from the api's
// status route and /metrics. On a terminal one block redraws in place; elsewhere (CI, a pipe) plain lines.
import { createLogUpdate } from 'log-update';
import type { MetricsView } from './metrics-view.js';

/** The parts of GET /v1/sync/call_center/parks the display shows. */
export interface ParkStatus {
  park_id: string;
  project_id: string;
  enabled: boolean;
  users_granted: number;
  last_event: { events_applied: number; dead_lettered: number } | null;
  last_sweep: { reason: string; finished_at: string | null; drift: number } | null;
  lag_seconds: number | null;
}

export interface SourceStatus {
  state: string;
  lag_bytes: number | null;
}

export interface Snapshot {
  metrics: MetricsView;
  parks: ParkStatus[];
  source: SourceStatus;
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const secs = (s: number | null | undefined) => (s === null || s === undefined ? '–' : s < 10 ? `${s.toFixed(2)} s` : `${fmt(s, 1)} s`);
const bytes = (n: number | null) => (n === null ? '–' : n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1024 ** 2).toFixed(1)} MB`);

export interface Progress {
  /** A line that stays (a step done, a figure). */
  note(line: string): void;
  /** What the demo is doing now. */
  phase(text: string): void;
  update(snapshot: Snapshot): void;
  /** Leaves the last block on screen and stops redrawing. */
  stop(): void;
}

export function createProgress(out: NodeJS.WriteStream, startedAt = Date.now()): Progress {
  const tty = Boolean(out.isTTY) && process.env.TERM !== 'dumb';
  const draw = tty ? createLogUpdate(out, { showCursor: true }) : null;
  let phase = 'starting';
  let phaseAt = Date.now();
  let last: Snapshot | null = null;
  let previous: { at: number; produced: number } | null = null;
  let rate = 0;
  let lastPlain = '';
  let lastPlainAt = 0;
  const elapsed = () => `${((Date.now() - startedAt) / 1000).toFixed(1)}s`.padStart(6);

  function flowLine(s: Snapshot): string {
    const m = s.metrics;
    return [
      `source ${s.source.state}, slot lag ${bytes(s.source.lag_bytes)}`,
      `events produced ${fmt(m.eventsProduced)}${rate > 0 ? ` (${fmt(rate)}/s)` : ''}`,
      `call-center writes ${fmt(m.applies)}`,
      `commit→applied p50 ${m.latencyP50 === null ? '–' : `≤${secs(m.latencyP50)}`}`,
      `dead letters ${fmt(m.deadLetters)}`,
    ].join(' · ');
  }

  function block(): string {
    const lines = [`▸ ${phase} (${((Date.now() - phaseAt) / 1000).toFixed(1)} s)`];
    if (last) {
      lines.push(`  ${flowLine(last)}`);
      lines.push(`  ${'park'.padEnd(12)} ${'sync'.padEnd(4)} ${'project'.padEnd(16)} ${'granted'.padStart(8)} ${'events'.padStart(8)} ${'lag'.padStart(8)}  last sweep`);
      for (const p of last.parks) {
        const sweep = p.last_sweep ? `${p.last_sweep.reason}${p.last_sweep.finished_at ? '' : ' (running)'}, drift ${p.last_sweep.drift}` : '–';
        lines.push(
          `  ${p.park_id.padEnd(12)} ${(p.enabled ? 'on' : 'off').padEnd(4)} ${p.project_id.padEnd(16)} ${fmt(p.users_granted).padStart(8)} ${fmt(p.last_event?.events_applied ?? 0).padStart(8)} ${secs(p.lag_seconds).padStart(8)}  ${sweep}`,
        );
      }
    }
    return lines.join('\n');
  }

  function plain() {
    if (!last) return;
    const parks = last.parks.map((p) => `${p.park_id} ${p.enabled ? 'on' : 'off'} ${fmt(p.users_granted)} granted`).join(', ');
    const line = `${flowLine(last)} | ${parks || 'no park on yet'}`;
    // One line a second at most, and only when something moved.
    if (line === lastPlain || Date.now() - lastPlainAt < 1000) return;
    lastPlain = line;
    lastPlainAt = Date.now();
    out.write(`  ${elapsed()}  ${line}\n`);
  }

  return {
    note(line) {
      if (draw) {
        draw.clear();
        out.write(`${line}\n`);
        draw(block());
      } else out.write(`${line}\n`);
    },
    phase(text) {
      phase = text;
      phaseAt = Date.now();
      if (draw) draw(block());
      else out.write(`  ${elapsed()}  … ${text}\n`);
    },
    update(snapshot) {
      const now = Date.now();
      if (previous && now > previous.at) rate = ((snapshot.metrics.eventsProduced - previous.produced) * 1000) / (now - previous.at);
      if (!previous || now - previous.at >= 1000) previous = { at: now, produced: snapshot.metrics.eventsProduced };
      last = snapshot;
      if (draw) draw(block());
      else plain();
    },
    stop() {
      if (draw) {
        draw(block());
        draw.done();
      } else plain();
    },
  };
}
