// A pool larger than one page: the console shows the first page, loads the next ones with
// "Load more" until the API has no next_cursor, filters by health and switch, and counts the
// whole pool from the server's grouped count, not from the loaded keys.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { admin, genericConfig, launch, openPage, openWithSession, shot, env } from './lib.mjs';

const POOL = 230;

let browser;
let page;
let problems;
let token;
let config;
let disabledId;

before(async () => {
  token = env.adminToken;
  const keys = Array.from({ length: POOL }, (_, i) => `sk-paged-${String(i).padStart(4, '0')}-key`);
  config = await genericConfig(token, 'Paged pool', 'paged-pool', keys);
  const first = await admin(token, 'GET', `/proxy-configs/${config.id}/keys?limit=1`);
  disabledId = first.items[0].id;
  await admin(token, 'PATCH', `/keys/${disabledId}`, { is_active: false });
  browser = await launch();
  ({ page, problems } = await openPage(browser));
  await openWithSession(page);
});

after(async () => {
  await browser?.close();
  if (config) await admin(token, 'DELETE', `/proxy-configs/${config.id}`);
});

const rowCount = () => page.locator('tr.key-row').count();

test('the config list counts the whole pool', async () => {
  await page.locator('tr[data-slug="paged-pool"]').waitFor();
  const counts = await page.textContent('tr[data-slug="paged-pool"] .col-keys');
  assert.match(counts, new RegExp(`${POOL} keys`));
  assert.match(counts, /1 disabled/);
});

test('the first page is shown, and Load more reads the rest', async () => {
  await page.click('tr[data-slug="paged-pool"] .manage-keys');
  await page.locator('.keys-page').waitFor();
  assert.equal(await rowCount(), 100, 'one page of 100');
  assert.match(await page.textContent('.pool-summary'), new RegExp(`${POOL} keys`));
  assert.match(await page.textContent('.keys-shown'), /Showing 100 keys/);
  await shot(page, '10-key-pool-paged');

  await page.click('.load-more');
  await page.waitForFunction(() => document.querySelectorAll('tr.key-row').length === 200);
  await page.click('.load-more');
  await page.waitForFunction((pool) => document.querySelectorAll('tr.key-row').length === pool, POOL);
  assert.equal(await page.locator('.load-more').isVisible(), false, 'no next page after the last one');
  const ids = await page.locator('tr.key-row').evaluateAll((rows) => rows.map((tr) => Number(tr.dataset.keyId)));
  assert.equal(new Set(ids).size, POOL, 'no key twice');
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'ordered by id');
});

test('the switch and health filters narrow the list', async () => {
  await page.selectOption('#filter-active', 'false');
  await page.waitForFunction(() => document.querySelectorAll('tr.key-row').length === 1);
  assert.equal(await page.getAttribute('tr.key-row', 'data-key-id'), String(disabledId));
  assert.equal(await page.locator('.load-more').isVisible(), false);

  await page.selectOption('#filter-active', '');
  await page.selectOption('#filter-health', 'failed');
  await page.locator('.keys-page .panel.empty').waitFor();
  assert.match(await page.textContent('.keys-page .panel.empty'), /No key matches/);

  await page.selectOption('#filter-health', 'ok');
  await page.waitForFunction(() => document.querySelectorAll('tr.key-row').length === 100);
  assert.equal(await page.inputValue('#filter-health'), 'ok', 'the filter survives the re-render');
  assert.equal(await page.locator('.load-more').isVisible(), true);
  await page.selectOption('#filter-health', '');
  assert.deepEqual(problems, [], 'no console errors or failed requests');
});
