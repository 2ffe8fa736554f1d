// `fleet-sync <command>`: one main per command, each wiring its stages from the validated configuration.
import { Command, InvalidArgumentError, Option } from 'commander';
import pg from 'pg';
import { startApi, type StartApiDeps } from '../api/main.js';
import { parkStatuses } from '../api/db/status.js';
import { explainUid, whyInWords } from './audit/why.js';
import { loadConfig, type Config } from './config.js';
import { migrate } from './db/migrate.js';
import { FleetSyncError, isFleetSyncError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { startSweepLoop } from './reconcile/schedule.js';
import { replay, resolveTopic } from './replay.js';
import { startSink } from './sink/sink.js';
import { startSource } from './source/source.js';
import type { DryRunReport } from './sync/reconciler.js';
import { createSyncStack, type SyncStack } from './wiring.js';

interface Stoppable {
  done: Promise<void>;
  stop(): Promise<void>;
}

/** A long-lived stage of a command, by name: the name says which one failed. */
type Stage = Stoppable & { name: string };

function setup(): { config: Config; log: Logger; metrics: Metrics } {
  try {
    const config = loadConfig();
    return { config, log: createLogger(config.LOG_LEVEL), metrics: createMetrics() };
  } catch (e) {
    process.stderr.write(`fleet-sync: ${(e as Error).message}\n`);
    process.exit(2);
  }
}

function fatal(log: Logger, e: unknown): never {
  const message = e instanceof Error ? e.message : String(e);
  log.fatal({ err: e, code: isFleetSyncError(e) ? e.code : undefined }, message);
  log.flush();
  process.stderr.write(`fleet-sync: ${message}\n`);
  process.exit(1);
}

/**
 * Runs long-lived stages until SIGTERM/SIGINT, then stops them (flushing and acknowledging), closes what they
 * shared, and exits 0.
 */
async function runUntilSignalled(log: Logger, stages: Stage[], shared?: Pick<SyncStack, 'close'>): Promise<never> {
  let stopping = false;
  const stopAll = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await Promise.allSettled(stages.map((s) => s.stop()));
    await shared?.close().catch(() => {});
  };
  process.once('SIGTERM', () => void stopAll('SIGTERM'));
  process.once('SIGINT', () => void stopAll('SIGINT'));
  // The first stage to fail, or to end on its own, stops the others and the process exits non-zero (a supervisor
  // restarts it): a half-running pipeline would look healthy and do nothing.
  const failed = await Promise.race([
    Promise.allSettled(stages.map((s) => s.done)).then(() => null),
    ...stages.map((s) =>
      s.done.then(
        () => (stopping ? new Promise<never>(() => {}) : { error: new FleetSyncError('INTERNAL', `the ${s.name} stage stopped on its own`) }),
        (e: unknown) => ({ error: e }),
      ),
    ),
  ]);
  if (failed) {
    log.error({ err: failed.error }, 'a stage cannot go on: stopping the others');
    await stopAll('failure');
    fatal(log, failed.error);
  }
  log.info('stopped');
  log.flush();
  process.exit(0);
}

async function apiStage(deps: StartApiDeps): Promise<Stage> {
  const { log } = deps;
  const api = await startApi(deps);
  let stopped!: () => void;
  const done = new Promise<void>((r) => (stopped = r));
  log.info({ url: api.url }, 'api listening');
  return {
    name: 'api',
    done,
    async stop() {
      await api.close();
      stopped();
    },
  };
}

/** A command used wrongly: commander prints the message and exits 2, changing nothing. */
const usageError = (message: string): never => program.error(`error: ${message}`, { exitCode: 2 });

/** A dry run in words: the counts, then each listed change as `uid in project: before → after`. */
function formatDryRun(report: DryRunReport): string {
  const roles = (r: readonly string[] | null) => (r === null ? '(not known)' : r.length === 0 ? '[]' : `[${r.join(', ')}]`);
  const { counts } = report;
  const lines = [
    `dry run of park ${report.park_id}'s sweep (${report.reason}): nothing was changed`,
    `  would grant ${counts.granted}, change ${counts.changed}, adopt ${counts.adopted}, revoke ${counts.revoked}`,
  ];
  for (const kind of ['granted', 'changed', 'adopted', 'revoked'] as const) {
    if (report[kind].length === 0) continue;
    const more = counts[kind] - report[kind].length;
    lines.push(`${kind}${more > 0 ? ` (first ${report[kind].length} of ${counts[kind]})` : ''}:`);
    for (const c of report[kind]) lines.push(`  uid ${c.uid} in ${c.project_id} (park ${c.park_id || '-'}): ${roles(c.roles_before)} → ${roles(c.roles_after)}`);
  }
  return `${lines.join('\n')}\n`;
}

const program = new Command('fleet-sync')
  .description('Change-data-capture of dispatcher users and roles into the call center, through Kafka')
  .showHelpAfterError();

program
  .command('migrate')
  .description('apply the SQL migrations in migrations/ (applying twice is a no-op)')
  .action(async () => {
    const { config, log } = setup();
    const client = new pg.Client({ connectionString: config.DATABASE_URL });
    try {
      await client.connect();
      const applied = await migrate(client, log);
      log.info({ applied }, applied.length ? 'migrations applied' : 'database already current');
      await client.end();
      log.flush();
    } catch (e) {
      fatal(log, e);
    }
  });

program
  .command('source')
  .description('stream PostgreSQL changes (pgoutput) to Kafka as Avro change events; a second process stands by')
  .action(async () => {
    const { config, log, metrics } = setup();
    await runUntilSignalled(log, [{ name: 'source', ...startSource({ config, log, metrics }) }]);
  });

program
  .command('sink')
  .description('apply the change events to the call center (and share the group\'s sweep of every park, every RECONCILE_INTERVAL_S)')
  .action(async () => {
    const { config, log, metrics } = setup();
    const stack = createSyncStack({ config, log, metrics });
    const sink = startSink({ config, log, metrics, ...stack });
    await runUntilSignalled(log, [{ name: 'sink', ...sink }], stack);
  });

program
  .command('reconcile')
  .description('compare the call center with the database for every syncing park and repair the differences')
  .option('--park <id>', 'only this park')
  .option('--once', 'one sweep, then exit (default: every RECONCILE_INTERVAL_S)')
  .option('--dry-run', 'with --park: print the drift the sweep would repair (what it would grant, change, adopt, revoke), repairing nothing')
  .option('--json', 'with --dry-run: print the report as JSON')
  .action(async (opts: { park?: string; once?: boolean; dryRun?: boolean; json?: boolean }) => {
    const { config, log, metrics } = setup();
    if (opts.dryRun && !opts.park) usageError('--dry-run needs --park <id>');
    if (opts.json && !opts.dryRun) usageError('--json goes with --dry-run');
    const stack = createSyncStack({ config, log, metrics });
    const { sync, reconciler } = stack;
    try {
      if (opts.park) {
        // A park without a sync row is still swept while fleet-sync holds grants it made for it (they are revoked).
        const { rowCount } = await sync.pool.query(
          'SELECT 1 FROM call_center_parks WHERE park_id = $1 UNION ALL SELECT 1 FROM call_center_grants WHERE park_id = $1 AND managed LIMIT 1',
          [opts.park],
        );
        if (!rowCount) throw new FleetSyncError('PARK_NOT_FOUND', `park ${opts.park} has no call_center_parks row: turn it on first`);
      }
      if (opts.dryRun) {
        const report = await reconciler.dryRunPark(opts.park!, 'manual');
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatDryRun(report));
        await stack.close();
        log.flush();
        return;
      }
      const sweepOnce = async () => {
        if (opts.park) return new Map([[opts.park, await reconciler.reconcilePark(opts.park, 'manual')]]);
        return reconciler.sweepAll('manual');
      };
      if (opts.once) {
        const results = await sweepOnce();
        process.stdout.write(`${JSON.stringify(Object.fromEntries(results), null, 2)}\n`);
        await stack.close();
        log.flush();
        return;
      }
      const loop = startSweepLoop({ reconciler: opts.park ? { ...reconciler, sweepAll: sweepOnce } : reconciler, intervalS: config.RECONCILE_INTERVAL_S, log, immediately: true });
      await runUntilSignalled(log, [{ name: 'sweep', ...loop }], stack);
    } catch (e) {
      fatal(log, e);
    }
  });

program
  .command('api')
  .description('serve the HTTP api (park toggles, users list, status, health, metrics, OpenAPI at /docs)')
  .action(async () => {
    const { config, log, metrics } = setup();
    try {
      // The toggles' dry runs run the sweep itself: its pool and call-center client (connected at first use).
      const stack = createSyncStack({ config, log, metrics });
      await runUntilSignalled(log, [await apiStage({ config, log, metrics, dryRun: stack.reconciler.dryRunPark })], stack);
    } catch (e) {
      fatal(log, e);
    }
  });

program
  .command('all')
  .description('source, sink, sweep and api in one process')
  .action(async () => {
    const { config, log, metrics } = setup();
    try {
      const stack = createSyncStack({ config, log, metrics });
      const source = startSource({ config, log, metrics });
      const sink = startSink({ config, log, metrics, ...stack });
      const api = await apiStage({
        config,
        log,
        metrics,
        dryRun: stack.reconciler.dryRunPark,
        // Readiness of the stages beside the api: a source that is not streaming, or a sink not consuming, is not ready.
        stageReadiness: {
          source: async () => {
            const state = source.state();
            if (state !== 'streaming' && state !== 'standby') throw new Error(`the source is ${state}`);
          },
          sink: async () => {
            if (!sink.isReady()) throw new Error('the sink is not consuming');
          },
        },
      });
      await runUntilSignalled(log, [{ name: 'source', ...source }, { name: 'sink', ...sink }, api], stack);
    } catch (e) {
      fatal(log, e);
    }
  });

const offset = (v: string) => {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number');
  return BigInt(v);
};
const isoTime = (v: string) => {
  const ms = Date.parse(v);
  if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(ms)) throw new InvalidArgumentError('expected an ISO date-time, e.g. 2026-11-22T04:00:00Z');
  return ms;
};

program
  .command('replay')
  .description('read a topic from a position to its current end: print the events, or re-apply them to the call center')
  .requiredOption('--topic <topic>', 'topic name, or a captured table (users, roles, call_center_parks)')
  .addOption(new Option('--from-beginning', 'from the oldest retained event (default)').conflicts(['fromOffset', 'fromTime']))
  .addOption(new Option('--from-offset <n>', 'from this offset in every partition').argParser(offset).conflicts(['fromTime']))
  .addOption(new Option('--from-time <iso>', 'from the first event at or after this time').argParser(isoTime))
  .addOption(new Option('--to <target>', 'where the events go').choices(['stdout', 'callcenter']).default('stdout'))
  .option('--park <id>', 'only events of this park')
  .action(async (opts: { topic: string; fromOffset?: bigint; fromTime?: number; to: 'stdout' | 'callcenter'; park?: string }) => {
    const { config, log, metrics } = setup();
    try {
      const from =
        opts.fromOffset !== undefined ? { kind: 'offset' as const, offset: opts.fromOffset } : opts.fromTime !== undefined ? { kind: 'time' as const, ms: opts.fromTime } : { kind: 'beginning' as const };
      const stack = opts.to === 'callcenter' ? createSyncStack({ config, log, metrics }) : undefined;
      try {
        await replay({ config, log, ...(stack ? { apply: stack } : {}) }, { topic: resolveTopic(config, opts.topic), from, to: opts.to, ...(opts.park ? { park: opts.park } : {}) });
      } finally {
        await stack?.close();
      }
      log.flush();
      process.exit(0);
    } catch (e) {
      fatal(log, e);
    }
  });

program
  .command('status')
  .description('print every park with sync on or off: project, mapping, users granted, last event, last sweep, lag')
  .action(async () => {
    const { config, log } = setup();
    const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 1 });
    try {
      const rows = await parkStatuses(pool);
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      await pool.end();
    } catch (e) {
      fatal(log, e);
    }
  });

program
  .command('why')
  .description('what a uid holds in each call-center project, since when, and why: its users rows, the park and its toggle, the audit trail')
  .option('--uid <uid>', "the user's passport uid (yandex_uid); required")
  .option('--project <id>', 'only this project')
  .option('--json', 'print the answer as JSON (what GET /v1/why answers)')
  .action(async (opts: { uid?: string; project?: string; json?: boolean }) => {
    const uid = opts.uid || usageError('--uid <uid> is required (fleet-sync why --uid UID [--project ID] [--json])');
    const { config, log } = setup();
    const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 1 });
    try {
      const answer = await explainUid(pool, uid, opts.project === undefined ? {} : { projectId: opts.project });
      // An unknown uid is an answer too (exit 0): the words say so.
      process.stdout.write(opts.json ? `${JSON.stringify(answer, null, 2)}\n` : whyInWords(answer));
      await pool.end();
    } catch (e) {
      fatal(log, e);
    }
  });

await program.parseAsync(process.argv);
