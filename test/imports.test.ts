// The folders' dependencies run one way (cli → stages → sync → shared pieces): an import pointing back up fails here.
import { describe, expect, it } from 'vitest';
import { importGraph, unitOf } from '../scripts/imports.js';

describe('import layering', () => {
  it('no import points back up, crosses between stages, or reaches into test/', () => {
    expect(importGraph().violations).toEqual([]);
  });

  it('files are placed in the units the layering names', () => {
    expect(unitOf('connector/sync/applier.ts')).toBe('connector/sync');
    expect(unitOf('connector/cli.ts')).toBe('connector/main');
    expect(unitOf('connector/replay.ts')).toBe('connector/replay');
    expect(unitOf('connector/time.ts')).toBe('connector/shared');
    expect(unitOf('simulator/simulator.ts')).toBe('simulator');
  });
});
