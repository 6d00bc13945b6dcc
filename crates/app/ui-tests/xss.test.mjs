// Data from the API is always inserted as text: a config named like an HTML payload renders as
// those characters, in every view that shows it, and runs nothing.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { admin, adminToken, genericConfig, launch, loginThroughUi, openPage, shot, env } from './lib.mjs';

const NAME = '<img src=x onerror=alert(1)>';
const KEY = '<svg/onload=alert(2)>';

let browser;
let page;
let problems;
let token;
let config;

before(async () => {
  token = await adminToken();
  config = await genericConfig(token, NAME, 'xss-check', [KEY, 'sk-xss-plain-0001']);
  browser = await launch();
  ({ page, problems } = await openPage(browser));
});

after(async () => {
  await browser?.close();
  if (config) await admin(token, 'DELETE', `/proxy-configs/${config.id}`);
});

test('a config named like HTML renders as text in the list', async () => {
  await loginThroughUi(page);
  const name = page.locator('tr[data-slug="xss-check"] .config-name');
  await name.waitFor();
  assert.equal(await name.textContent(), NAME);
  assert.equal(await page.locator('img[src="x"]').count(), 0);
  assert.equal(await page.locator('.configs-page img, .configs-page svg').count(), 0);
  await shot(page, '10-xss-name-as-text');
});

test('the key pool, the edit form and the delete dialog show it as text too', async () => {
  await page.click('tr[data-slug="xss-check"] .manage-keys');
  await page.locator('.keys-page').waitFor();
  assert.equal(await page.textContent('.config-title'), NAME);
  assert.equal(await page.locator('main img, main svg').count(), 0);

  await page.goto(`${env.baseUrl}/#/configs/${config.id}/edit`);
  await page.locator('.config-form').waitFor();
  assert.equal(await page.inputValue('#field-name'), NAME);
  assert.match(await page.textContent('.config-form-page h1'), /<img src=x onerror=alert\(1\)>/);

  await page.goto(`${env.baseUrl}/#/configs`);
  await page.click('tr[data-slug="xss-check"] .delete-config');
  await page.locator('dialog[open]').waitFor();
  assert.match(await page.textContent('dialog[open] p'), /<img src=x onerror=alert\(1\)>/);
  assert.equal(await page.locator('dialog img').count(), 0);
  await page.click('dialog[open] .cancel');
});

test('no script ran and no CSP rule was broken', async () => {
  await page.waitForTimeout(300);
  assert.deepEqual(problems, []);
});
