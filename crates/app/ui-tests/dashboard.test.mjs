// The dashboard and the request log (SPEC §10) on real traffic: proxied requests through one
// healthy config and one whose only key is rate-limited become charts (the bars add up to the
// requests sent), top lists and log rows; the log's filters and "Load more" narrow and page it;
// in Chinese and at 375 px.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  admin, genericConfig, launch, openPage, openWithSession, overflowsHorizontally, shot, env,
} from './lib.mjs';

// More than one page of the log (50 rows), so "Load more" has work to do.
const OK_REQUESTS = 56;
const LIMITED_REQUESTS = 3;

let browser;
let page;
let problems;
let token;
let healthy;
let limited;

async function send(slug, count) {
  const statuses = [];
  for (let i = 0; i < count; i += 1) {
    const response = await fetch(`${env.baseUrl}/proxy/${slug}/forecast?n=${i}`, { headers: { 'X-Proxy-Key': env.proxyKey } });
    await response.arrayBuffer();
    statuses.push(response.status);
  }
  return statuses;
}

/** Every log record of one config, read through the API's pages. */
async function records(configId) {
  const all = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ proxy_config_id: String(configId), limit: '100' });
    if (cursor) query.set('cursor', cursor);
    const page = await admin(token, 'GET', `/request-logs?${query}`);
    all.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return all;
}

/** The numbers a chart's marks carry in their tooltips, by series label. */
function chartValues(chart) {
  return page.locator(`figure[data-chart="${chart}"] .marks title`).evaluateAll((titles) => titles.map((title) => {
    const [, label, value] = title.textContent.match(/· (.+): (.+)$/);
    return { label, value: Number(value.replace(/[^\d.]/g, '')) };
  }));
}

before(async () => {
  token = env.adminToken;
  healthy = await genericConfig(token, 'Dashboard weather', 'dash-weather', ['sk-dash-one-0001', 'sk-dash-two-0002']);
  limited = await genericConfig(token, 'Dashboard limited', 'dash-limited', [env.rateLimitedKey]);
  const ok = await send('dash-weather', OK_REQUESTS);
  assert.ok(ok.every((status) => status === 200), JSON.stringify(ok));
  const refused = await send('dash-limited', LIMITED_REQUESTS);
  assert.ok(refused.every((status) => status >= 400), JSON.stringify(refused));
  // Records reach the store in batches: wait until all of them are there.
  for (let attempt = 0; attempt < 60; attempt += 1) {
    const [a, b] = await Promise.all([records(healthy.id), records(limited.id)]);
    if (a.length >= OK_REQUESTS && b.length >= LIMITED_REQUESTS) break;
    await new Promise((resolve) => { setTimeout(resolve, 250); });
  }
  browser = await launch();
  ({ page, problems } = await openPage(browser));
  await openWithSession(page);
});

after(async () => {
  await browser?.close();
  for (const config of [healthy, limited]) if (config) await admin(token, 'DELETE', `/proxy-configs/${config.id}`);
});

test('the API recorded every request', async () => {
  const ok = await records(healthy.id);
  assert.equal(ok.length, OK_REQUESTS);
  assert.ok(ok.every((record) => record.status === 200 && record.method === 'GET'), JSON.stringify(ok[0]));
  const refused = await records(limited.id);
  assert.equal(refused.length, LIMITED_REQUESTS);
  assert.ok(refused.every((record) => record.status >= 400));
});

test('the dashboard draws the traffic of the last hour per minute', async () => {
  await page.click('#main-nav a[data-section="dashboard"]');
  await page.locator('.dashboard-page').waitFor();
  await page.click('.segmented a[data-interval="minute"]');
  await page.locator('.dashboard-page[data-interval="minute"]').waitFor();
  assert.equal(await page.locator('figure.chart').count(), 4);
  assert.equal(await page.locator('figure.chart svg.chart-svg').count(), 4);

  await page.selectOption('#dashboard-config', String(healthy.id));
  await page.locator(`.dashboard-page[data-interval="minute"]`).waitFor();
  await page.waitForFunction((id) => location.hash.includes(`proxy_config_id=${id}`), healthy.id);
  await page.locator('figure[data-chart="requests"] rect.bar').first().waitFor();
  assert.equal((await page.textContent('[data-tile="requests"] .tile-value')).trim(), String(OK_REQUESTS));
  const bars = await chartValues('requests');
  assert.equal(bars.reduce((sum, bar) => sum + bar.value, 0), OK_REQUESTS, JSON.stringify(bars));
  assert.ok(bars.every((bar) => bar.label === 'Success'));
  const latency = await chartValues('latency');
  assert.ok(latency.some((point) => point.label === 'p95' && point.value >= 0), JSON.stringify(latency));
  assert.match(await page.textContent('[data-tile="error-rate"] .tile-value'), /^0%$/);
});

test('errors show in the error rate, and the top lists name the busiest config', async () => {
  await page.selectOption('#dashboard-config', String(limited.id));
  await page.waitForFunction((id) => location.hash.includes(`proxy_config_id=${id}`), limited.id);
  await page.locator('figure[data-chart="error-rate"] circle.point').first().waitFor();
  assert.equal((await page.textContent('[data-tile="error-rate"] .tile-value')).trim(), '100%');
  const bars = await chartValues('requests');
  assert.equal(bars.filter((bar) => bar.label !== 'Success').reduce((sum, bar) => sum + bar.value, 0), LIMITED_REQUESTS);

  await page.selectOption('#dashboard-config', '');
  await page.waitForFunction(() => !location.hash.includes('proxy_config_id'));
  const first = page.locator('[data-rank="configs"] .rank-row').first();
  await first.waitFor();
  assert.equal(await first.locator('.rank-label').textContent(), 'Dashboard weather');
  assert.equal(Number((await first.locator('.rank-value').textContent()).replace(/\D/g, '')), OK_REQUESTS);
  assert.ok(await page.locator('[data-rank="api-keys"] .rank-row').count() >= 2);
  assert.equal(await page.locator('[data-rank="client-keys"]').count(), 1);
  assert.deepEqual(problems, []);
  await shot(page, '30-dashboard', { fullPage: true });
});

test('the interval selector redraws per hour and per day', async () => {
  for (const interval of ['hour', 'day']) {
    await page.click(`.segmented a[data-interval="${interval}"]`);
    await page.locator(`.dashboard-page[data-interval="${interval}"]`).waitFor();
    await page.locator('figure[data-chart="requests"] rect.bar').first().waitFor();
    assert.equal(await page.getAttribute(`.segmented a[data-interval="${interval}"]`, 'aria-current'), 'true');
    const bars = await chartValues('requests');
    assert.ok(bars.reduce((sum, bar) => sum + bar.value, 0) >= OK_REQUESTS + LIMITED_REQUESTS);
  }
});

test('the request log pages with Load more', async () => {
  await page.goto(`${env.baseUrl}/#/logs?proxy_config_id=${healthy.id}`);
  await page.locator('.logs-page').waitFor();
  await page.locator('tr.log-row').first().waitFor();
  assert.equal(await page.locator('tr.log-row').count(), 50, 'one page of 50');
  assert.equal(await page.inputValue('#log-proxy_config_id'), String(healthy.id));
  await page.click('.logs-page .load-more');
  await page.waitForFunction((n) => document.querySelectorAll('tr.log-row').length === n, OK_REQUESTS);
  assert.equal(await page.locator('.logs-page .load-more').isVisible(), false, 'no next page after the last');
  const times = await page.locator('tr.log-row time').evaluateAll((all) => all.map((t) => Date.parse(t.getAttribute('datetime'))));
  assert.deepEqual(times, [...times].sort((a, b) => b - a), 'newest first');
  assert.match(await page.textContent('tr.log-row .log-path'), /forecast/);
  assert.doesNotMatch(await page.textContent('.logs-table'), /n=\d/, 'no query values');
});

test('the log filters narrow the rows', async () => {
  await page.click('.logs-page .reset-filters');
  await page.waitForFunction(() => location.hash === '#/logs');
  await page.selectOption('#log-proxy_config_id', String(limited.id));
  await page.selectOption('#log-status_class', '2xx');
  await page.click('.logs-page .apply-filters');
  await page.locator('.logs-page .panel.empty').waitFor();
  assert.match(await page.textContent('.logs-page .panel.empty'), /No request matches/);

  // The first refusal is the upstream's 429; later ones may be the gateway's own answer.
  const refused = await records(limited.id);
  const refusedClass = `${String(refused[0].status)[0]}xx`;
  const expected = refused.filter((record) => String(record.status)[0] === refusedClass[0]).length;
  await page.selectOption('#log-status_class', refusedClass);
  await page.click('.logs-page .apply-filters');
  await page.waitForFunction((n) => document.querySelectorAll('tr.log-row').length === n, expected);
  const rows = await page.locator('tr.log-row').evaluateAll((all) => all.map((tr) => ({ config: tr.dataset.configId, status: tr.dataset.status })));
  assert.ok(rows.every((r) => r.config === String(limited.id) && r.status.startsWith(refusedClass[0])), JSON.stringify(rows));
  assert.match(currentUrl(page), new RegExp(`status_class=${refusedClass}`));
  await shot(page, '32-request-log-filtered', { fullPage: true });

  await page.fill('#log-from', '2099-01-01T00:00');
  await page.click('.logs-page .apply-filters');
  await page.locator('.logs-page .panel.empty').waitFor();
  assert.match(currentUrl(page), /from=2099-01-01T/);
});

function currentUrl(target) {
  return decodeURIComponent(target.url());
}

test('the dashboard links a top config to its log', async () => {
  await page.goto(`${env.baseUrl}/#/dashboard?interval=minute`);
  await page.locator('[data-rank="configs"] .rank-row').first().waitFor();
  await page.click('[data-rank="configs"] .rank-row >> nth=0 >> .rank-label');
  await page.locator('.logs-page').waitFor();
  await page.locator('tr.log-row').first().waitFor();
  assert.equal(await page.inputValue('#log-proxy_config_id'), String(healthy.id));
  await shot(page, '31-request-log');
});

test('the dashboard and the log speak Chinese', async () => {
  await page.click('#lang-toggle');
  await page.locator('.logs-page h1', { hasText: '请求日志' }).waitFor();
  await page.goto(`${env.baseUrl}/#/dashboard?interval=minute`);
  await page.locator('.dashboard-page h1', { hasText: '仪表盘' }).waitFor();
  assert.match(await page.textContent('figure[data-chart="requests"] figcaption'), /请求数/);
  await shot(page, '33-dashboard-zh', { fullPage: true });
  await page.click('#lang-toggle');
  await page.locator('.dashboard-page h1', { hasText: 'Dashboard' }).waitFor();
});

test('the dashboard and the log fit 375 px', async () => {
  const phone = await openPage(browser, { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  await openWithSession(phone.page);
  await phone.page.goto(`${env.baseUrl}/#/dashboard?interval=minute`);
  await phone.page.locator('figure[data-chart="requests"] rect.bar').first().waitFor();
  assert.equal(await overflowsHorizontally(phone.page), false);
  assert.equal(await phone.page.locator('#main-nav a').count(), 4);
  await shot(phone.page, '34-mobile-dashboard', { fullPage: true });
  await phone.page.goto(`${env.baseUrl}/#/logs`);
  await phone.page.locator('tr.log-row').first().waitFor();
  assert.equal(await phone.page.locator('.logs-table thead').isVisible(), false, 'cards on phones');
  assert.equal(await overflowsHorizontally(phone.page), false);
  await shot(phone.page, '35-mobile-request-log', { fullPage: true });
  assert.deepEqual(phone.problems, []);
  await phone.context.close();
});

test('nothing broke the page', () => {
  assert.deepEqual(problems, []);
});
