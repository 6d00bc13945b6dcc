// The usage dashboard (SPEC §10): requests, error rate, latency and tokens over the last hour,
// day or month from `GET /admin/stats`, and the busiest configs, upstream keys and client keys.
// The interval and the config filter live in the address (`#/dashboard?interval=hour&...`), so
// a view can be bookmarked and the back button works.

import * as api from '../api.js';
import { h, locale, formatNumber } from '../dom.js';
import { t } from '../i18n.js';
import { timeChart, rankList } from '../chart.js';

/** Bucket length and how many buckets the dashboard shows, per interval. */
export const WINDOWS = {
  minute: { step: 60_000, count: 60 },
  hour: { step: 3_600_000, count: 24 },
  day: { step: 86_400_000, count: 30 },
};

/** The first bucket's start (UTC-aligned, as the server buckets) for `interval` ending now. */
export function windowStart(interval, now = Date.now()) {
  const { step, count } = WINDOWS[interval];
  return Math.floor(now / step) * step - (count - 1) * step;
}

/**
 * Every bucket of the window, in order, with the server's point for it or null: the server may
 * leave out buckets without requests, and a chart must still show them as empty time.
 */
export function fillSeries(series, interval, now = Date.now()) {
  const { step, count } = WINDOWS[interval];
  const first = windowStart(interval, now);
  const byBucket = new Map();
  for (const point of series || []) {
    const at = new Date(point.time).getTime();
    if (!Number.isNaN(at)) byBucket.set(Math.floor(at / step) * step, point);
  }
  return Array.from({ length: count }, (_, i) => {
    const time = first + i * step;
    return { time: new Date(time), point: byBucket.get(time) || null };
  });
}

function timeFormatter(interval) {
  const options = interval === 'day'
    ? { month: 'numeric', day: 'numeric' }
    : interval === 'hour'
      ? { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }
      : { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
  const format = new Intl.DateTimeFormat(locale(), options);
  return (date) => format.format(date);
}

function compact(value) {
  return new Intl.NumberFormat(locale(), { notation: 'compact', maximumFractionDigits: 1 }).format(Number(value) || 0);
}

/** Parses `interval=...&proxy_config_id=...` from the route. */
function readQuery(text) {
  const params = new URLSearchParams(text || '');
  const interval = WINDOWS[params.get('interval')] ? params.get('interval') : 'hour';
  return { interval, proxy_config_id: params.get('proxy_config_id') || '' };
}

function dashboardHash(state) {
  const params = new URLSearchParams({ interval: state.interval });
  if (state.proxy_config_id) params.set('proxy_config_id', state.proxy_config_id);
  return `#/dashboard?${params}`;
}

function logsHash(filters) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) if (value !== '' && value != null) params.set(name, String(value));
  const text = params.toString();
  return text ? `#/logs?${text}` : '#/logs';
}

/** Renders the dashboard. */
export async function dashboardView(context) {
  const state = readQuery(context.params[0]);
  const from = new Date(windowStart(state.interval)).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const filters = { proxy_config_id: state.proxy_config_id, from };
  const [data, configs, clientKeys] = await Promise.all([
    api.stats(state.interval, filters),
    api.listConfigs().catch(() => []),
    api.listClientKeys().then((list) => list.items || []).catch(() => []),
  ]);
  const buckets = fillSeries(data.series, state.interval);
  const times = buckets.map((b) => b.time);
  const pick = (read) => buckets.map(({ point }) => (point ? read(point) : 0));
  const errors4 = pick((p) => Number(p.errors?.['4xx']) || 0);
  const errors5 = pick((p) => Number(p.errors?.['5xx']) || 0);
  const requests = pick((p) => Number(p.requests) || 0);
  const okRequests = requests.map((total, i) => Math.max(0, total - errors4[i] - errors5[i]));
  const rate = (errors) => buckets.map(({ point }, i) => (point && requests[i] > 0 ? (errors[i] / requests[i]) * 100 : null));
  const latency = (name) => buckets.map(({ point }) => (point && point[name] != null ? Number(point[name]) : null));
  const tokensIn = pick((p) => Number(p.tokens_in) || 0);
  const tokensOut = pick((p) => Number(p.tokens_out) || 0);
  const timeFormat = timeFormatter(state.interval);
  const sum = (values) => values.reduce((a, b) => a + b, 0);

  const totalRequests = sum(requests);
  const totalErrors = sum(errors4) + sum(errors5);
  const p95s = latency('latency_p95_ms').filter((v) => v !== null);
  const totalTokens = sum(tokensIn) + sum(tokensOut);
  const percent = (value) => `${new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 }).format(value)}%`;
  const ms = (value) => `${formatNumber(Math.round(value))} ms`;

  const tile = (id, label, value, detail) => h('div', { class: 'panel tile', dataset: { tile: id } },
    h('div', { class: 'tile-label muted', text: label }),
    h('div', { class: 'tile-value', text: value }),
    detail ? h('div', { class: 'tile-detail muted small', text: detail }) : null);
  const tiles = h('div', { class: 'tiles' },
    tile('requests', t('dashboard.requests'), formatNumber(totalRequests)),
    tile('error-rate', t('dashboard.errorRate'), totalRequests > 0 ? percent((totalErrors / totalRequests) * 100) : '—',
      t('dashboard.errorsDetail', { c4: formatNumber(sum(errors4)), c5: formatNumber(sum(errors5)) })),
    tile('latency', t('dashboard.peakP95'), p95s.length > 0 ? ms(Math.max(...p95s)) : '—'),
    tile('tokens', t('dashboard.tokens'), formatNumber(totalTokens),
      t('dashboard.tokensDetail', { input: formatNumber(sum(tokensIn)), output: formatNumber(sum(tokensOut)) })));

  const empty = t('dashboard.noData');
  const charts = h('div', { class: 'charts' },
    timeChart({
      id: 'requests', title: t('dashboard.chartRequests'), kind: 'bars', times, timeFormat, format: compact, emptyText: empty,
      series: [
        { label: t('dashboard.seriesOk'), values: okRequests },
        { label: t('dashboard.series4xx'), values: errors4 },
        { label: t('dashboard.series5xx'), values: errors5 },
      ],
    }),
    timeChart({
      id: 'error-rate', title: t('dashboard.chartErrorRate'), times, timeFormat, format: percent, emptyText: empty, integer: false,
      series: [
        { label: t('dashboard.series4xx'), values: rate(errors4) },
        { label: t('dashboard.series5xx'), values: rate(errors5) },
      ],
    }),
    timeChart({
      id: 'latency', title: t('dashboard.chartLatency'), times, timeFormat, format: ms, emptyText: empty,
      series: [
        { label: 'p50', values: latency('latency_p50_ms') },
        { label: 'p95', values: latency('latency_p95_ms') },
      ],
    }),
    timeChart({
      id: 'tokens', title: t('dashboard.chartTokens'), kind: 'bars', times, timeFormat, format: compact, emptyText: empty,
      series: [
        { label: t('dashboard.tokensIn'), values: tokensIn },
        { label: t('dashboard.tokensOut'), values: tokensOut },
      ],
    }));

  const configNames = new Map(configs.map((c) => [String(c.id), c.name]));
  const clientKeyNames = new Map(clientKeys.map((k) => [String(k.id), k.name]));
  const top = data.top || {};
  const rows = (items, label, filterName) => (items || []).map((item) => ({
    id: item.id,
    label: label(item),
    href: item.id == null ? null : logsHash({ [filterName]: item.id, proxy_config_id: filterName === 'proxy_config_id' ? item.id : state.proxy_config_id, from }),
    value: Number(item.requests) || 0,
    detail: t('dashboard.topDetail', { errors: formatNumber(item.errors), tokens: formatNumber(item.tokens) }),
  }));
  const tops = h('div', { class: 'ranks' },
    rankList({
      id: 'configs', title: t('dashboard.topConfigs'), format: formatNumber, emptyText: empty,
      rows: rows(top.configs, (item) => configNames.get(String(item.id)) || t('dashboard.configId', { id: item.id }), 'proxy_config_id'),
    }),
    rankList({
      id: 'api-keys', title: t('dashboard.topApiKeys'), format: formatNumber, emptyText: empty,
      rows: rows(top.api_keys, (item) => t('dashboard.apiKeyId', { id: item.id }), 'api_key_id'),
    }),
    rankList({
      id: 'client-keys', title: t('dashboard.topClientKeys'), format: formatNumber, emptyText: empty,
      rows: rows(top.client_keys, (item) => (item.id == null
        ? t('logs.globalKey')
        : clientKeyNames.get(String(item.id)) || t('dashboard.clientKeyId', { id: item.id })), 'client_key_id'),
    }));

  const intervalPicker = h('div', { class: 'segmented', role: 'group', 'aria-label': t('dashboard.interval') },
    Object.keys(WINDOWS).map((interval) => h('a', {
      class: ['btn', 'btn-small', interval === state.interval ? 'btn-primary' : 'btn-secondary', 'interval'],
      href: dashboardHash({ ...state, interval }),
      'aria-current': interval === state.interval ? 'true' : null,
      dataset: { interval },
      text: t(`dashboard.interval.${interval}`),
    })));
  const configSelect = h('select', { id: 'dashboard-config', name: 'proxy_config_id' },
    h('option', { value: '', text: t('dashboard.allConfigs') }),
    configs.map((c) => h('option', { value: String(c.id), text: c.name, selected: String(c.id) === state.proxy_config_id })));
  configSelect.addEventListener('change', () => context.navigate(dashboardHash({ ...state, proxy_config_id: configSelect.value })));

  return h('section', { class: 'dashboard-page', dataset: { interval: state.interval } },
    h('div', { class: 'page-header' },
      h('div', {},
        h('h1', { text: t('dashboard.title') }),
        h('p', { class: 'hint page-hint', text: t(`dashboard.window.${state.interval}`) })),
      h('div', { class: 'page-actions' },
        h('a', { class: 'btn btn-secondary', href: logsHash({ proxy_config_id: state.proxy_config_id }), text: t('dashboard.openLog') }),
        h('button', { type: 'button', class: 'btn btn-secondary refresh', text: t('common.refresh'), on: { click: () => context.rerender() } }))),
    h('div', { class: 'dashboard-controls' },
      intervalPicker,
      h('label', { class: 'filter', for: 'dashboard-config' }, h('span', { class: 'filter-label', text: t('dashboard.config') }), configSelect)),
    tiles,
    charts,
    tops);
}
