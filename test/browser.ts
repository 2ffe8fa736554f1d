// Headless Chromium for tests that look at a page: Debian's chromium package driven by playwright-core.
// Like scripts/services with PostgreSQL, a root run installs the package when it is missing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];

function chromiumPath(): string {
  const found = () => CANDIDATES.find((path) => existsSync(path));
  if (found()) return found()!;
  if (process.getuid?.() !== 0) throw new Error(`no Chromium at ${CANDIDATES.join(' or ')}: install it (Debian: apt-get install chromium) and retry`);
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
  execFileSync('apt-get', ['install', '-y', '-qq', 'chromium'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!found()) throw new Error('apt-get install chromium left no chromium binary');
  return found()!;
}

export async function launchChromium(): Promise<Browser> {
  // As root Chromium refuses its sandbox; the pages opened are the test's own.
  return chromium.launch({ executablePath: chromiumPath(), args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
}
