// The users list reads each row as PostgreSQL's text of its record: the reader against record_out's own output.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRecord } from '../api/db/record-text.js';
import { createTestDatabase, type TestDatabase } from './helpers.js';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false });
});

afterAll(async () => {
  await db?.drop();
});

/** record_out's text of a row of text values (null for NULL), as the users page asks for it. */
async function recordText(values: Array<string | null>): Promise<string> {
  const { rows } = await db.pool.query<{ record: string }>(
    `SELECT r::text AS record FROM (SELECT ${values.map((_, i) => `$${i + 1}::text`).join(', ')}) r`,
    values,
  );
  return rows[0]!.record;
}

describe('record text', () => {
  it.each([
    ['plain values', '(a,b,c)', ['a', 'b', 'c']],
    ['NULL as an empty field, an empty string quoted', '(,"",x)', [null, '', 'x']],
    ['quotes and backslashes doubled inside quotes', '("a""b","c\\\\d","""")', ['a"b', 'c\\d', '"']],
    ['separators and white space quoted, a newline too', '("a,b","(c)","d\ne")', ['a,b', '(c)', 'd\ne']],
    ['a control character other than white space unquoted', '(\u0001,é,😀)', ['\u0001', 'é', '😀']],
  ])('reads %s', (_name, text, expected) => {
    expect(parseRecord(text, 3)).toEqual(expected);
  });

  it.each([
    ['too few fields', '(a,b)'],
    ['too many fields', '(a,b,c,d)'],
    ['an unclosed quote', '(a,"b,c)'],
    ['text after the record', '(a,b,c)(d,e,f)'],
    ['no parenthesis', 'a,b,c'],
  ])('refuses %s', (_name, text) => {
    expect(() => parseRecord(text, 3)).toThrow(/unexpected record text/);
  });

  it('reads back whatever text values PostgreSQL writes as a record', async () => {
    // Characters record_out treats specially, white space, control characters and non-ASCII, in strings of any length.
    const char = fc.oneof(
      fc.constantFrom('"', '\\', '(', ')', ',', ' ', '\t', '\n', '\r', '\v', '\f', '\u0001', '\u001f', 'N', 'U', 'L', 'é', '😀', '\u00a0'),
      fc.string({ minLength: 1, maxLength: 1 }),
    );
    const value = fc.option(fc.array(char, { maxLength: 12 }).map((chars) => chars.join('')), { freq: 4 });
    await fc.assert(
      fc.asyncProperty(fc.array(value, { minLength: 4, maxLength: 4 }), async (values) => {
        expect(parseRecord(await recordText(values), 4)).toEqual(values);
      }),
      { numRuns: 500 },
    );
  });
});
