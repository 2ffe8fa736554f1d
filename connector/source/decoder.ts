// Decodes pgoutput messages into change events and transaction checkpoints: pure (the row converters it is given
// log the one warning about an unknown column).
import type { Pgoutput } from 'pg-logical-replication';
import type { SchemaRegistry } from '../avro/registry.js';
import { FleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { CAPTURED_TABLES, PRIMARY_KEYS, isCapturedTable, parseLsn, type CapturedTable, type ChangeEvent, type Row, type SourceInfo, type StreamPosition } from '../events.js';
import { avroTextParser, createRowConverter, type RowConverter } from './rows.js';
import type avro from 'avsc';

/** What the stream hands the publisher: events, and LSNs that may be confirmed once every item before them is in Kafka. */
export type StreamItem = { kind: 'event'; event: ChangeEvent; position: StreamPosition } | { kind: 'checkpoint'; lsn: bigint };

export const HEARTBEAT_PREFIX = 'fleet-sync.heartbeat';

export function rowConverters(registry: SchemaRegistry, log: Logger): Record<CapturedTable, RowConverter> {
  const out = {} as Record<CapturedTable, RowConverter>;
  for (const table of CAPTURED_TABLES) {
    const envelope = registry.latest(table, 'value').type as avro.types.RecordType;
    const rowType = (envelope.field('after')!.type as avro.types.UnwrappedUnionType).types[1] as avro.types.RecordType;
    out[table] = createRowConverter(table, rowType, log);
  }
  return out;
}

export function keyOf(table: CapturedTable, row: Row): Row {
  const key: Row = {};
  for (const k of PRIMARY_KEYS[table]) key[k] = row[k];
  return key;
}

/**
 * pg-logical-replication parses each text column of a relation's tuples with the parser on the relation's column
 * (node-postgres's, by type): the one place to give a column a cheaper parser for what the Avro row carries.
 */
function useAvroParsers(relation: Pgoutput.MessageRelation): void {
  for (const column of relation.columns) {
    const parser = avroTextParser(column.typeOid, column.parser);
    if (parser) column.parser = parser;
  }
}

export interface Decoder {
  /** The items a message yields, in order (usually zero or one). */
  decode(message: Pgoutput.Message): StreamItem[];
}

export function createDecoder(deps: { db: string; converters: Record<CapturedTable, RowConverter>; now?: () => number }): Decoder {
  const now = deps.now ?? Date.now;
  let tx: { xid: number; lsn: string; commitLsn: bigint; commitTsMs: number; seq: number; source: SourceInfo | null } | null = null;

  // Every event of a transaction and table has the same source block: one object, shared (events are never mutated).
  const source = (table: CapturedTable): SourceInfo => {
    if (tx?.source?.table === table) return tx.source;
    const info: SourceInfo = {
      db: deps.db,
      schema: 'public',
      table,
      lsn: tx?.lsn ?? '0/0',
      tx_id: tx?.xid ?? null,
      commit_ts_ms: tx?.commitTsMs ?? null,
      snapshot: false,
    };
    if (tx) tx.source = info;
    return info;
  };
  const position = (): StreamPosition => ({ lsn: tx?.commitLsn ?? 0n, seq: tx ? tx.seq++ : 0 });
  const event = (table: CapturedTable, op: ChangeEvent['op'], before: Row | null, after: Row | null): StreamItem => ({
    kind: 'event',
    event: { table, op, key: keyOf(table, (after ?? before)!), before, after, ts_ms: now(), source: source(table) },
    position: position(),
  });

  return {
    decode(m) {
      switch (m.tag) {
        case 'begin':
          // Positions (exactly-once) order by the commit LSN: a transaction without one cannot be placed.
          if (!m.commitLsn) throw new FleetSyncError('REPLICATION_FAILED', `transaction ${m.xid} arrived without its commit LSN`);
          // pgoutput's commit time is microseconds since the epoch, as a BigInt.
          tx = {
            xid: m.xid,
            lsn: m.commitLsn ?? '0/0',
            commitLsn: m.commitLsn ? parseLsn(m.commitLsn) : 0n,
            commitTsMs: Number(BigInt(m.commitTime as bigint) / 1000n),
            seq: 0,
            source: null,
          };
          return [];
        case 'commit': {
          tx = null;
          return m.commitEndLsn ? [{ kind: 'checkpoint', lsn: parseLsn(m.commitEndLsn) }] : [];
        }
        case 'relation':
          if (isCapturedTable(m.schema, m.name)) {
            useAvroParsers(m);
            deps.converters[m.name].checkColumns(m.columns.map((c) => c.name));
          }
          return [];
        case 'insert': {
          const { schema, name } = m.relation;
          if (!isCapturedTable(schema, name)) return [];
          return [event(name, 'c', null, deps.converters[name].convert(m.new))];
        }
        case 'update': {
          const { schema, name } = m.relation;
          if (!isCapturedTable(schema, name)) return [];
          const conv = deps.converters[name];
          return [event(name, 'u', m.old ? conv.convert(m.old) : null, conv.convert(m.new))];
        }
        case 'delete': {
          const { schema, name } = m.relation;
          if (!isCapturedTable(schema, name)) return [];
          const old = m.old ?? m.key;
          if (!old) return [];
          // With REPLICA IDENTITY FULL the old row is whole; with DEFAULT only the key is known.
          const before = m.old ? deps.converters[name].convert(m.old) : null;
          const item = event(name, 'd', before, null);
          if (item.kind === 'event' && !before) item.event.key = keyOf(name, old);
          return [item];
        }
        case 'truncate':
          return m.relations
            .filter((r) => isCapturedTable(r.schema, r.name))
            .map((r) => {
              const table = r.name as CapturedTable;
              const key: Row = {};
              for (const k of PRIMARY_KEYS[table]) key[k] = '';
              return { kind: 'event', event: { table, op: 't', key, before: null, after: null, ts_ms: now(), source: source(table) }, position: position() };
            });
        case 'message':
          // Non-transactional heartbeat messages give an LSN to confirm while the captured tables are idle.
          return !m.transactional && m.prefix === HEARTBEAT_PREFIX && m.messageLsn ? [{ kind: 'checkpoint', lsn: parseLsn(m.messageLsn) }] : [];
        default:
          return [];
      }
    },
  };
}
