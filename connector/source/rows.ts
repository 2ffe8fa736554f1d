// Turns a row as node-postgres parses it (replication tuple or snapshot query) into the Avro row of schemas/:
// timestamps to epoch milliseconds, jsonb to JSON text, columns the schema does not know dropped with one warning.
import { FleetSyncError } from '../errors.js';
import type avro from 'avsc';
import type { Logger } from '../log.js';
import type { CapturedTable, Row } from '../events.js';

/**
 * node-postgres gives timestamptz as Date, jsonb as parsed JSON and bigint as text; the Avro rows carry epoch ms,
 * JSON text and longs. A timestamptz may also come as epoch ms already (`avroTextParser`).
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

/** One column's value as the Avro row carries it; throws for an unknown (undefined) value. */
function columnValue(table: string, name: string, long: boolean, value: unknown): unknown {
  const type = typeof value;
  if (type === 'string') return long ? Number(value) : value;
  if (value === null || type === 'boolean' || type === 'number') return value;
  if (value === undefined) {
    throw new FleetSyncError('SCHEMA_INCOMPATIBLE', `column ${table}.${name} has no value (unchanged TOAST datum without the old row: is REPLICA IDENTITY FULL set?)`);
  }
  return toAvroValue(value, long);
}

type CompiledConvert = (row: Record<string, unknown>, value: typeof columnValue) => Row;

/**
 * The row's conversion as one object literal in schema order, compiled once per table (as avsc compiles its
 * encoders): every row then gets the same object shape at once instead of twelve property additions, which made
 * the loop over the fields a twentieth of the source's CPU. Field names come from schemas/ (Avro names: letters,
 * digits, underscores) and are quoted with JSON.stringify all the same.
 */
function compileConvert(table: string, fields: string[], longs: boolean[]): CompiledConvert {
  const props = fields.map((name, i) => `${JSON.stringify(name)}: value(${JSON.stringify(table)}, ${JSON.stringify(name)}, ${longs[i]}, row[${JSON.stringify(name)}])`);
  return new Function('row', 'value', `return { ${props.join(', ')} };`) as CompiledConvert;
}

export function createRowConverter(table: CapturedTable, rowType: avro.types.RecordType, log: Logger): RowConverter {
  const fields = rowType.fields.map((f) => f.name);
  const longs = fields.map((name) => JSON.stringify(rowType.field(name)!.type.schema()).includes('"long"'));
  const compiled = compileConvert(table, fields, longs);
  const known = new Set(fields);
  const warned = new Set<string>();
  return {
    convert: (row) => compiled(row, columnValue),
    checkColumns(columns) {
      for (const c of columns) {
        if (known.has(c) || warned.has(c)) continue;
        warned.add(c);
        log.warn({ table, column: c }, 'column not in the Avro schema: dropped from events until schemas/ is extended');
      }
    },
  };
}

const TIMESTAMPTZ_OID = 1184;

/** The integer written in s[from, to), or NaN if a character there is not a digit. */
function digits(s: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return n;
}

/**
 * A timestamptz as PostgreSQL writes it (DateStyle ISO: `2026-11-23 19:44:14.123456+00`, zone `+HH[:MM[:SS]]`) →
 * epoch ms, below the millisecond truncated as node-postgres does; NaN for any other form (BC, infinity, a year
 * before 100 or after 9999), which the caller leaves to node-postgres.
 */
export function isoTimestamptzToEpochMs(s: string): number {
  const len = s.length;
  if (len < 22 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 32 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) {
    return NaN;
  }
  const year = digits(s, 0, 4);
  if (!(year >= 100)) return NaN; // Date.UTC reads 0-99 as 1900-1999
  let i = 19;
  let ms = 0;
  if (s.charCodeAt(i) === 46) {
    const start = ++i;
    while (i < len && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++;
    if (i === start) return NaN;
    for (let k = start; k < start + 3; k++) ms = ms * 10 + (k < i ? s.charCodeAt(k) - 48 : 0);
  }
  const sign = s.charCodeAt(i);
  const zone = len - i - 1;
  if ((sign !== 43 && sign !== 45) || (zone !== 2 && zone !== 5 && zone !== 8)) return NaN;
  if (zone >= 5 && s.charCodeAt(i + 3) !== 58) return NaN;
  if (zone === 8 && s.charCodeAt(i + 6) !== 58) return NaN;
  const offsetS = digits(s, i + 1, i + 3) * 3600 + (zone >= 5 ? digits(s, i + 4, i + 6) * 60 : 0) + (zone === 8 ? digits(s, i + 7, i + 9) : 0);
  const utc = Date.UTC(year, digits(s, 5, 7) - 1, digits(s, 8, 10), digits(s, 11, 13), digits(s, 14, 16), digits(s, 17, 19), ms);
  return utc - (sign === 45 ? -offsetS : offsetS) * 1000;
}

type TextParser = (text: string) => unknown;
const avroParsers = new WeakSet<TextParser>();

/**
 * A parser for a replication column's text that yields what the Avro row carries, where it is cheaper than
 * node-postgres's: a timestamptz straight to epoch ms instead of a Date (its regular-expression parse was 6% of
 * the source's CPU in a profile of a burst). Undefined when node-postgres's own parser is kept; `original` still
 * parses the rare forms the fast path does not take, and `convert` accepts either result.
 */
export function avroTextParser(typeOid: number, original: TextParser): TextParser | undefined {
  if (typeOid !== TIMESTAMPTZ_OID || avroParsers.has(original)) return undefined;
  // The rows of one transaction mostly carry the same instants (created_at = updated_at = now()): the last one is kept.
  let lastText = '';
  let lastMs = NaN;
  const parse: TextParser = (text) => {
    if (text === lastText) return lastMs;
    const ms = isoTimestamptzToEpochMs(text);
    if (ms !== ms) return original(text); // NaN: a form the fast path does not take
    lastText = text;
    lastMs = ms;
    return ms;
  };
  avroParsers.add(parse);
  return parse;
}
