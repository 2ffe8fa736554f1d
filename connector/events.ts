// Change events as plain data, the middle of the pipeline: the decoder makes them, the publisher ships them.
export const CAPTURED_TABLES = ['users', 'roles', 'call_center_parks'] as const;
export type CapturedTable = (typeof CAPTURED_TABLES)[number];

export const PRIMARY_KEYS: Record<CapturedTable, readonly string[]> = {
  users: ['id'],
  roles: ['id'],
  call_center_parks: ['park_id'],
};

export type Op = 'c' | 'u' | 'd' | 'r' | 't';
export type Row = Record<string, unknown>;

export interface SourceInfo {
  db: string;
  schema: string;
  table: CapturedTable;
  /** Commit LSN as text (0/16B3748); for snapshot reads, the slot's consistent point. */
  lsn: string;
  tx_id: number | null;
  commit_ts_ms: number | null;
  snapshot: boolean;
}

/**
 * Where an event stands in the stream: its transaction's commit LSN, then its place in the transaction. A
 * replayed transaction yields the same positions, so a restart can skip what Kafka already has.
 */
export interface StreamPosition {
  lsn: bigint;
  seq: number;
}

export function positionAfter(a: StreamPosition, b: StreamPosition): boolean {
  return a.lsn > b.lsn || (a.lsn === b.lsn && a.seq > b.seq);
}

export interface ChangeEvent {
  table: CapturedTable;
  op: Op;
  /** Primary key; for a truncate, the key fields are empty strings. */
  key: Row;
  before: Row | null;
  after: Row | null;
  ts_ms: number;
  source: SourceInfo;
}

/** A change event's value as a consumer decodes it from Kafka (the Avro envelope of schemas/). */
export interface DecodedEnvelope {
  before: Row | null;
  after: Row | null;
  op: Op;
  ts_ms: number;
  source: SourceInfo;
}

export function isCapturedTable(schema: string, name: string): name is CapturedTable {
  return schema === 'public' && (CAPTURED_TABLES as readonly string[]).includes(name);
}

export function topicFor(prefix: string, table: CapturedTable | string): string {
  return `${prefix}.public.${table}`;
}

/** LSNs as numbers for comparison and arithmetic; PostgreSQL writes them as two hex halves. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
