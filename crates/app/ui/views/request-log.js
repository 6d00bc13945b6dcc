// The request log (SPEC §10): one row per proxied request, newest first, filtered by config,
// client key, upstream key, status class, outcome and time, read a page at a time with
// "Load more" while the API answers a next_cursor. The filters live in the address
// (`#/logs?status_class=4xx&...`), so the dashboard can link to a filtered log.

import * as api from '../api.js';
import { h, toast, formatTime, formatNumber } from '../dom.js';
import { t } from '../i18n.js';
import { toLocalInput, fromLocalInput } from './client-keys.js';

const PAGE_SIZE = 50;
const STATUS_CLASSES = ['2xx', '4xx', '5xx'];
// The outcome classes the gateway records; the field accepts any other value the server knows.
const OUTCOMES = [
  'success', 'rate_limited', 'key_rejected', 'forbidden', 'upstream_fault', 'client_error',
];

/** The filters in the route's query, in API names, empty ones left out. */
export function readFilters(text) {
  const params = new URLSearchParams(text || '');
  const filters = {};
  for (const name of api.LOG_FILTERS) {
    const value = params.get(name);
    if (value) filters[name] = value;
  }
  return filters;
}

function logsHash(filters) {
  const params = new URLSearchParams();
  for (const name of api.LOG_FILTERS) if (filters[name]) params.set(name, filters[name]);
  const text = params.toString();
  return text ? `#/logs?${text}` : '#/logs';
}

function statusClass(status) {
  if (status >= 500) return 'badge-failed';
  if (status >= 400) return 'badge-cooling';
  return 'badge-ok';
}

function bytes(value) {
  const n = Number(value) || 0;
  if (n < 1024) return `${formatNumber(n)} B`;
  if (n < 1024 * 1024) return `${formatNumber(Math.round(n / 102.4) / 10)} KiB`;
  return `${formatNumber(Math.round(n / (1024 * 102.4)) / 10)} MiB`;
}

/** Renders the request log. */
export async function requestLogView(context) {
  const filters = readFilters(context.params[0]);
  const [firstPage, configs, clientKeys] = await Promise.all([
    api.listRequestLogs(filters, { limit: PAGE_SIZE }),
    api.listConfigs().catch(() => []),
    api.listClientKeys().then((list) => list.items || []).catch(() => null),
  ]);
  const configNames = new Map(configs.map((c) => [String(c.id), c.name]));
  const clientKeyNames = new Map((clientKeys || []).map((k) => [String(k.id), k.name]));
  let cursor = firstPage.next_cursor;

  // Filters.
  const select = (name, options) => h('select', { id: `log-${name}`, name },
    h('option', { value: '', text: t('logs.any') }),
    options.map(([value, text]) => h('option', { value: String(value), text, selected: String(value) === (filters[name] || '') })));
  const controls = {
    proxy_config_id: select('proxy_config_id', configs.map((c) => [c.id, c.name])),
    client_key_id: clientKeys
      ? select('client_key_id', clientKeys.map((k) => [k.id, k.name]))
      : h('input', { type: 'number', id: 'log-client_key_id', name: 'client_key_id', min: 1, step: 1, inputmode: 'numeric', value: filters.client_key_id || '' }),
    api_key_id: h('input', { type: 'number', id: 'log-api_key_id', name: 'api_key_id', min: 1, step: 1, inputmode: 'numeric', value: filters.api_key_id || '' }),
    status_class: select('status_class', STATUS_CLASSES.map((c) => [c, c])),
    outcome: h('input', { type: 'text', id: 'log-outcome', name: 'outcome', list: 'log-outcomes', autocomplete: 'off', spellcheck: 'false', value: filters.outcome || '' }),
    from: h('input', { type: 'datetime-local', id: 'log-from', name: 'from', value: toLocalInput(filters.from) }),
    to: h('input', { type: 'datetime-local', id: 'log-to', name: 'to', value: toLocalInput(filters.to) }),
  };
  const filterField = (name) => h('label', { class: 'field', for: `log-${name}`, dataset: { filter: name } },
    h('span', { class: 'field-label', text: t(`logs.filter.${name}`) }), controls[name]);
  const form = h('form', { class: 'panel log-filters', 'aria-label': t('logs.filters'), novalidate: true },
    h('div', { class: 'filter-grid' }, api.LOG_FILTERS.map(filterField)),
    h('datalist', { id: 'log-outcomes' }, OUTCOMES.map((o) => h('option', { value: o }))),
    h('div', { class: 'form-actions' },
      h('a', { class: 'btn btn-secondary reset-filters', href: '#/logs', text: t('logs.reset') }),
      h('button', { type: 'submit', class: 'btn btn-primary apply-filters', text: t('logs.apply') })));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = {};
    for (const name of api.LOG_FILTERS) {
      const control = controls[name];
      const value = control.type === 'datetime-local' ? fromLocalInput(control.value) : control.value.trim();
      if (value) next[name] = value;
    }
    context.navigate(logsHash(next));
  });

  // Records.
  const columns = [
    ['time', 'logs.time'], ['config', 'logs.config'], ['client', 'logs.clientKey'], ['api-key', 'logs.apiKey'],
    ['request', 'logs.request'], ['status', 'logs.status'], ['attempts', 'logs.attempts'], ['latency', 'logs.latency'],
    ['tokens', 'logs.tokens'], ['bytes', 'logs.bytes'],
  ];
  const cell = (column, ...content) => {
    const label = t(columns.find(([name]) => name === column)[1]);
    return h('td', { class: `col-${column}`, dataset: { label } }, h('div', { class: 'cell' }, ...content));
  };
  const row = (record) => {
    const status = Number(record.status) || 0;
    const tokens = record.tokens_in == null && record.tokens_out == null
      ? h('span', { class: 'muted', text: t('common.none') })
      : h('span', { class: 'log-tokens', text: t('logs.tokensInOut', { input: formatNumber(record.tokens_in), output: formatNumber(record.tokens_out) }) });
    return h('tr', {
      class: 'log-row',
      dataset: { status, outcome: record.outcome || '', configId: record.proxy_config_id ?? '', clientKeyId: record.client_key_id ?? '' },
    },
    cell('time', h('time', { class: 'log-time', datetime: record.created_at, text: formatTime(record.created_at) })),
    cell('config', h('span', { text: configNames.get(String(record.proxy_config_id)) || t('dashboard.configId', { id: record.proxy_config_id }) })),
    cell('client', record.client_key_id == null
      ? h('span', { class: 'muted', text: t('logs.globalKey') })
      : h('span', { text: clientKeyNames.get(String(record.client_key_id)) || t('dashboard.clientKeyId', { id: record.client_key_id }) })),
    cell('api-key', record.api_key_id == null
      ? h('span', { class: 'muted', text: t('common.none') })
      : h('span', { text: t('dashboard.apiKeyId', { id: record.api_key_id }) })),
    cell('request',
      h('div', { class: 'log-request' }, h('span', { class: 'method', text: record.method || '' }), ' ', h('code', { class: 'log-path', text: record.path || '' })),
      record.streamed ? h('span', { class: 'badge badge-type', text: t('logs.streamed') }) : null),
    cell('status',
      h('span', { class: ['badge', statusClass(status), 'log-status'], text: String(status) }),
      h('div', { class: 'muted small log-outcome', text: record.outcome || '' }),
      record.error_code ? h('code', { class: 'log-error small', text: record.error_code }) : null),
    cell('attempts', h('span', { text: formatNumber(record.attempts) })),
    cell('latency', h('span', { class: 'log-latency', text: t('logs.latencyHeadTotal', { head: formatNumber(record.head_latency_ms), total: formatNumber(record.total_latency_ms) }) })),
    cell('tokens', tokens),
    cell('bytes', h('span', { class: 'small', text: t('logs.bytesInOut', { input: bytes(record.bytes_in), output: bytes(record.bytes_out) }) })));
  };

  const tbody = h('tbody', {}, firstPage.items.map(row));
  let shownCount = firstPage.items.length;
  const shown = h('span', { class: 'logs-shown muted', role: 'status', text: t('logs.shown', { count: formatNumber(shownCount) }) });
  const loadMore = h('button', { type: 'button', class: 'btn btn-secondary load-more', text: t('keys.loadMore') });
  loadMore.hidden = !cursor;
  loadMore.addEventListener('click', async () => {
    loadMore.disabled = true;
    loadMore.textContent = t('common.loading');
    try {
      const page = await api.listRequestLogs(filters, { limit: PAGE_SIZE, cursor });
      tbody.append(...page.items.map(row));
      shownCount += page.items.length;
      shown.textContent = t('logs.shown', { count: formatNumber(shownCount) });
      cursor = page.next_cursor;
      loadMore.hidden = !cursor;
    } catch (error) {
      if (error.status !== 401) toast(t('error.generic', { message: error.message }), 'error');
    }
    loadMore.disabled = false;
    loadMore.textContent = t('keys.loadMore');
  });

  const filtered = Object.keys(filters).length > 0;
  const records = firstPage.items.length === 0 && !cursor
    ? h('div', { class: 'panel empty', text: t(filtered ? 'logs.noMatch' : 'logs.empty') })
    : h('div', { class: 'panel table-wrap' },
      h('table', { class: 'table table-cards logs-table' },
        h('thead', {}, h('tr', {}, columns.map(([name, key]) => h('th', { class: `col-${name}`, scope: 'col', text: t(key) })))),
        tbody),
      h('div', { class: 'pool-more' }, shown, loadMore));

  return h('section', { class: 'logs-page' },
    h('div', { class: 'page-header' },
      h('div', {},
        h('h1', { text: t('logs.title') }),
        h('p', { class: 'hint page-hint', text: t('logs.intro') })),
      h('div', { class: 'page-actions' },
        h('a', { class: 'btn btn-secondary', href: '#/dashboard', text: t('nav.dashboard') }),
        h('button', { type: 'button', class: 'btn btn-secondary refresh', text: t('common.refresh'), on: { click: () => context.rerender() } }))),
    form,
    records);
}
