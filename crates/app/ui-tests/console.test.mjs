// The admin console end to end, as an admin uses it: log in, create a GENERIC and an LLM
// config, import keys, disable one, watch proxied traffic and a rate-limited key in the pool,
// fix a validation error, switch to Chinese, delete, log out, lose the session.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, openPage, shot } from './lib.mjs';

const KEYS = [
  'sk-e2e-alpha-0001',
  'sk-e2e-bravo-0002',
  'sk-e2e-charlie-0003',
  'sk-e2e-delta-0004',
  env.rateLimitedKey,
];
const DISABLED_SUFFIX = '0002';
const REQUESTS = 8;

let browser;
let page;
let problems;
let genericId;

const row = (suffix) => page.locator('tr.key-row').filter({ has: page.locator(`.masked-key:text-matches("${suffix}$")`) });

async function keyRows() {
  return page.locator('tr.key-row').evaluateAll((rows) => rows.map((tr) => ({
    id: tr.dataset.keyId,
    key: tr.querySelector('.masked-key').textContent,
    active: tr.dataset.active === 'true',
    health: tr.querySelector('.health').dataset.health,
    requests: Number(tr.querySelector('.request-count').textContent.replace(/\D/g, '')),
    failures: Number(tr.querySelector('.failure-count').textContent.replace(/\D/g, '')),
    lastStatus: tr.querySelector('.last-status').textContent,
    healthText: tr.querySelector('.health-cell').textContent,
  })));
}

before(async () => {
  browser = await launch();
  ({ page, problems } = await openPage(browser));
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.baseUrl });
});

after(async () => {
  await browser?.close();
});

test('the login page rejects a wrong password and lets the admin in', async () => {
  await page.goto(`${env.baseUrl}/`);
  await page.locator('#login-password').waitFor();
  assert.equal(new URL(page.url()).hash, '#/login');
  assert.equal(await page.locator('#logout').isVisible(), false);
  await shot(page, '01-login');

  await page.fill('#login-password', 'not-the-password');
  await page.click('.login-form button[type=submit]');
  await page.locator('#login-error').waitFor({ state: 'visible' });
  assert.equal(await page.textContent('#login-error'), 'Wrong username or password');

  await page.fill('#login-password', env.adminPassword);
  await page.click('.login-form button[type=submit]');
  await page.locator('.configs-page').waitFor();
  assert.equal(await page.textContent('.configs-page h1'), 'Proxy configs');
  assert.ok(await page.locator('#logout').isVisible());
  const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('akr.token'), cookie: document.cookie }));
  assert.ok(stored.session, 'the token is kept in sessionStorage');
  assert.equal(stored.cookie, '', 'no cookie is set');
  await shot(page, '02-configs-empty');
});

test('a GENERIC config is created with only its fields shown', async () => {
  await page.click('.new-config');
  await page.locator('.config-form').waitFor();
  await page.selectOption('#field-config_type', 'GENERIC');
  assert.ok(await page.locator('#field-method').isVisible());
  assert.ok(await page.locator('#field-target_url').isVisible());
  assert.equal(await page.locator('#field-target_base_url').isVisible(), false);
  assert.equal(await page.locator('#field-api_format').isVisible(), false);

  await page.fill('#field-name', 'E2E Generic');
  assert.equal(await page.inputValue('#field-slug'), 'e2e-generic', 'the slug follows the name');
  await page.selectOption('#field-method', 'GET');
  await page.fill('#field-target_url', env.mockUrl);
  await page.selectOption('#field-api_key_location', 'header');
  await page.fill('#field-api_key_name', 'x-api-key');
  assert.ok(await page.locator('#field-api_key_prefix').isVisible(), 'a GENERIC key placement offers a prefix');
  assert.equal(await page.inputValue('#field-api_key_prefix'), '', 'no prefix unless one is typed');
  assert.match(await page.textContent('#client-url-preview'), /\/proxy\/e2e-generic$/);
  await shot(page, '03-config-form-generic');
  await page.click('.save');
  await page.locator('.keys-page').waitFor();
  genericId = await page.locator('.keys-page').getAttribute('data-config-id');
  assert.equal(await page.textContent('.config-title'), 'E2E Generic');
});

test('an LLM config is created, with fields that follow the format', async () => {
  await page.goto(`${env.baseUrl}/#/configs/new`);
  await page.locator('.config-form').waitFor();
  await page.selectOption('#field-config_type', 'LLM');
  assert.equal(await page.locator('#field-method').isVisible(), false);
  assert.equal(await page.locator('#field-target_url').isVisible(), false);
  assert.ok(await page.locator('#field-target_base_url').isVisible());
  assert.equal(await page.locator('#field-api_key_name').isVisible(), false, 'no key name while the format default is used');

  await page.fill('#field-name', 'E2E LLM');
  await page.fill('#field-target_base_url', `${env.mockUrl}/v1`);
  assert.match(await page.textContent('#client-url-preview'), /\/llm\/e2e-llm\/v1$/);
  await page.selectOption('#field-api_format', 'anthropic_native');
  assert.match(await page.textContent('#client-url-preview'), /\/llm\/e2e-llm$/);
  assert.match(await page.locator('#field-api_key_location option').first().textContent(), /x-api-key/);
  await page.selectOption('#field-api_key_location', 'header');
  assert.ok(await page.locator('#field-api_key_name').isVisible(), 'an explicit location asks for its name');
  assert.ok(await page.locator('#field-api_key_prefix').isVisible(), 'and offers a prefix');
  await page.selectOption('#field-api_key_location', '');
  assert.equal(await page.locator('#field-api_key_prefix').isVisible(), false, 'no prefix with the format default');
  await page.selectOption('#field-api_format', 'openai_compatible');
  assert.ok(await page.isChecked('#retry-on-default'), 'the failover policy starts at the defaults');
  assert.ok(await page.isDisabled('#retry-on-timeout'));
  await page.fill('#field-response_timeout_seconds', '900');
  await page.fill('#field-max_retries', '1');
  await page.uncheck('#retry-on-default');
  await page.check('#retry-on-server_error');
  await page.check('#retry-on-timeout');
  await shot(page, '04-config-form-llm');
  await page.click('.save');
  await page.locator('.keys-page').waitFor();
  const llmId = await page.locator('.keys-page').getAttribute('data-config-id');
  await page.goto(`${env.baseUrl}/#/configs/${llmId}/edit`);
  await page.locator('.config-form').waitFor();
  assert.equal(await page.inputValue('#field-response_timeout_seconds'), '900', 'the policy was saved');
  assert.equal(await page.inputValue('#field-max_retries'), '1');
  assert.ok(await page.isChecked('#retry-on-timeout'));
  assert.equal(await page.isChecked('#retry-on-rate_limited'), false);

  await page.goto(`${env.baseUrl}/#/configs`);
  await page.locator('tr[data-slug="e2e-llm"]').waitFor();
  const urls = await page.locator('tr.config-row').evaluateAll((rows) => Object.fromEntries(
    rows.map((tr) => [tr.dataset.slug, tr.querySelector('.client-url').textContent]),
  ));
  assert.match(urls['e2e-generic'], /^https?:\/\/[^/]+\/proxy\/e2e-generic$/);
  assert.match(urls['e2e-llm'], /^https?:\/\/[^/]+\/llm\/e2e-llm\/v1$/);
  if (env.publicBaseUrl) {
    assert.equal(urls['e2e-generic'], `${env.publicBaseUrl}/proxy/e2e-generic`, 'built from proxy_public_base_url');
    assert.equal(urls['e2e-llm'], `${env.publicBaseUrl}/llm/e2e-llm/v1`);
  }
  assert.match(await page.textContent('tr[data-slug="e2e-generic"] .col-upstream'), /GET/);
  assert.match(await page.textContent('tr[data-slug="e2e-llm"] .col-type'), /LLM/);

  await page.click('tr[data-slug="e2e-llm"] button.copy');
  await page.locator('.toast', { hasText: 'Copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), urls['e2e-llm']);

  await page.click('tr[data-slug="e2e-llm"] .switch');
  await page.locator('.toast', { hasText: 'is inactive' }).waitFor();
  await page.reload();
  await page.locator('tr[data-slug="e2e-llm"]').waitFor();
  assert.equal(await page.isChecked('tr[data-slug="e2e-llm"] input[role=switch]'), false, 'the active switch was saved');
  await page.click('tr[data-slug="e2e-llm"] .switch');
  await page.locator('.toast', { hasText: 'is active' }).waitFor();
});

test('five pasted keys are imported, duplicates are counted as skipped', async () => {
  await page.click('tr[data-slug="e2e-generic"] .manage-keys');
  await page.locator('.keys-page').waitFor();
  await page.fill('#import-keys', `${KEYS[0]}\n${KEYS[1]}, ${KEYS[2]}\n\n${KEYS[3]},${KEYS[4]}\n`);
  await page.click('button.import');
  await page.locator('.import-counts').waitFor();
  assert.equal(await page.textContent('.import-counts'), 'Imported 5 · skipped 0 (duplicates) · failed 0');
  assert.equal(await page.locator('tr.key-row').count(), 5);
  for (const key of await keyRows()) {
    assert.ok(!KEYS.includes(key.key), `key ${key.key} is masked`);
    assert.equal(key.health, 'ok');
  }

  await page.fill('#import-keys', `${KEYS[0]},${KEYS[1]}`);
  await page.click('button.import');
  await page.locator('.import-counts', { hasText: 'Imported 0' }).waitFor();
  assert.equal(await page.textContent('.import-counts'), 'Imported 0 · skipped 2 (duplicates) · failed 0');
  assert.match(await page.textContent('.pool-summary'), /5 keys/);
});

test('a key is disabled with its switch', async () => {
  await row(DISABLED_SUFFIX).locator('.switch').click();
  await page.locator(`tr.key-row.disabled`).waitFor();
  const disabled = (await keyRows()).filter((key) => !key.active);
  assert.equal(disabled.length, 1);
  assert.match(disabled[0].key, new RegExp(`${DISABLED_SUFFIX}$`));
  assert.match(await page.textContent('.pool-summary'), /1 disabled/);
});

test('proxied requests show up as usage, and the 429 key as cooling', async () => {
  for (let i = 0; i < REQUESTS; i += 1) {
    const response = await fetch(`${env.baseUrl}/proxy/e2e-generic/ping?n=${i}`, { headers: { 'X-Proxy-Key': env.proxyKey } });
    const text = await response.text();
    assert.equal(response.status, 200, `proxied request ${i}: ${text}`);
    const body = JSON.parse(text);
    assert.notEqual(body.key, env.rateLimitedKey);
    assert.notEqual(body.key, KEYS[1], 'the disabled key is never used');
  }
  // Usage is flushed every second (USAGE_FLUSH_SECONDS=1): reload until it shows.
  let rows = [];
  for (let attempt = 0; attempt < 30; attempt += 1) {
    await page.reload();
    await page.locator('tr.key-row').first().waitFor();
    rows = await keyRows();
    if (rows.reduce((sum, key) => sum + key.requests, 0) >= REQUESTS + 1) break;
    await page.waitForTimeout(500);
  }
  const total = rows.reduce((sum, key) => sum + key.requests, 0);
  assert.equal(total, REQUESTS + 1, `every attempt is counted, the retried 429 too: ${JSON.stringify(rows)}`);
  const disabled = rows.find((key) => key.key.endsWith(DISABLED_SUFFIX));
  assert.equal(disabled.requests, 0);
  const cooled = rows.find((key) => key.key.endsWith(env.rateLimitedKey.slice(-4)));
  assert.equal(cooled.health, 'cooling', JSON.stringify(cooled));
  assert.match(cooled.healthText, /Cooling\s*until/);
  assert.equal(cooled.failures, 1);
  assert.equal(cooled.lastStatus, '429');
  assert.match(await page.textContent('.pool-summary'), /1 cooling/);
  const used = rows.filter((key) => key.active && key.health === 'ok');
  assert.ok(used.every((key) => key.requests >= 1 && key.lastStatus === '200'), JSON.stringify(used));
});

test('a key is tested against the upstream', async () => {
  await row('0001').locator('.test-key').click();
  const result = row('0001').locator('.test-result');
  await result.filter({ hasText: 'HTTP' }).waitFor();
  assert.match(await result.textContent(), /^HTTP 200 · \d+ ms · OK$/);
  await shot(page, '05-key-pool', { fullPage: true });
});

test('an invalid edit shows the server\'s errors beside the fields', async () => {
  await page.goto(`${env.baseUrl}/#/configs/${genericId}/edit`);
  await page.locator('.config-form').waitFor();
  assert.equal(await page.inputValue('#field-name'), 'E2E Generic');
  assert.ok((await page.inputValue('#field-target_url')).startsWith(env.mockUrl));
  await page.fill('#field-name', '');
  await page.fill('#field-target_url', 'not a url');
  await page.click('.save');
  await page.locator('#err-target_url').waitFor({ state: 'visible' });
  assert.ok((await page.textContent('#err-target_url')).length > 0);
  assert.ok(await page.locator('#err-name').isVisible());
  assert.equal(await page.getAttribute('#field-target_url', 'aria-invalid'), 'true');
  assert.equal(await page.locator('#err-slug').isVisible(), false);
  assert.match(await page.textContent('.form-error'), /fields need fixing/);
  await shot(page, '06-config-form-errors');

  await page.fill('#field-name', 'E2E Generic');
  await page.fill('#field-target_url', `${env.mockUrl}/v2`);
  await page.click('.save');
  await page.locator('.configs-page').waitFor();
  assert.ok((await page.textContent('tr[data-slug="e2e-generic"] .col-upstream')).includes(`${env.mockUrl}/v2`));
});

test('the console switches to Chinese and remembers it', async () => {
  await page.click('#lang-toggle');
  await page.locator('.configs-page h1', { hasText: '代理配置' }).waitFor();
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  assert.equal(await page.textContent('#lang-toggle'), 'English');
  assert.equal(await page.textContent('#logout'), '退出登录');
  await page.reload();
  await page.locator('.configs-page h1', { hasText: '代理配置' }).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('akr.lang')), 'zh');
  await shot(page, '07-configs-zh');
  await page.click('tr[data-slug="e2e-generic"] .manage-keys');
  await page.locator('.keys-page').waitFor();
  assert.match(await page.textContent('.keys-page .clear-keys'), /清空全部/);
  assert.match(await page.textContent('.keys-page'), /冷却中/);
  await shot(page, '08-key-pool-zh', { fullPage: true });
  await page.click('#lang-toggle');
  await page.locator('.keys-page .clear-keys', { hasText: 'Clear all' }).waitFor();
});

test('keys and configs are deleted after confirmation', async () => {
  await page.locator('tr.key-row').first().locator('.delete-key').click();
  await page.locator('dialog[open]').waitFor();
  await page.click('dialog[open] .confirm');
  await page.locator('.toast', { hasText: 'Key deleted' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('tr.key-row').length === 4);

  await page.click('.clear-keys');
  await page.locator('dialog[open]').waitFor();
  assert.match(await page.textContent('dialog[open]'), /Delete all 4 keys of “E2E Generic”/);
  await page.click('dialog[open] .cancel');
  await page.locator('dialog').waitFor({ state: 'detached' });
  assert.equal(await page.locator('tr.key-row').count(), 4, 'cancel keeps the keys');

  await page.click('.clear-keys');
  await page.click('dialog[open] .confirm');
  await page.locator('.keys-page .panel.empty').waitFor();
  assert.match(await page.textContent('.keys-page .panel.empty'), /No key/);

  await page.goto(`${env.baseUrl}/#/configs`);
  await page.click('tr[data-slug="e2e-llm"] .delete-config');
  await page.click('dialog[open] .confirm');
  await page.locator('tr[data-slug="e2e-llm"]').waitFor({ state: 'detached' });
  await page.click('tr[data-slug="e2e-generic"] .delete-config');
  await page.click('dialog[open] .confirm');
  await page.locator('tr[data-slug="e2e-generic"]').waitFor({ state: 'detached' });
});

test('logout, a rejected token and an expired session all lead back to the login page', async () => {
  await page.click('#logout');
  await page.locator('#login-password').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('akr.token')), null);

  await page.goto(`${env.baseUrl}/#/configs`);
  await page.locator('#login-password').waitFor();
  await page.fill('#login-password', env.adminPassword);
  await page.click('.login-form button[type=submit]');
  await page.locator('.configs-page').waitFor();

  // The server refuses the token (401): back to the login page, with a notice.
  await page.evaluate(() => sessionStorage.setItem('akr.token', 'forged.token.value'));
  await page.click('.configs-page .refresh');
  await page.locator('#login-password').waitFor();
  assert.match(await page.textContent('.login-form .alert-info'), /session has ended/);
  await shot(page, '09-session-ended');

  // The token runs out while the page is open.
  await page.fill('#login-password', env.adminPassword);
  await page.click('.login-form button[type=submit]');
  await page.locator('.configs-page').waitFor();
  await page.evaluate(() => sessionStorage.setItem('akr.expires', String(Date.now() + 1500)));
  await page.reload();
  await page.locator('.configs-page').waitFor();
  await page.locator('#login-password').waitFor({ timeout: 10000 });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('akr.token')), null);
});

test('nothing broke the page: no script error, no CSP violation, no dialog', () => {
  assert.deepEqual(problems, []);
});
