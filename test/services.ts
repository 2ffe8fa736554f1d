// Fault injection on the test services, as production meets it: a broker killed with -9 and started again with
// its data, PostgreSQL stopped in immediate mode (a crash) and started again. Only on services the tests started.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { childStdio, testLogLevel } from './helpers.js';

const run = promisify(execFile);
const SERVICES = fileURLToPath(new URL('../scripts/services', import.meta.url));
export const BIN = fileURLToPath(new URL('../bin/fleet-sync.js', import.meta.url));

function servicesDir(): string {
  const dir = process.env.FLEET_SYNC_TEST_SERVICES_DIR;
  if (!dir) {
    throw new Error('the fault tests restart PostgreSQL and Kafka, so they need the services test/global-setup.ts starts: unset DATABASE_URL and KAFKA_BROKERS');
  }
  return dir;
}

/** `scripts/services restart <name> --kill`: the same port and data afterwards. */
export async function crashAndRestart(name: 'kafka' | 'postgres'): Promise<void> {
  await run(SERVICES, ['restart', name, '--kill'], { env: { ...process.env, FLEET_SYNC_SERVICES_DIR: servicesDir() } });
}

export async function stopService(name: 'kafka' | 'postgres', kill = true): Promise<void> {
  await run(SERVICES, ['stop', name, ...(kill ? ['--kill'] : [])], { env: { ...process.env, FLEET_SYNC_SERVICES_DIR: servicesDir() } });
}

export async function startService(name: 'kafka' | 'postgres'): Promise<void> {
  await run(SERVICES, ['start', name], { env: { ...process.env, FLEET_SYNC_SERVICES_DIR: servicesDir() } });
}

/** A `fleet-sync <command>` process with the given environment; its output joins the tests' log. */
export function spawnFleetSync(command: string, env: Record<string, string>): ChildProcess & { exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, command], {
    env: { ...process.env, LOG_LEVEL: testLogLevel(), ...env },
    stdio: childStdio(),
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return Object.assign(child, { exited });
}
