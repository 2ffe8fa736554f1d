// The import graph between the project's folders, and the layering it must keep:
//   cli → {source, sink, reconcile, api, replay} → sync → {callcenter, kafka, avro, db, and the shared files}
// `npm run -s imports` prints the folder-to-folder edges and any import that points back up (exit 1 if one does).
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The layer of each unit, lowest first; a unit may import its own and lower layers only. */
const LAYERS: Record<string, number> = {
  'connector/shared': 0, // config, errors, log, metrics, events, time
  'connector/avro': 0,
  'connector/db': 0,
  'connector/kafka': 0,
  'connector/callcenter': 0,
  'connector/sync': 1,
  'connector/audit': 1, // the audit trail: written by the applier, read by the api and `why`
  'connector/source': 2,
  'connector/sink': 2,
  'connector/reconcile': 2,
  'connector/replay': 2,
  api: 2,
  'connector/main': 3, // cli.ts and wiring.ts: the command mains
  simulator: 3,
  scripts: 4,
  test: 5,
};
const STAGES = new Set(['connector/source', 'connector/sink', 'connector/reconcile', 'connector/replay', 'api']);

/** The unit a file belongs to: a folder, or for connector's loose files, what they are for. */
export function unitOf(file: string): string | null {
  const parts = file.split('/');
  if (parts[0] === 'connector') {
    if (parts.length > 2) return `connector/${parts[1]}`;
    if (parts[1] === 'cli.ts' || parts[1] === 'wiring.ts') return 'connector/main';
    if (parts[1] === 'replay.ts') return 'connector/replay';
    return 'connector/shared';
  }
  return parts[0] && parts[0] in LAYERS ? parts[0] : null;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

export interface ImportReport {
  /** "from → to" with the number of importing lines. */
  edges: Map<string, number>;
  /** Imports that break the layering, as "file: from → to (why)". */
  violations: string[];
}

export function importGraph(): ImportReport {
  const edges = new Map<string, number>();
  const violations: string[] = [];
  for (const file of ['connector', 'api', 'simulator', 'scripts', 'test'].flatMap(sourceFiles)) {
    const from = unitOf(file)!;
    const text = readFileSync(join(root, file), 'utf8');
    for (const m of text.matchAll(/^\s*(?:import|export)[^'"]*?from\s+['"](\.[^'"]+)['"]/gm)) {
      const target = relative(root, resolve(root, dirname(file), m[1]!)).replace(/\.js$/, '.ts');
      const to = unitOf(target);
      if (!to || to === from) continue;
      const edge = `${from} → ${to}`;
      edges.set(edge, (edges.get(edge) ?? 0) + 1);
      if (to === 'test') violations.push(`${file}: ${edge} (nothing outside test/ imports from test/)`);
      else if (LAYERS[to]! > LAYERS[from]!) violations.push(`${file}: ${edge} (points back up)`);
      else if (STAGES.has(from) && STAGES.has(to)) violations.push(`${file}: ${edge} (a stage never imports another stage)`);
    }
  }
  return { edges, violations };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { edges, violations } = importGraph();
  for (const [edge, n] of [...edges].sort(([a], [b]) => a.localeCompare(b))) console.log(`${edge}  (${n})`);
  if (violations.length > 0) {
    console.log(`\n${violations.length} import(s) break the layering:`);
    for (const v of violations) console.log(`  ${v}`);
    process.exitCode = 1;
  } else console.log('\nlayering holds: cli → stages → sync → shared pieces, nothing points back up');
}
