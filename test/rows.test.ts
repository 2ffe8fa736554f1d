import fc from 'fast-check';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { avroTextParser, isoTimestamptzToEpochMs } from '../connector/source/rows.js';

const TIMESTAMPTZ = 1184;
const nodePostgres = pg.types.getTypeParser(TIMESTAMPTZ) as (text: string) => Date | number;
const two = (n: number) => String(n).padStart(2, '0');

/** A timestamptz as PostgreSQL writes it with DateStyle ISO, in any zone PostgreSQL can print. */
const timestamptzText = fc
  .record({
    year: fc.integer({ min: 100, max: 9999 }),
    month: fc.integer({ min: 1, max: 12 }),
    day: fc.integer({ min: 1, max: 28 }),
    hour: fc.integer({ min: 0, max: 23 }),
    minute: fc.integer({ min: 0, max: 59 }),
    second: fc.integer({ min: 0, max: 59 }),
    fraction: fc.option(fc.integer({ min: 1, max: 999_999 }).map((f) => String(f).padStart(6, '0').replace(/0+$/, ''))),
    zone: fc.oneof(
      fc.constant('+00'),
      fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 15 })).map(([s, h]) => `${s}${two(h)}`),
      fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 15 }), fc.constantFrom(15, 30, 45)).map(([s, h, m]) => `${s}${two(h)}:${two(m)}`),
      fc.tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 59 }), fc.integer({ min: 1, max: 59 })).map(
        ([s, h, m, sec]) => `${s}${two(h)}:${two(m)}:${two(sec)}`,
      ),
    ),
  })
  .map(
    (t) =>
      `${String(t.year).padStart(4, '0')}-${two(t.month)}-${two(t.day)} ${two(t.hour)}:${two(t.minute)}:${two(t.second)}` +
      `${t.fraction ? `.${t.fraction}` : ''}${t.zone}`,
  );

describe('replication timestamps', () => {
  it('decode to the epoch milliseconds node-postgres gives, in every zone form', () => {
    fc.assert(
      fc.property(timestamptzText, (text) => {
        expect(isoTimestamptzToEpochMs(text)).toBe((nodePostgres(text) as Date).getTime());
      }),
      { numRuns: 20_000 },
    );
  });

  it('leave the forms the fast path does not take (BC, infinity, years before 100) to node-postgres', () => {
    const parse = avroTextParser(TIMESTAMPTZ, nodePostgres)!;
    for (const text of ['0044-03-15 12:00:00+00 BC', 'infinity', '-infinity', '0099-01-01 00:00:00+00', '12345-01-01 00:00:00+00']) {
      expect(isoTimestamptzToEpochMs(text)).toBeNaN();
      const theirs = nodePostgres(text);
      expect(parse(text)).toEqual(theirs);
    }
    expect(parse('2026-11-23 19:44:14.123456+00')).toBe(Date.UTC(2026, 10, 23, 19, 44, 14, 123));
  });

  it('keep node-postgres for other types, and never wrap a parser twice', () => {
    expect(avroTextParser(25, (t) => t)).toBeUndefined();
    const parse = avroTextParser(TIMESTAMPTZ, nodePostgres)!;
    expect(avroTextParser(TIMESTAMPTZ, parse)).toBeUndefined();
  });
});
