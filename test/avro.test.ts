import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { rabinFingerprint } from '../connector/avro/fingerprint.js';
import { assertCompatible, loadSchemaRegistry, type SchemaVersion } from '../connector/avro/registry.js';

// Test vectors of the Avro specification's CRC-64-AVRO fingerprint (signed 64-bit, as the spec lists them).
const VECTORS: [string, bigint][] = [
  ['"null"', 7195948357588979594n],
  ['"boolean"', -6970731678124411036n],
  ['"int"', 8247732601305521295n],
  ['"long"', -3434872931120570953n],
  ['"float"', 5583340709985441680n],
  ['"double"', -8181574048448539266n],
  ['"bytes"', 5746618253357095269n],
  ['"string"', -8142146995180207161n],
  ['[]', -1241056759729112623n],
  ['["int"]', -5232228896498058493n],
  ['["int","boolean"]', 5392556393470105090n],
  ['{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771n],
  ['{"name":"a.b.foo","type":"record","fields":[]}', -4616218487480524110n],
  ['{"name":"foo","type":"record","fields":[]}', -4824392279771201922n],
  ['{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}', 7843277075252814651n],
  ['{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}', -4860222112080293046n],
  ['{"name":"foo","type":"enum","symbols":["A1"]}', -6342190197741309591n],
  ['{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245n],
  ['{"name":"foo","type":"fixed","size":15}', 1756455273707447556n],
  ['{"name":"x.y.z.foo","type":"fixed","size":32}', -3064184465700546786n],
  ['{"type":"array","items":"null"}', -589620603366471059n],
  ['{"type":"map","values":"string"}', -8732877298790414990n],
  ['{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}', -1759257747318642341n],
];

describe('CRC-64-AVRO fingerprint', () => {
  it.each(VECTORS)('matches the specification for %s', (canonical, expected) => {
    expect(BigInt.asIntN(64, rabinFingerprint(canonical))).toBe(expected);
  });

  it('is computed over the parsing canonical form avsc produces (doc, defaults and namespaces folded)', () => {
    const type = avro.Type.forSchema({ type: 'record', name: 'foo', namespace: 'x.y', doc: 'ignored', fields: [] });
    expect(BigInt.asIntN(64, rabinFingerprint(JSON.stringify(type.schema())))).toBe(5916914534497305771n);
  });
});

describe('schema registry (schemas/)', () => {
  const registry = loadSchemaRegistry();

  it('has key and value schemas for every captured table', () => {
    expect(registry.tables()).toEqual(['call_center_parks', 'roles', 'users']);
  });

  it('round-trips an event through single-object encoding', () => {
    const row = { id: 'r1', park_id: 'p1', name: 'Dispatcher', created_at: 1_700_000_000_000, updated_at: 1_700_000_000_001 };
    const envelope = {
      before: null,
      after: row,
      op: 'c',
      ts_ms: 1_700_000_000_002,
      source: { db: 'fleet', schema: 'public', table: 'roles', lsn: '0/16B3748', tx_id: 42, commit_ts_ms: 1_700_000_000_000, snapshot: false },
    };
    const encoded = registry.encode('roles', 'value', envelope);
    expect([...encoded.subarray(0, 2)]).toEqual([0xc3, 0x01]);
    expect(encoded.subarray(2, 10)).toEqual(registry.latest('roles', 'value').fingerprint);
    expect(registry.decode(encoded)).toMatchObject({ table: 'roles', kind: 'value', value: envelope });
  });

  it('rejects a message that is not single-object encoded, naming why', () => {
    expect(() => registry.decode(Buffer.from('{"json":true}'))).toThrow(/C3 01/);
    expect(() => registry.decode(Buffer.from([0xc3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]))).toThrow(/unknown schema fingerprint/);
  });

  it('keeps every version of every subject backward and forward compatible with the one before', () => {
    for (const table of registry.tables()) {
      for (const kind of ['key', 'value'] as const) {
        const versions = registry.versions(table, kind);
        expect(versions[0]!.version).toBe(1);
        for (let i = 1; i < versions.length; i++) assertCompatible(versions[i - 1]!, versions[i]!);
      }
    }
  });

  it('the compatibility check catches a field added without a default and a changed type', () => {
    const users = registry.latest('users', 'value');
    const schema = JSON.parse(JSON.stringify(users.type.schema({ exportAttrs: true })));
    const row = schema.fields[0].type[1];
    const withRequired = structuredClone(schema);
    withRequired.fields[0].type[1].fields.push({ name: 'nickname', type: 'string' });
    const asVersion = (s: unknown, version: number): SchemaVersion => ({ ...users, version, type: avro.Type.forSchema(s as avro.Schema) });
    expect(() => assertCompatible(users, asVersion(withRequired, 2))).toThrow(/users\/value v2 is not backward compatible/);
    const withOptional = structuredClone(schema);
    withOptional.fields[0].type[1].fields.push({ name: 'nickname', type: ['null', 'string'], default: null });
    expect(() => assertCompatible(users, asVersion(withOptional, 2))).not.toThrow();
    const retyped = structuredClone(schema);
    retyped.fields[0].type[1].fields.find((f: { name: string }) => f.name === 'is_enabled').type = 'string';
    expect(() => assertCompatible(users, asVersion(retyped, 2))).toThrow(/not backward compatible/);
    expect(row.name).toBe('fleet_sync.users.Row');
  });
});
