// The pipeline's Prometheus metrics, one registry per process; every stage takes it in its dependencies.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  replicationLagBytes: Gauge<'slot'>;
  eventsProduced: Counter<'table' | 'op'>;
  applies: Counter<'kind'>;
  callCenterRetries: Counter<'reason'>;
  deadLetters: Counter<'topic'>;
  skippedNoUid: Counter;
  sweepCorrections: Counter<'kind'>;
  commitToAppliedSeconds: Histogram;
  parkedUids: Gauge;
  unexpectedErrors: Counter<'stage'>;
  httpRequests: Counter<'method' | 'route' | 'status'>;
  httpDurationSeconds: Histogram<'method' | 'route'>;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'fleet_sync_' });
  const registers = [registry];
  return {
    registry,
    replicationLagBytes: new Gauge({
      name: 'fleet_sync_replication_lag_bytes',
      help: 'WAL bytes between the server and the slot position the source confirmed',
      labelNames: ['slot'],
      registers,
    }),
    eventsProduced: new Counter({
      name: 'fleet_sync_events_produced_total',
      help: 'Change events Kafka acknowledged',
      labelNames: ['table', 'op'],
      registers,
    }),
    applies: new Counter({
      name: 'fleet_sync_applies_total',
      help: 'Writes the call center accepted (profile PUTs and role sets)',
      labelNames: ['kind'],
      registers,
    }),
    callCenterRetries: new Counter({
      name: 'fleet_sync_call_center_retries_total',
      help: 'Call-center requests retried after a transient failure',
      labelNames: ['reason'],
      registers,
    }),
    deadLetters: new Counter({
      name: 'fleet_sync_dead_letters_total',
      help: 'Events sent to the dead-letter topic',
      labelNames: ['topic'],
      registers,
    }),
    skippedNoUid: new Counter({
      name: 'fleet_sync_skipped_no_uid_total',
      help: 'User changes of enabled parks not sent because the user has no yandex_uid',
      registers,
    }),
    sweepCorrections: new Counter({
      name: 'fleet_sync_sweep_corrections_total',
      help: 'Differences the reconciliation sweep found and repaired (each one is something the stream missed)',
      labelNames: ['kind'],
      registers,
    }),
    commitToAppliedSeconds: new Histogram({
      name: 'fleet_sync_commit_to_applied_seconds',
      help: 'Time from the database commit of a change to the call center accepting it',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    parkedUids: new Gauge({
      name: 'fleet_sync_parked_uids',
      help: 'Uids whose call-center change failed transiently and waits for its retry (call_center_retries)',
      registers,
    }),
    unexpectedErrors: new Counter({
      name: 'fleet_sync_unexpected_errors_total',
      help: 'Errors of no known kind (logged with their stack); the work is retried, never skipped',
      labelNames: ['stage'],
      registers,
    }),
    httpRequests: new Counter({
      name: 'fleet_sync_http_requests_total',
      help: 'API requests answered',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
    httpDurationSeconds: new Histogram({
      name: 'fleet_sync_http_request_duration_seconds',
      help: 'API request duration',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
  };
}
