// CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, as the Avro specification defines it;
// avsc has no single-object encoding, which needs this fingerprint.
const EMPTY = 0xc15d213aa4d7a795n;
const MASK = 0xffffffffffffffffn;

const TABLE: bigint[] = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n) & MASK);
  return fp;
});

/** The fingerprint as an unsigned 64-bit integer. */
export function rabinFingerprint(canonicalForm: string): bigint {
  let fp = EMPTY;
  for (const byte of Buffer.from(canonicalForm, 'utf8')) fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(byte)) & 0xffn)]!;
  return fp;
}

/** The 8 bytes single-object encoding puts after the C3 01 marker: the fingerprint, little-endian. */
export function fingerprintBytes(canonicalForm: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(rabinFingerprint(canonicalForm));
  return b;
}
