// The operators' status page (GET /) in a real browser, against the api as `fleet-sync api` runs it and a live
// pipeline: a park turned on shows with its counts, the token comes from ?token= or the form, /v1 stays guarded.
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApi, type RunningApi } from '../api/main.js';
import { launchChromium } from './browser.js';
import { testLogger, waitFor } from './helpers.js';
import { startPipeline, waitForConvergence, type Pipeline } from './pipeline.js';

const TOKEN = 'page-reader';
const SCREENSHOT = fileURLToPath(new URL('../test-output/status-page.png', import.meta.url));

describe('status page', () => {
  let p: Pipeline;
  let api: RunningApi;
  let browser: Browser;

  const post = async (path: string, body: object) => {
    const res = await fetch(api.url + path, { method: 'POST', headers: { authorization: 'Bearer writer', 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect(res.status).toBe(200);
  };
  const parkRow = (page: Page, park: string) => page.locator(`tr[data-park="${park}"]`);

  beforeAll(async () => {
    p = await startPipeline({ overrides: { API_TOKENS: `writer=sync:write,users:read;${TOKEN}=users:read;no-read=sync:write`, API_HOST: '127.0.0.1', API_PORT: '0' } });
    await p.db.pool.query(`
      INSERT INTO parks (id, name) VALUES ('north', 'North park'), ('south', 'South park');
      INSERT INTO roles (id, park_id, name) VALUES ('north-op', 'north', 'operator'), ('north-admin', 'north', 'admin'), ('south-op', 'south', 'operator');
      INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_enabled)
        SELECT 'north', CASE WHEN g % 10 = 0 THEN NULL ELSE 'uid-n' || g END, 'n' || g, 'North ' || g, CASE WHEN g % 4 = 0 THEN 'north-admin' ELSE 'north-op' END, g % 7 <> 0
          FROM generate_series(1, 40) g;
      INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'south', 'uid-s' || g, 's' || g, 'South ' || g, 'south-op' FROM generate_series(1, 10) g;`);
    api = await startApi({ config: p.config, log: testLogger(), metrics: p.metrics });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await p?.stop();
  });

  it('shows a park turned on with its users granted, last event and backfill, and the streaming source; saves a screenshot', async () => {
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
    await post('/v1/sync/call_center/park/on', {
      park_id: 'north',
      project_id: 'cc-north',
      roles: [{ role_id: 'north-op', call_center_role_id: 'operator' }, { role_id: 'north-admin', call_center_role_id: 'supervisor' }],
    });
    await post('/v1/sync/call_center/park/on', { park_id: 'south', project_id: 'cc-south', roles: [{ role_id: 'south-op', call_center_role_id: 'operator' }] });
    await post('/v1/sync/call_center/park/off', { park_id: 'south', revoke: true });
    await waitForConvergence(p, 'the backfill of north and the revocation of south', 30_000);
    // 40 users: 4 without uid (every 10th) and 5 disabled (every 7th): 31 hold a role.
    const granted = Object.keys(p.sim.state().projects['cc-north'] ?? {}).length;
    expect(granted).toBe(31);
    // One more change after the backfill, so that the row shows a live event applied.
    await p.db.pool.query(`UPDATE users SET role_id = 'north-admin' WHERE park_id = 'north' AND yandex_uid = 'uid-n1'`);
    await waitForConvergence(p, 'a role change in north');

    const page = await browser.newPage({ viewport: { width: 1360, height: 560 } });
    await page.goto(`${api.url}/?token=${TOKEN}`);
    const north = parkRow(page, 'north');
    await waitFor(async () => /\d+ events?\b/.test((await north.textContent()) ?? ''), { what: 'the north row with its last event', timeoutMs: 15_000 });
    expect(await north.locator('[data-field="users_granted"]').textContent()).toBe(String(granted));
    const text = (await north.textContent())!;
    expect(text).toContain('on');
    expect(text).toContain('cc-north');
    expect(text).toContain('backfill');
    expect(text).toMatch(/checked 40/);
    expect(await parkRow(page, 'south').textContent()).toContain('off · revoked');
    expect(await page.locator('#source').textContent()).toContain('streaming');
    expect(await page.locator('#users-granted .value').textContent()).toBe(String(granted));
    // The token left the address bar once stored.
    expect(new URL(page.url()).search).toBe('');
    mkdirSync(fileURLToPath(new URL('../test-output/', import.meta.url)), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await page.close();
  });

  it('asks for a token without one, and names the missing scope for a token that cannot read', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(api.url + '/');
    await page.locator('#token').waitFor({ state: 'visible' });
    expect(await page.locator('#parks tr').count()).toBe(0);

    await page.fill('#token', 'no-read');
    await page.click('button[type="submit"]');
    await waitFor(async () => ((await page.locator('#form-error').textContent()) ?? '').includes('users:read'), { what: 'the refusal of a token without users:read' });

    await page.fill('#token', TOKEN);
    await page.click('button[type="submit"]');
    await parkRow(page, 'north').waitFor({ state: 'visible' });
    await context.close();
  });

  it('serves the page without a token, with a strict content policy, while /v1 still refuses a request without one', async () => {
    const page = await fetch(api.url + '/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'sha256-[^']+'/);
    expect(await page.text()).toContain('<title>fleet-sync status</title>');
    const status = await fetch(api.url + '/v1/sync/call_center/parks');
    expect(status.status).toBe(401);
    expect(await status.json()).toMatchObject({ code: 'UNAUTHORIZED' });
  });
});
