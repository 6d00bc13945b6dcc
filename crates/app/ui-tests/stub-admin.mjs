// TEMPORARY (H6): answers the client-key admin routes of issue #20, which the server does not
// have yet, at the network layer of a browser context (playwright's route interception), with
// the JSON shapes of design §3. To be deleted once the real routes are merged (client-keys.test.mjs
// then sets STUB_CLIENT_KEYS to false and runs against the server).

const SECRET_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function secret() {
  let text = 'akr-';
  for (let i = 0; i < 43; i += 1) text += SECRET_CHARS[Math.floor(Math.random() * SECRET_CHARS.length)];
  return text;
}

/** An in-memory client-key store and request log, served to `context`'s pages. */
export async function stubAdmin(context, { keys: initial = [] } = {}) {
  const keys = initial.map((key) => ({ ...key }));
  let nextId = Math.max(0, ...keys.map((key) => key.id)) + 1;
  const json = (route, status, body) => route.fulfill({
    status, contentType: 'application/json', body: body === undefined ? '' : JSON.stringify(body),
  });
  const validate = (input) => {
    const fields = [];
    if (!input.name || !String(input.name).trim()) fields.push({ field: 'name', message: 'must not be empty' });
    if (input.budget_period && input.token_budget == null) fields.push({ field: 'token_budget', message: 'is required with budget_period' });
    if (input.token_budget != null && !input.budget_period) fields.push({ field: 'budget_period', message: 'is required with token_budget' });
    return fields;
  };
  await context.route(/\/admin\/client-keys(\/.*)?$/, async (route) => {
    const request = route.request();
    const url = new URL(request.url());
    const body = request.postData() ? JSON.parse(request.postData()) : null;
    const match = url.pathname.match(/^\/admin\/client-keys(?:\/(\d+)(\/rotate)?)?$/);
    if (!match) return json(route, 404, { error: { code: 'not_found', message: 'no route' } });
    if (!match[1]) {
      if (request.method() === 'GET') return json(route, 200, { items: keys });
      const fields = validate(body);
      if (fields.length > 0) return json(route, 422, { error: { code: 'validation_failed', message: 'invalid', fields } });
      const created = secret();
      const key = {
        name: body.name, is_active: body.is_active ?? true, expires_at: body.expires_at ?? null,
        allowed_config_ids: body.allowed_config_ids ?? [], rpm: body.rpm ?? null, tpm: body.tpm ?? null,
        max_concurrency: body.max_concurrency ?? null, token_budget: body.token_budget ?? null,
        budget_period: body.budget_period ?? null, id: nextId++, key_prefix: created.slice(0, 8),
        request_count: 0, token_count: 0, budget_used: 0, last_used_at: null, created_at: new Date().toISOString(),
      };
      keys.push(key);
      return json(route, 201, { ...key, secret: created });
    }
    const key = keys.find((k) => k.id === Number(match[1]));
    if (!key) return json(route, 404, { error: { code: 'not_found', message: 'no client key with this id' } });
    if (match[2]) {
      const rotated = secret();
      key.key_prefix = rotated.slice(0, 8);
      return json(route, 200, { ...key, secret: rotated });
    }
    if (request.method() === 'GET') return json(route, 200, key);
    if (request.method() === 'PUT') {
      const fields = validate(body);
      if (fields.length > 0) return json(route, 422, { error: { code: 'validation_failed', message: 'invalid', fields } });
      Object.assign(key, body);
      return json(route, 200, key);
    }
    keys.splice(keys.indexOf(key), 1);
    return route.fulfill({ status: 204 });
  });
  return keys;
}
