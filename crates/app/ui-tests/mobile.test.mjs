// The console at 375 px wide (a small phone): no horizontal scrolling, tables shown as cards.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { admin, adminToken, genericConfig, launch, loginThroughUi, openPage, overflowsHorizontally, shot, env } from './lib.mjs';

let browser;
let page;
let problems;
let token;
let config;

before(async () => {
  token = await adminToken();
  config = await genericConfig(token, 'Weather API (mobile)', 'mobile-weather', [
    'sk-mobile-first-0001', 'sk-mobile-second-0002', 'sk-mobile-third-0003',
  ]);
  browser = await launch();
  ({ page, problems } = await openPage(browser, { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true }));
});

after(async () => {
  await browser?.close();
  if (config) await admin(token, 'DELETE', `/proxy-configs/${config.id}`);
});

test('the login page fits 375 px', async () => {
  await page.goto(`${env.baseUrl}/`);
  await page.locator('#login-password').waitFor();
  assert.equal(await overflowsHorizontally(page), false);
  await shot(page, '11-mobile-login');
});

test('the config list fits 375 px, as cards', async () => {
  await loginThroughUi(page);
  await page.locator('tr[data-slug="mobile-weather"]').waitFor();
  assert.equal(await page.locator('.configs-table thead').isVisible(), false, 'the table header is hidden on phones');
  assert.equal(await overflowsHorizontally(page), false);
  await shot(page, '12-mobile-configs', { fullPage: true });
});

test('the key pool and the form fit 375 px', async () => {
  await page.click('tr[data-slug="mobile-weather"] .manage-keys');
  await page.locator('tr.key-row').first().waitFor();
  assert.equal(await page.locator('tr.key-row').count(), 3);
  assert.equal(await overflowsHorizontally(page), false);
  await shot(page, '13-mobile-key-pool', { fullPage: true });

  await page.goto(`${env.baseUrl}/#/configs/${config.id}/edit`);
  await page.locator('.config-form').waitFor();
  assert.equal(await overflowsHorizontally(page), false);
  await shot(page, '14-mobile-config-form', { fullPage: true });
  assert.deepEqual(problems, []);
});
