// The admin API client. The token lives in sessionStorage only (never a cookie), so it is sent
// only by this code and ends with the tab; it is dropped at its expiry and on any 401.

const TOKEN_KEY = 'akr.token';
const EXPIRES_KEY = 'akr.expires';
const PREFIX = '/admin';

/** An error answered by the API (or a network failure, status 0). */
export class ApiError extends Error {
  constructor(status, code, message, fields = []) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = Array.isArray(fields) ? fields : [];
  }
}

let unauthorizedHandler = () => {};
let expiryTimer = null;

/** Called with `'expired'` when the session ends by itself or the server answers 401. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

function readSession() {
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const expires = Number(sessionStorage.getItem(EXPIRES_KEY));
    return { token, expires };
  } catch {
    return { token: null, expires: 0 };
  }
}

/** Whether a token is held and not yet expired. */
export function isLoggedIn() {
  const { token, expires } = readSession();
  return Boolean(token) && Number.isFinite(expires) && Date.now() < expires;
}

function scheduleExpiry() {
  clearTimeout(expiryTimer);
  const { token, expires } = readSession();
  if (!token) return;
  const delay = Math.max(0, Math.min(expires - Date.now(), 2 ** 31 - 1));
  expiryTimer = setTimeout(() => {
    clearSession();
    unauthorizedHandler('expired');
  }, delay);
}

function clearSession() {
  clearTimeout(expiryTimer);
  try {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
  } catch {
    // nothing stored
  }
}

/** Restores the expiry timer of a token kept from before a reload. */
export function resumeSession() {
  if (isLoggedIn()) scheduleExpiry();
  else clearSession();
}

/** Logs in; the token is kept for this tab. */
export async function login(username, password) {
  const body = await request('POST', '/login', { username, password }, { auth: false });
  const lifetime = Number(body.expires_in) > 0 ? Number(body.expires_in) : 3600;
  // Expire a little early so a request never leaves with a token about to lapse.
  const expires = Date.now() + Math.max(1, lifetime - 5) * 1000;
  sessionStorage.setItem(TOKEN_KEY, body.access_token);
  sessionStorage.setItem(EXPIRES_KEY, String(expires));
  scheduleExpiry();
}

/** Forgets the token. */
export function logout() {
  clearSession();
}

/** Sends one request to the admin API and returns the parsed JSON (null for 204). */
export async function request(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) {
    const { token } = readSession();
    if (!token || !isLoggedIn()) {
      clearSession();
      unauthorizedHandler('expired');
      throw new ApiError(401, 'unauthorized', 'not logged in');
    }
    headers.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(PREFIX + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, 'network', String(error && error.message ? error.message : error));
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && auth) {
      clearSession();
      unauthorizedHandler('expired');
    }
    throw new ApiError(response.status, error.code || 'http_error', error.message || `HTTP ${response.status}`, error.fields);
  }
  return data;
}

const id = (value) => encodeURIComponent(String(value));

/** `GET /admin/app-config` (public). */
export const appConfig = () => request('GET', '/app-config', undefined, { auth: false });
/** Every proxy config. */
export const listConfigs = () => request('GET', '/proxy-configs');
/** One proxy config. */
export const getConfig = (configId) => request('GET', `/proxy-configs/${id(configId)}`);
/** Creates a proxy config. */
export const createConfig = (input) => request('POST', '/proxy-configs', input);
/** Replaces a proxy config. */
export const replaceConfig = (configId, input) => request('PUT', `/proxy-configs/${id(configId)}`, input);
/** Deletes a proxy config and its keys. */
export const deleteConfig = (configId) => request('DELETE', `/proxy-configs/${id(configId)}`);
/** Turns a proxy config on or off. */
export const setConfigActive = (configId, active) =>
  request('PUT', `/proxy-configs/${id(configId)}/status`, { is_active: active });
/**
 * One page of a config's keys, masked: `{items, next_cursor}`. Options: `limit` (1–1000),
 * `cursor` (the previous page's `next_cursor`), `health` (`ok`, `cooling`, `failed`) and
 * `isActive` (`true`, `false`); empty ones are left out.
 */
export const listKeys = (configId, { limit, cursor, health, isActive } = {}) => {
  const query = new URLSearchParams();
  for (const [name, value] of [['limit', limit], ['cursor', cursor], ['health', health], ['is_active', isActive]]) {
    if (value !== undefined && value !== null && value !== '') query.set(name, String(value));
  }
  const search = query.toString();
  return request('GET', `/proxy-configs/${id(configId)}/keys${search ? `?${search}` : ''}`);
};
/** Every config's keys counted: `{items: [{proxy_config_id, total, ok, cooling, failed, disabled}]}`. */
export const keyCounts = () => request('GET', '/key-counts');
/** Imports many keys at once. */
export const importKeys = (configId, keys) => request('POST', `/proxy-configs/${id(configId)}/keys/batch`, { keys });
/** Deletes every key of a config. */
export const clearKeys = (configId) => request('DELETE', `/proxy-configs/${id(configId)}/keys`);
/** Enables or disables one key. */
export const setKeyActive = (keyId, active) => request('PATCH', `/keys/${id(keyId)}`, { is_active: active });
/** Deletes one key. */
export const deleteKey = (keyId) => request('DELETE', `/keys/${id(keyId)}`);
/** Sends a real request upstream with one key. */
export const testKey = (keyId) => request('POST', `/keys/${id(keyId)}/test`);

/** A query string from `[name, value]` pairs, leaving out empty values. */
function query(pairs) {
  const search = new URLSearchParams();
  for (const [name, value] of pairs) {
    if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** Every client key with its usage: `{items: [...]}`. */
export const listClientKeys = () => request('GET', '/client-keys');
/** One client key. */
export const getClientKey = (keyId) => request('GET', `/client-keys/${id(keyId)}`);
/** Creates a client key; the answer carries its `secret`, shown once. */
export const createClientKey = (input) => request('POST', '/client-keys', input);
/** Replaces a client key (the create body). */
export const replaceClientKey = (keyId, input) => request('PUT', `/client-keys/${id(keyId)}`, input);
/** Deletes a client key. */
export const deleteClientKey = (keyId) => request('DELETE', `/client-keys/${id(keyId)}`);
/** Issues a new secret for a client key (the old one stops working); the answer carries it. */
export const rotateClientKey = (keyId) => request('POST', `/client-keys/${id(keyId)}/rotate`);

/** The filters both the request log and the statistics accept, in API names. */
export const LOG_FILTERS = ['proxy_config_id', 'client_key_id', 'api_key_id', 'status_class', 'outcome', 'from', 'to'];

/**
 * One page of the request log, newest first: `{items, next_cursor}`. `filters` holds any of
 * {@link LOG_FILTERS}; `limit` and `cursor` page through it.
 */
export const listRequestLogs = (filters = {}, { limit, cursor } = {}) =>
  request('GET', `/request-logs${query([...LOG_FILTERS.map((name) => [name, filters[name]]), ['limit', limit], ['cursor', cursor]])}`);

/** Time series and top lists: `{series: [...], top: {configs, api_keys, client_keys}}`. */
export const stats = (interval, filters = {}) =>
  request('GET', `/stats${query([['interval', interval], ...LOG_FILTERS.map((name) => [name, filters[name]])])}`);
