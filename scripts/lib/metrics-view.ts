// Reads a running fleet-sync's /metrics for the demo's display and summary: totals of counters, a gauge, and
// percentiles of the commit-to-applied histogram.
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format';

export interface MetricsView {
  eventsProduced: number;
  applies: number;
  deadLetters: number;
  callCenterRetries: number;
  skippedNoUid: number;
  sweepCorrections: number;
  replicationLagBytes: number | null;
  /** commit → applied, seconds: the upper bound of the bucket holding the quantile (null before any sample) */
  latencyP50: number | null;
  latencyP95: number | null;
  latencyCount: number;
}

function total(families: Map<string, MetricFamily>, name: string): number {
  return (families.get(name)?.metrics ?? []).reduce((sum, m) => sum + Number(m.value ?? 0), 0);
}

function quantile(family: MetricFamily | undefined, q: number): number | null {
  const sample = family?.metrics[0];
  if (!sample?.buckets || !Number(sample.count)) return null;
  const target = q * Number(sample.count);
  const bounds = Object.entries(sample.buckets)
    .map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), Number(n)] as const)
    .sort((a, b) => a[0] - b[0]);
  return bounds.find(([, n]) => n >= target)?.[0] ?? null;
}

export function readMetrics(text: string): MetricsView {
  const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  const lag = families.get('fleet_sync_replication_lag_bytes')?.metrics[0]?.value;
  const latency = families.get('fleet_sync_commit_to_applied_seconds');
  return {
    eventsProduced: total(families, 'fleet_sync_events_produced_total'),
    applies: total(families, 'fleet_sync_applies_total'),
    deadLetters: total(families, 'fleet_sync_dead_letters_total'),
    callCenterRetries: total(families, 'fleet_sync_call_center_retries_total'),
    skippedNoUid: total(families, 'fleet_sync_skipped_no_uid_total'),
    sweepCorrections: total(families, 'fleet_sync_sweep_corrections_total'),
    replicationLagBytes: lag === undefined ? null : Number(lag),
    latencyP50: quantile(latency, 0.5),
    latencyP95: quantile(latency, 0.95),
    latencyCount: Number(latency?.metrics[0]?.count ?? 0),
  };
}
