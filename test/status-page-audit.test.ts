// The status page's audit sections in a real browser, against the api and a database built by hand: the latest
// changes (who, what, why, when), a chart of the last 24 hours per park, a uid opening why it holds what it holds,
// a token without audit:read still seeing the rest, and hostile text in the trail shown as text.
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApi, type RunningApi } from '../api/main.js';
import { launchChromium } from './browser.js';
import { createTestDatabase, testConfig, testLogger, waitFor, type TestDatabase } from './helpers.js';

const READER = 'page-reader';
const PLAIN = 'plain-reader';
const HOSTILE = '<img src=x onerror="window.__pwned=1">';
const SCREENSHOT = fileURLToPath(new URL('../test-output/status-page-audit.png', import.meta.url));

describe('status page: the audit trail', () => {
  let db: TestDatabase;
  let api: RunningApi;
  let browser: Browser;

  const open = async (token: string): Promise<Page> => {
    const page = await (await browser.newContext({ viewport: { width: 1360, height: 900 } })).newPage();
    await page.goto(`${api.url}/?token=${token}`);
    await page.locator('tr[data-park="north"]').waitFor({ state: 'visible' });
    return page;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const sweep = `'{"kind":"sweep","run_id":"12","reason":"park_on","park_id":"north","toggle":{"id":"1","at":"2026-11-30T20:00:59.000Z","enabled":true,"revoke":null,"token_name":"ops","request_id":"req-7"}}'`;
    await db.pool.query(`
      INSERT INTO parks (id, name) VALUES ('north', 'North'), ('south', 'South');
      INSERT INTO roles (id, park_id, name) VALUES ('north-op', 'north', 'operator');
      INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('north', '4001', 'ivan', 'Ivan', 'north-op');
      INSERT INTO call_center_parks (park_id, project_id, role_map, enabled, enabled_at) VALUES
        ('north', 'cc-north', '{"north-op": "operator"}', true, now() - interval '3 hours'),
        ('south', 'cc-south', '{}', true, now() - interval '3 hours');
      INSERT INTO call_center_toggles (park_id, at, enabled, project_id, role_map, token_name, request_id)
        VALUES ('north', now() - interval '3 hours', true, 'cc-north', '{"north-op": "operator"}', 'ops', 'req-7');
      INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending, managed) VALUES ('cc-north', '4001', 'north', '{operator}', false, true);
      -- 30 older changes of other uids, 2 and 5 hours ago, then 4001's grant by the backfill, then a hostile row last.
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
        SELECT now() - make_interval(hours => CASE WHEN i <= 10 THEN 5 ELSE 2 END), 'cc-north', 'u' || i, 'north', 'roles', '{}', '{operator}',
               'applied', 'event', jsonb_build_object('kind', 'event', 'events', jsonb_build_array(jsonb_build_object('topic', 'fleet.public.users',
                 'partition', 1, 'offset', i::text, 'lsn', '0/16B3748', 'tx_id', 700 + i, 'commit_ts', '2026-11-30T20:00:00.000Z', 'op', 'u',
                 'park_id', 'north', 'role_id', 'north-op', 'user_id', NULL)))
          FROM generate_series(1, 30) i;
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
        VALUES (now() - interval '1 minute', 'cc-north', '4001', 'north', 'roles', '{}', '{operator}', 'applied', 'sweep', ${sweep});
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause)
        VALUES (now(), 'cc-south', $$${HOSTILE}$$, 'south', 'roles', '{}', ARRAY[$$<b>boss</b>$$], 'refused', $$<script>window.__pwned=2</script>$$, 'replay',
                '{"kind":"replay","events":[]}');`);
    api = await startApi({
      config: testConfig(db, { API_TOKENS: `reader:${READER}=users:read,audit:read;${PLAIN}=users:read`, API_HOST: '127.0.0.1', API_PORT: '0' }),
      log: testLogger(),
    });
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await db?.drop();
  });

  it('lists the latest 20 changes, newest first: who, what, why and when; hostile text stays text', async () => {
    const page = await open(READER);
    const rows = page.locator('#changes tr');
    await waitFor(async () => (await rows.count()) === 20, { what: '20 latest changes' });
    const hostile = (await rows.nth(0).locator('td').allTextContents()).join(' | ');
    expect(hostile).toContain(HOSTILE);
    expect(hostile).toContain('roles [] → [<b>boss</b>] in cc-south');
    expect(hostile).toContain('<script>window.__pwned=2</script>');
    expect(await page.locator('#changes img, #changes b, #changes script').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();

    const cells = await rows.nth(1).locator('td').allTextContents();
    expect(cells[0]).toMatch(/^\d+ (s|min) ago$/);
    expect(cells[1]).toBe('4001park north');
    expect(cells[2]).toBe('roles [] → [operator] in cc-north');
    expect(cells[3]).toBe('sweep #12 · park_on by ops');
    expect(cells[4]).toBe('applied');
    expect(await rows.nth(1).locator('td').nth(3).getAttribute('title')).toBe('turned on by token ops, request req-7, at 2026-11-30T20:00:59.000Z');
    expect((await rows.nth(2).locator('td').allTextContents())[3]).toBe('event users[1]@30 · update');
    await page.context().close();
  });

  it('charts each park’s changes of the last 24 hours as bars, one per hour', async () => {
    const page = await open(READER);
    const bars = page.locator('tr[data-park="north"] [data-field="chart"] svg rect');
    await waitFor(async () => (await bars.count()) === 24, { what: 'the north chart' });
    const counts = (await bars.evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('data-count'))))) as number[];
    // 10 changes five hours ago, 20 two hours ago, 1 a minute ago: three bars, oldest first.
    expect(counts.reduce((a, b) => a + b, 0)).toBe(31);
    expect(counts.filter((n) => n > 0)).toEqual([10, 20, 1]);
    expect(await page.locator('tr[data-park="north"] [data-field="chart"]').textContent()).toContain('31 in 24 h');
    // A refused change is not a change: south's chart is flat.
    const south = await page.locator('tr[data-park="south"] [data-field="chart"] svg rect').evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('data-count'))));
    expect(south).toEqual(new Array(24).fill(0));
    await page.context().close();
  });

  it('a uid opens why it holds what it holds; saves a screenshot', async () => {
    const page = await open(READER);
    await page.locator('#changes button[data-uid="4001"]').first().click();
    await waitFor(async () => ((await page.locator('#why-text').textContent()) ?? '').includes('applied by sweep run 12'), { what: 'the why panel' });
    const text = (await page.locator('#why-text').textContent())!;
    expect(text).toMatch(/^uid 4001 in project cc-north holds \[operator\] since \d{4}-/);
    expect(text).toContain('and its mapping gives north-op → operator: [operator]');
    expect(await page.locator('#why-title').textContent()).toBe('Why uid 4001');
    // The hostile uid's why is asked for with its text, escaped in the URL, and shown as text.
    await page.locator('#changes tr').first().locator('button.link').click();
    await waitFor(async () => ((await page.locator('#why-title').textContent()) ?? '').includes(HOSTILE), { what: 'the hostile uid’s panel' });
    await waitFor(async () => ((await page.locator('#why-text').textContent()) ?? '').startsWith('uid <img'), { what: 'its why' });
    expect(await page.locator('#why-panel img').count()).toBe(0);
    mkdirSync(fileURLToPath(new URL('../test-output/', import.meta.url)), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await page.click('#why-close');
    expect(await page.locator('#why-panel').isHidden()).toBe(true);
    await page.context().close();
  });

  it('a token without audit:read sees the parks, and the audit sections say what it lacks', async () => {
    const page = await open(PLAIN);
    await waitFor(async () => ((await page.locator('#audit-note').textContent()) ?? '').includes('audit:read'), { what: 'the missing scope named' });
    expect(await page.locator('#audit-note').textContent()).toContain('This token lacks the audit:read scope');
    expect(await page.locator('#changes-table').isHidden()).toBe(true);
    expect(await page.locator('tr[data-park="north"] td').last().textContent()).toBe('needs audit:read');
    expect(await page.locator('tr[data-park="north"]').textContent()).toContain('cc-north');
    await page.context().close();
  });
});
