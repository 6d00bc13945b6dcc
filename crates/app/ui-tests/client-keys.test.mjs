// Client keys (SPEC §7) in the console: create one (its secret shown once, copied with the
// button, accepted by the proxy), see its usage, switch it off and on, edit its limits, rotate
// it (the old secret stops working), delete it after confirmation; in Chinese and at 375 px.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  admin, genericConfig, launch, openPage, openWithSession, overflowsHorizontally, shot, env,
} from './lib.mjs';

const NAME = 'Team Alpha';
const HTML_NAME = '<img src=x onerror=alert(3)>';
const SECRET = /^akr-[A-Za-z0-9_-]{32,}$/;

let browser;
let page;
let problems;
let token;
let config;
let secret;

const row = (name) => page.locator('tr.client-key-row').filter({ has: page.locator('.client-key-name', { hasText: name }) });

/** One proxied request with `key` as the proxy key; answers the status. */
async function proxied(key) {
  const response = await fetch(`${env.baseUrl}/proxy/ck-weather/forecast`, { headers: { 'X-Proxy-Key': key } });
  await response.arrayBuffer();
  return response.status;
}

async function keyNamed(name) {
  const list = await admin(token, 'GET', '/client-keys');
  return list.items.find((key) => key.name === name);
}

before(async () => {
  token = env.adminToken;
  config = await genericConfig(token, 'Client-key weather', 'ck-weather', ['sk-ck-weather-0001']);
  browser = await launch();
  ({ page, problems } = await openPage(browser));
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.baseUrl });
  await openWithSession(page);
});

after(async () => {
  await browser?.close();
  // Leave the server as we found it: later suites expect no config and no client key.
  const list = await admin(token, 'GET', '/client-keys').catch(() => ({ items: [] }));
  for (const key of list.items) await admin(token, 'DELETE', `/client-keys/${key.id}`);
  if (config) await admin(token, 'DELETE', `/proxy-configs/${config.id}`);
});

test('the navigation leads to the client keys page, empty at first', async () => {
  await page.click('#main-nav a[data-section="client-keys"]');
  await page.locator('.client-keys-page').waitFor();
  assert.equal(await page.getAttribute('#main-nav a[data-section="client-keys"]', 'aria-current'), 'page');
  assert.match(await page.textContent('.client-keys-page .panel.empty'), /No client key yet/);
});

test('a new key shows its secret once, with a copy button', async () => {
  await page.click('.new-client-key');
  await page.locator('.client-key-form').waitFor();
  await page.fill('#ck-name', NAME);
  await page.fill('#ck-rpm', '60');
  await page.fill('#ck-max_concurrency', '4');
  await page.fill('#ck-token_budget', '100000');
  // A budget needs its period: checked before anything is sent.
  await page.click('.client-key-form .save');
  await page.locator('#ck-err-budget_period:not([hidden])').waitFor();
  await page.selectOption('#ck-budget_period', 'month');
  await page.check(`#ck-config-${config.id}`);
  await shot(page, '22-client-key-form');
  await page.click('.client-key-form .save');

  const dialog = page.locator('dialog.secret-dialog[open]');
  await dialog.waitFor();
  secret = (await dialog.locator('.secret-value').textContent()).trim();
  assert.match(secret, SECRET);
  assert.match(await dialog.textContent(), /shown only this once/);
  await shot(page, '21-client-key-secret');
  await dialog.locator('.copy-secret').click();
  await page.locator('.toast', { hasText: 'Secret copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await dialog.locator('.close-secret').click();
  await page.locator('dialog.secret-dialog').waitFor({ state: 'detached' });
  assert.equal((await page.content()).includes(secret), false, 'the secret leaves the page with its dialog');

  const created = row(NAME);
  await created.waitFor();
  assert.equal(await created.locator('.key-prefix').textContent(), `${(await keyNamed(NAME)).key_prefix}…`);
  assert.ok(secret.startsWith((await keyNamed(NAME)).key_prefix), 'the prefix is the start of the secret');
  const limits = await created.locator('.col-limits').textContent();
  assert.match(limits, /60 requests\/min/);
  assert.match(limits, /4 in flight/);
  assert.match(await created.locator('.col-budget').textContent(), /0 of 100,000 tokens per month/);
  assert.match(await created.locator('.col-configs').textContent(), /Client-key weather/);
  assert.match(await created.locator('.col-last-used').textContent(), /Never used/);
});

test('the proxy accepts the secret, and the list shows its usage', async () => {
  for (let i = 0; i < 3; i += 1) assert.equal(await proxied(secret), 200, `request ${i}`);
  // Usage is flushed in batches (USAGE_FLUSH_SECONDS=1): refresh until it shows.
  let text = '';
  for (let attempt = 0; attempt < 30; attempt += 1) {
    await page.click('.client-keys-page .refresh');
    await row(NAME).waitFor();
    text = await row(NAME).locator('.col-usage').textContent();
    if (/^3 requests/.test(text)) break;
    await page.waitForTimeout(500);
  }
  assert.match(text, /^3 requests/);
  assert.doesNotMatch(await row(NAME).locator('.col-last-used').textContent(), /Never used/);
});

test('the switch turns the key off and on', async () => {
  await row(NAME).locator('.switch').click();
  await page.locator('.toast', { hasText: `“${NAME}” disabled` }).waitFor();
  await row(NAME).and(page.locator('[data-active="false"]')).waitFor();
  assert.equal((await keyNamed(NAME)).is_active, false);
  assert.equal(await proxied(secret), 401, 'a disabled key is refused');
  await row(NAME).locator('.switch').click();
  await row(NAME).and(page.locator('[data-active="true"]')).waitFor();
  assert.equal((await keyNamed(NAME)).is_active, true);
  assert.equal(await proxied(secret), 200);
});

test('an edit changes the limits and keeps the rest', async () => {
  await row(NAME).locator('.edit-client-key').click();
  await page.locator('.client-key-form').waitFor();
  assert.equal(await page.inputValue('#ck-rpm'), '60');
  assert.equal(await page.isChecked(`#ck-config-${config.id}`), true);
  await page.fill('#ck-rpm', '');
  await page.fill('#ck-tpm', '5000');
  await page.fill('#ck-expires_at', '2099-01-31T12:30');
  await page.click('.client-key-form .save');
  await page.locator('.client-keys-page').waitFor();
  const saved = await keyNamed(NAME);
  assert.equal(saved.rpm, null);
  assert.equal(saved.tpm, 5000);
  assert.equal(saved.max_concurrency, 4);
  assert.equal(saved.budget_period, 'month');
  assert.equal(new Date(saved.expires_at).getTime(), new Date('2099-01-31T12:30').getTime(), 'local time sent as UTC');
  assert.match(await row(NAME).locator('.col-limits').textContent(), /5,000 tokens\/min/);
  assert.doesNotMatch(await row(NAME).locator('.col-limits').textContent(), /requests\/min/);
  await page.evaluate(() => document.getElementById('toasts').replaceChildren());
  await shot(page, '20-client-keys', { fullPage: true });
});

test('rotate shows a new secret once; the old one stops working', async () => {
  await row(NAME).locator('.rotate-client-key').click();
  await page.locator('dialog[open] .confirm').click();
  const dialog = page.locator('dialog.secret-dialog[open]');
  await dialog.waitFor();
  const rotated = (await dialog.locator('.secret-value').textContent()).trim();
  assert.match(rotated, SECRET);
  assert.notEqual(rotated, secret);
  await dialog.locator('.close-secret').click();
  await page.locator('dialog.secret-dialog').waitFor({ state: 'detached' });
  assert.equal(await proxied(secret), 401, 'the old secret is refused');
  assert.equal(await proxied(rotated), 200, 'the new secret is accepted');
  secret = rotated;
});

test('a key named like HTML is shown as text', async () => {
  await admin(token, 'POST', '/client-keys', { name: HTML_NAME });
  await page.click('.client-keys-page .refresh');
  await row(HTML_NAME).waitFor();
  assert.equal(await row(HTML_NAME).locator('.client-key-name').textContent(), HTML_NAME);
  assert.equal(await page.locator('main img').count(), 0);
});

test('delete asks first; cancel keeps the key, confirm removes it', async () => {
  await row(HTML_NAME).locator('.delete-client-key').click();
  await page.locator('dialog[open]').waitFor();
  assert.match(await page.textContent('dialog[open] p'), /<img src=x onerror=alert\(3\)>/);
  await page.click('dialog[open] .cancel');
  assert.ok(await keyNamed(HTML_NAME), 'cancel keeps it');
  await row(HTML_NAME).locator('.delete-client-key').click();
  await page.click('dialog[open] .confirm');
  await page.locator('.toast', { hasText: 'deleted' }).waitFor();
  await row(HTML_NAME).waitFor({ state: 'detached' });
  assert.equal(await keyNamed(HTML_NAME), undefined);
});

test('the page speaks Chinese', async () => {
  await page.click('#lang-toggle');
  await page.locator('.client-keys-page h1', { hasText: '客户端密钥' }).waitFor();
  assert.equal(await page.textContent('#main-nav a[data-section="dashboard"]'), '仪表盘');
  assert.match(await row(NAME).locator('.col-actions').textContent(), /轮换/);
  await shot(page, '23-client-keys-zh', { fullPage: true });
  await page.click('#lang-toggle');
  await page.locator('.client-keys-page h1', { hasText: 'Client keys' }).waitFor();
});

test('the list and the form fit 375 px', async () => {
  const phone = await openPage(browser, { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  await openWithSession(phone.page);
  await phone.page.goto(`${env.baseUrl}/#/client-keys`);
  await phone.page.locator('tr.client-key-row').first().waitFor();
  assert.equal(await phone.page.locator('.client-keys-table thead').isVisible(), false, 'cards on phones');
  assert.equal(await overflowsHorizontally(phone.page), false);
  await shot(phone.page, '24-mobile-client-keys', { fullPage: true });
  await phone.page.goto(`${env.baseUrl}/#/client-keys/new`);
  await phone.page.locator('.client-key-form').waitFor();
  assert.equal(await overflowsHorizontally(phone.page), false);
  assert.deepEqual(phone.problems, []);
  await phone.context.close();
});

test('nothing broke the page', () => {
  assert.deepEqual(problems, []);
});
