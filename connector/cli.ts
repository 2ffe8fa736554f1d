// `fleet-sync <command>`: one main per command, each wiring its stage from the validated configuration.
import { Command } from 'commander';
import pg from 'pg';
import { loadConfig, type Config } from './config.js';
import { migrate } from './db/migrate.js';
import { isFleetSyncError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics } from './metrics.js';
import { startSource } from './source/source.js';

interface Stoppable {
  done: Promise<void>;
  stop(): Promise<void>;
}

function configOrExit(): { config: Config; log: Logger } {
  try {
    const config = loadConfig();
    return { config, log: createLogger(config.LOG_LEVEL) };
  } catch (e) {
    process.stderr.write(`fleet-sync: ${(e as Error).message}\n`);
    process.exit(2);
  }
}

/** Runs long-lived stages until SIGTERM/SIGINT, then stops them (flushing and acknowledging) and exits 0. */
async function runUntilSignalled(log: Logger, stages: Stoppable[]): Promise<never> {
  let stopping = false;
  const stopAll = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await Promise.allSettled(stages.map((s) => s.stop()));
  };
  process.once('SIGTERM', () => void stopAll('SIGTERM'));
  process.once('SIGINT', () => void stopAll('SIGINT'));
  const results = await Promise.allSettled(stages.map((s) => s.done));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await stopAll('failure');
    fatal(log, failed.reason);
  }
  log.info('stopped');
  log.flush();
  process.exit(0);
}

function fatal(log: Logger, e: unknown): never {
  const message = e instanceof Error ? e.message : String(e);
  log.fatal({ err: e, code: isFleetSyncError(e) ? e.code : undefined }, message);
  log.flush();
  process.stderr.write(`fleet-sync: ${message}\n`);
  process.exit(1);
}

const program = new Command('fleet-sync')
  .description('Change-data-capture of dispatcher users and roles into the call center, through Kafka')
  .showHelpAfterError();

program
  .command('migrate')
  .description('apply the SQL migrations in migrations/ (applying twice is a no-op)')
  .action(async () => {
    const { config, log } = configOrExit();
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
    const { config, log } = configOrExit();
    const source = startSource({ config, log, metrics: createMetrics() });
    await runUntilSignalled(log, [source]);
  });

await program.parseAsync(process.argv);
