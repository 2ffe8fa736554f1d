// Turns a row as node-postgres parses it (replication tuple or snapshot query) into the Avro row of schemas/:
// timestamps to epoch milliseconds, jsonb to JSON text, columns the schema does not know dropped with one warning.
import type avro from 'avsc';
import type { Logger } from '../log.js';
import type { CapturedTable, Row } from '../events.js';

/**
 * node-postgres gives timestamptz as Date, jsonb as parsed JSON and bigint as text; the Avro rows carry epoch ms,
 * JSON text and longs.
 */
function toAvroValue(v: unknown, long: boolean): unknown {
  if (v instanceof Date) return v.getTime();
  if (long && typeof v === 'string') return Number(v);
  if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) return JSON.stringify(v);
  return v;
}

export interface RowConverter {
  /** Undefined for a column means its value is unknown (an unchanged TOAST datum with no old row): an error. */
  convert(row: Record<string, unknown>): Row;
  /** Warns once per table and column the schema does not carry yet. */
  checkColumns(columns: string[]): void;
}

export function createRowConverter(table: CapturedTable, rowType: avro.types.RecordType, log: Logger): RowConverter {
  const fields = rowType.fields.map((f) => f.name);
  const longs = new Set(rowType.fields.filter((f) => JSON.stringify(f.type.schema()).includes('"long"')).map((f) => f.name));
  const known = new Set(fields);
  const warned = new Set<string>();
  return {
    convert(row) {
      const out: Row = {};
      for (const name of fields) {
        const value = row[name];
        if (value === undefined) {
          throw new Error(`column ${table}.${name} has no value (unchanged TOAST datum without the old row: is REPLICA IDENTITY FULL set?)`);
        }
        out[name] = toAvroValue(value, longs.has(name));
      }
      return out;
    },
    checkColumns(columns) {
      for (const c of columns) {
        if (known.has(c) || warned.has(c)) continue;
        warned.add(c);
        log.warn({ table, column: c }, 'column not in the Avro schema: dropped from events until schemas/ is extended');
      }
    },
  };
}
