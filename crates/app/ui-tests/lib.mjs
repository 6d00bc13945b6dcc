// Shared set-up of the console's end-to-end tests: settings from the environment, a headless
// Chromium launched with playwright-core, screenshots, and a few admin API calls from Node.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through \`UI_E2E=1 cargo test -p app --test api console\``);
  return value;
}

/** What the Rust test that runs us passes in. */
export const env = {
  baseUrl: required('BASE_URL').replace(/\/+$/, ''),
  adminPassword: required('ADMIN_PASSWORD'),
  // A token the Rust test already holds: logins are rate-limited (10 a minute per address), so
  // a suite that needs no login page uses this one instead of logging in again.
  adminToken: required('ADMIN_TOKEN'),
  proxyKey: required('PROXY_KEY'),
  mockUrl: required('MOCK_URL').replace(/\/+$/, ''),
  chromiumPath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  rateLimitedKey: process.env.RATE_LIMITED_KEY || 'sk-e2e-cool-0429',
  publicBaseUrl: (process.env.PUBLIC_BASE_URL || '').replace(/\/+$/, ''),
  screenshots: path.resolve(process.env.SCREENSHOT_DIR || 'target/ui-screenshots'),
};

/** Headless Chromium with the flags this machine needs (no background network, no GPU). */
export function launch() {
  return chromium.launch({
    executablePath: env.chromiumPath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A page that records what must never happen: uncaught errors, Content-Security-Policy
 * violations and JavaScript dialogs (an injected `alert`).
 */
export async function openPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US', ...options });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  page.on('dialog', async (dialog) => {
    problems.push(`dialog: ${dialog.type()} ${dialog.message()}`);
    await dialog.dismiss();
  });
  return { context, page, problems };
}

/** Saves a screenshot under target/ui-screenshots/. */
export async function shot(page, name, options = {}) {
  mkdirSync(env.screenshots, { recursive: true });
  const file = path.join(env.screenshots, `${name}.png`);
  await page.screenshot({ path: file, ...options });
  return file;
}

/** Logs in through the login page. */
export async function loginThroughUi(page) {
  await page.goto(`${env.baseUrl}/`);
  await page.locator('#login-password').waitFor();
  await page.fill('#login-username', 'admin');
  await page.fill('#login-password', env.adminPassword);
  await page.click('.login-form button[type=submit]');
  await page.locator('.configs-page').waitFor();
}

/** Opens the console already logged in with `env.adminToken`, without a login request. */
export async function openWithSession(page) {
  await page.goto(`${env.baseUrl}/`);
  await page.evaluate((token) => {
    sessionStorage.setItem('akr.token', token);
    sessionStorage.setItem('akr.expires', String(Date.now() + 10 * 60 * 1000));
  }, env.adminToken);
  await page.goto(`${env.baseUrl}/#/configs`);
  await page.reload();
  await page.locator('.configs-page').waitFor();
}

/** A bearer token for admin API calls made from Node. */
export async function adminToken() {
  const response = await fetch(`${env.baseUrl}/admin/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: env.adminPassword }),
  });
  if (!response.ok) throw new Error(`login failed: ${response.status}`);
  return (await response.json()).access_token;
}

/** One admin API call from Node. */
export async function admin(token, method, route, body) {
  const response = await fetch(`${env.baseUrl}/admin${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Creates a GENERIC config on the mock upstream, with keys; returns it. */
export async function genericConfig(token, name, slug, keys = []) {
  const config = await admin(token, 'POST', '/proxy-configs', {
    name, slug, config_type: 'GENERIC', method: 'GET', target_url: env.mockUrl,
    api_key_location: 'header', api_key_name: 'x-api-key',
  });
  if (keys.length > 0) await admin(token, 'POST', `/proxy-configs/${config.id}/keys/batch`, { keys });
  return config;
}

/** Whether the page is wider than its viewport (a horizontal scroll bar). */
export function overflowsHorizontally(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
}
