// The README's configuration table, generated from the config schema (connector/config.ts) through its JSON Schema:
// `npm run docs:config` rewrites the text between the markers; test/config-docs.test.ts fails when they disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configSchema } from '../connector/config.js';

export const BEGIN = '<!-- config:begin — generated from connector/config.ts by `npm run docs:config`; edit the schema, not this table -->';
export const END = '<!-- config:end -->';

export const README = resolve(fileURLToPath(new URL('..', import.meta.url)), 'README.md');

interface Field {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
}

/** `|` would end a table cell. */
const cell = (text: string) => text.replace(/\|/g, '\\|');

function shownDefault(field: Field, required: boolean): string {
  if (required) return 'required';
  if (field.default === undefined || field.default === '') return '(none)';
  return typeof field.default === 'string' ? `\`${field.default}\`` : String(field.default);
}

/** One row per environment variable: name, default, what it sets (with the allowed values of a choice). */
export function configTable(): string {
  // io: 'input' describes what the environment holds (text before coercion); transforms have no JSON form.
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as { properties: Record<string, Field>; required?: string[] };
  const required = new Set(schema.required ?? []);
  const rows = Object.entries(schema.properties).map(([name, field]) => {
    if (!field.description) throw new Error(`${name} has no .describe() text in connector/config.ts`);
    const choices = field.enum ? ` (one of ${field.enum.map((v) => `\`${String(v)}\``).join(', ')})` : '';
    return `| \`${name}\` | ${cell(shownDefault(field, required.has(name)))} | ${cell(field.description + choices)} |`;
  });
  return ['| variable | default | what it sets |', '| --- | --- | --- |', ...rows].join('\n');
}

/** The README with its configuration table replaced; throws when the markers are missing. */
export function withConfigTable(readme: string): string {
  const begin = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`README.md lacks the markers ${BEGIN} … ${END}`);
  return `${readme.slice(0, begin + BEGIN.length)}\n${configTable()}\n${readme.slice(end)}`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const before = readFileSync(README, 'utf8');
  const after = withConfigTable(before);
  if (after === before) console.log('README.md: the configuration table is current');
  else {
    writeFileSync(README, after);
    console.log('README.md: configuration table rewritten from connector/config.ts');
  }
}
