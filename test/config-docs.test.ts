// The README's configuration table is the config schema's: a variable added, renamed or re-described in
// connector/config.ts without `npm run docs:config` fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../connector/config.js';
import { README, withConfigTable } from '../scripts/docs-config.js';

describe('README configuration table', () => {
  const readme = readFileSync(README, 'utf8');

  it('is what npm run docs:config generates from the schema (run it after changing connector/config.ts)', () => {
    expect(readme).toBe(withConfigTable(readme));
  });

  it('names every variable of the schema, each with its default', () => {
    for (const name of Object.keys(configSchema.shape)) expect(readme).toMatch(new RegExp(`^\\| \`${name}\` \\| [^|]+ \\| .+ \\|$`, 'm'));
    expect(readme).toContain('| `TOPIC_PARTITIONS` | 6 |');
    expect(readme).toContain('| `DATABASE_URL` | required |');
  });

  it('a README without the markers is refused with the markers named', () => {
    expect(() => withConfigTable('# no table here')).toThrow(/README.md lacks the markers <!-- config:begin/);
  });
});
