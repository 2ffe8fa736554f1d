// Child processes of the demo: each in its own process group with its output in a log file, so a --keep run can
// leave them behind; started, waited for, and stopped with SIGTERM (SIGKILL after a grace period).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { sleep } from '../../connector/time.js';

export interface Child {
  name: string;
  process: ChildProcess;
  pid: number;
  logFile: string;
  /** resolves with the exit code (or the signal's name) when the process ends */
  exited: Promise<number | string>;
  /** the last lines of its log, for an error message */
  tail(lines?: number): string;
}

export function startChild(name: string, command: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd: string; logFile: string }): Child {
  const fd = openSync(options.logFile, 'a');
  const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name} did not start (${command} ${args.join(' ')})`);
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return {
    name,
    process: child,
    pid: child.pid,
    logFile: options.logFile,
    exited,
    tail(lines = 15) {
      try {
        return readFileSync(options.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
  };
}

const running = (child: Child) => child.process.exitCode === null && child.process.signalCode === null;

/** SIGTERM (a clean stop: in-flight work flushed), then SIGKILL if it is still running after `graceMs`. */
export async function stopChild(child: Child, graceMs = 20_000): Promise<number | string> {
  if (!running(child)) return child.exited;
  child.process.kill('SIGTERM');
  const grace = new AbortController();
  const result = await Promise.race([child.exited, sleep(graceMs, grace.signal).then(() => null)]);
  grace.abort();
  if (result !== null) return result;
  child.process.kill('SIGKILL');
  return child.exited;
}

/** Polls `check` every `intervalMs` until it returns a value, failing early when a process it depends on exits. */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined | null | false>, options: { timeoutMs: number; intervalMs?: number; children?: Child[] }): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  for (;;) {
    for (const child of options.children ?? []) {
      if (!running(child)) throw new Error(`${child.name} exited (${child.process.exitCode ?? child.process.signalCode}) while waiting for ${what}; its log (${child.logFile}) ends:\n${child.tail()}`);
    }
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${options.timeoutMs / 1000} s waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    await sleep(options.intervalMs ?? 100);
  }
}

/** A port free on 127.0.0.1 right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
