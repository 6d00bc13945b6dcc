// A config's key pool: masked keys, health, usage, enable/disable, test, delete, batch import
// and clear all. The pool is read a page at a time (a pool may hold tens of thousands of keys):
// the first page, then "Load more" while the API answers a next_cursor, filtered by health and
// switch; the counts come from one grouped count, not from the loaded keys.

import * as api from '../api.js';
import {
  h, replace, toast, confirmDialog, copyableUrl, countBadges, toggleSwitch, formatTime, relativeTime, formatNumber,
} from '../dom.js';
import { t } from '../i18n.js';
import { clientBaseUrl, countsOf } from '../model.js';

/** Splits pasted text into keys: one per line, or separated by commas (or spaces). */
export function parseKeys(text) {
  return String(text).split(/[\s,;]+/).map((key) => key.trim()).filter(Boolean);
}

function healthCell(key) {
  const coolingOver = key.health === 'cooling' && key.cooldown_until && new Date(key.cooldown_until) <= new Date();
  const health = coolingOver ? 'ok' : key.health;
  const parts = [h('span', { class: ['badge', `badge-${health}`, 'health'], dataset: { health }, text: t(`health.${health}`) })];
  if (health === 'cooling') {
    parts.push(h('span', {
      class: 'health-detail',
      text: t('health.coolingUntil', { time: formatTime(key.cooldown_until), relative: relativeTime(key.cooldown_until) }),
    }));
  } else if (health === 'failed') {
    parts.push(h('span', {
      class: 'health-detail',
      text: key.last_status ? t('health.failedStatus', { status: key.last_status }) : t('health.failedNoStatus'),
    }));
  }
  if (!key.is_active) parts.push(h('span', { class: 'badge badge-disabled', text: t('health.disabled') }));
  return h('div', { class: 'health-cell' }, parts);
}

// Test and import results, and the filters, survive the re-render that follows them.
const testResults = new Map();
const lastImports = new Map();
const filters = new Map();

// Keys per page: small enough to render at once on a phone, large enough for most pools.
const PAGE_SIZE = 100;

/** The health and switch filter of one config's page, as the two selects choose them. */
function filterControls(configId, current, onChange) {
  const select = (id, name, label, options) => {
    const control = h('select', { id, name },
      options.map(([value, text]) => h('option', { value, text, selected: current[name] === value })));
    control.addEventListener('change', () => onChange({ ...current, [name]: control.value }));
    return h('label', { class: 'filter', for: id }, h('span', { class: 'filter-label', text: label }), control);
  };
  return h('form', { class: 'key-filters', 'aria-label': t('keys.filters'), dataset: { configId } },
    select('filter-health', 'health', t('keys.filterHealth'), [
      ['', t('keys.filterAny')], ['ok', t('health.ok')], ['cooling', t('health.cooling')], ['failed', t('health.failed')],
    ]),
    select('filter-active', 'isActive', t('keys.filterActive'), [
      ['', t('keys.filterAny')], ['true', t('keys.filterEnabled')], ['false', t('keys.filterDisabled')],
    ]));
}

function testText(result) {
  if (result.error && result.status == null) {
    return `${t('keys.testNoStatus', { latency: result.latency_ms, health: t(`health.${result.health}`) })} · ${result.error}`;
  }
  return t('keys.testResult', { status: result.status, latency: result.latency_ms, health: t(`health.${result.health}`) });
}

/** Renders the key pool of config `context.params[0]`. */
export async function keysView(context) {
  const configId = context.params[0];
  const filter = filters.get(configId) || { health: '', isActive: '' };
  const [settings, config, firstPage, allCounts] = await Promise.all([
    api.appConfig().catch(() => ({})),
    api.getConfig(configId),
    api.listKeys(configId, { ...filter, limit: PAGE_SIZE }),
    api.keyCounts().catch(() => null),
  ]);
  const keys = firstPage.items;
  let cursor = firstPage.next_cursor;
  const counts = allCounts ? countsOf(allCounts, configId) : null;
  const filtered = Boolean(filter.health || filter.isActive);
  const refresh = () => context.rerender();
  const fail = (error) => {
    if (error.status !== 401) toast(t('error.generic', { message: error.message }), 'error');
  };

  // Batch import.
  const importArea = h('textarea', {
    id: 'import-keys', rows: 4, spellcheck: 'false', autocomplete: 'off', autocapitalize: 'none',
    placeholder: t('keys.importPlaceholder'), 'aria-describedby': 'import-hint',
  });
  const importResult = h('div', { class: 'import-result', role: 'status', 'aria-live': 'polite' });
  const importButton = h('button', { type: 'submit', class: 'btn btn-primary import', text: t('keys.importSubmit') });
  const importForm = h('form', { class: 'panel import-form', novalidate: true },
    h('h2', {}, h('label', { for: 'import-keys', text: t('keys.import') })),
    h('p', { class: 'hint', id: 'import-hint', text: t('keys.importHint') }),
    importArea,
    h('div', { class: 'form-actions' }, importResult, importButton));
  importForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const parsed = parseKeys(importArea.value);
    if (parsed.length === 0) {
      importResult.replaceChildren(h('span', { class: 'field-error', text: t('keys.importEmpty') }));
      return;
    }
    importButton.disabled = true;
    importButton.textContent = t('keys.importing');
    try {
      const report = await api.importKeys(configId, parsed);
      lastImports.set(configId, report);
      context.rerender();
    } catch (error) {
      fail(error);
      importButton.disabled = false;
      importButton.textContent = t('keys.importSubmit');
    }
  });
  const report = lastImports.get(configId);
  if (report) {
    lastImports.delete(configId);
    replace(importResult,
      h('span', {
        class: 'import-counts',
        text: t('keys.importResult', { success: report.success_count, skipped: report.skipped_count, failed: report.failed_count }),
      }),
      Array.isArray(report.failed_keys) && report.failed_keys.length > 0
        ? h('span', { class: 'failed-keys' }, t('keys.importFailedKeys'), ' ', report.failed_keys.join(', '))
        : null,
    );
  }

  // Header.
  const clear = h('button', {
    type: 'button',
    class: 'btn btn-danger clear-keys',
    text: t('keys.clearAll'),
    disabled: counts ? counts.total === 0 : keys.length === 0,
    on: {
      click: async () => {
        const confirmed = await confirmDialog({
          title: t('keys.clearTitle'),
          message: t('keys.clearMessage', { count: counts ? counts.total : '?', name: config.name }),
          confirmLabel: t('keys.clearAll'),
        });
        if (!confirmed) return;
        try {
          const result = await api.clearKeys(configId);
          toast(t('keys.cleared', { count: result.deleted_count }), 'success');
          refresh();
        } catch (error) {
          fail(error);
        }
      },
    },
  });
  const header = h('div', { class: 'page-header' },
    h('div', {},
      h('h1', {}, h('span', { class: 'config-title', text: config.name }), ' ', h('span', { class: 'muted title-suffix', text: `· ${t('keys.title')}` })),
      h('div', { class: 'config-meta' },
        h('code', { class: 'slug', text: config.slug }),
        h('span', { class: 'badge badge-type', text: config.config_type }),
        copyableUrl(clientBaseUrl(settings.proxy_public_base_url, config)))),
    h('div', { class: 'page-actions' },
      h('button', { type: 'button', class: 'btn btn-secondary refresh', text: t('common.refresh'), on: { click: refresh } }),
      h('a', { class: 'btn btn-secondary', href: `#/configs/${config.id}/edit`, text: t('common.edit') }),
      clear));

  // Table.
  const columns = [
    ['id', 'keys.id'], ['key', 'keys.key'], ['enabled', 'keys.enabled'], ['health', 'keys.health'],
    ['requests', 'keys.requests'], ['failures', 'keys.failures'], ['last-status', 'keys.lastStatus'],
    ['last-used', 'keys.lastUsed'], ['actions', 'common.actions'],
  ];
  const cell = (column, ...content) => {
    const label = t(columns.find(([name]) => name === column)[1]);
    // One wrapper, so the cell's parts stay together when narrow screens lay cells out as a grid.
    return h('td', { class: `col-${column}`, dataset: { label } }, h('div', { class: 'cell' }, ...content));
  };
  const row = (key) => {
    const result = h('div', { class: 'test-result', role: 'status' });
    const previous = testResults.get(key.id);
    if (previous) {
      result.textContent = previous.text;
      result.dataset.status = previous.status;
    }
    const testButton = h('button', {
      type: 'button',
      class: 'btn btn-small btn-secondary test-key',
      text: t('keys.test'),
      on: {
        click: async () => {
          testButton.disabled = true;
          testButton.textContent = t('keys.testing');
          try {
            const report = await api.testKey(key.id);
            testResults.set(key.id, { text: testText(report), status: String(report.status ?? 'none') });
            refresh();
          } catch (error) {
            fail(error);
            testButton.disabled = false;
            testButton.textContent = t('keys.test');
          }
        },
      },
    });
    const remove = h('button', {
      type: 'button',
      class: 'btn btn-small btn-danger-ghost delete-key',
      text: t('common.delete'),
      on: {
        click: async () => {
          const confirmed = await confirmDialog({
            title: t('keys.deleteTitle'),
            message: t('keys.deleteMessage', { key: key.key_value }),
            confirmLabel: t('common.delete'),
          });
          if (!confirmed) return;
          try {
            await api.deleteKey(key.id);
            testResults.delete(key.id);
            toast(t('keys.deleted'), 'success');
            refresh();
          } catch (error) {
            fail(error);
          }
        },
      },
    });
    const enabled = toggleSwitch({
      checked: key.is_active,
      label: `${t('keys.enabled')}: ${key.key_value}`,
      onChange: async (checked, input) => {
        input.disabled = true;
        try {
          await api.setKeyActive(key.id, checked);
          toast(t(checked ? 'keys.enabledToast' : 'keys.disabledToast', { key: key.key_value }), 'success');
          refresh();
        } catch (error) {
          input.checked = !checked;
          input.disabled = false;
          fail(error);
        }
      },
    });
    return h('tr', { class: key.is_active ? 'key-row' : 'key-row disabled', dataset: { keyId: key.id, health: key.health, active: key.is_active } },
      cell('id', String(key.id)),
      cell('key', h('code', { class: 'masked-key', text: key.key_value })),
      cell('enabled', enabled),
      cell('health', healthCell(key)),
      cell('requests', h('span', { class: 'request-count', text: formatNumber(key.request_count) })),
      cell('failures', h('span', { class: 'failure-count', text: formatNumber(key.failure_count) })),
      cell('last-status', h('span', { class: 'last-status', text: key.last_status == null ? t('common.none') : String(key.last_status) })),
      cell('last-used', key.last_used_at
        ? h('time', { class: 'last-used', datetime: key.last_used_at, title: formatTime(key.last_used_at), text: relativeTime(key.last_used_at) })
        : h('span', { class: 'last-used', text: t('common.none') })),
      cell('actions', h('div', { class: 'row-actions' }, testButton, remove), result));
  };

  // The loaded pages: the first one now, the next ones on "Load more".
  const tbody = h('tbody', {}, keys.map(row));
  let shownCount = keys.length;
  const shown = h('span', { class: 'keys-shown muted', role: 'status', text: t('keys.shown', { count: formatNumber(shownCount) }) });
  const loadMore = h('button', { type: 'button', class: 'btn btn-secondary load-more', text: t('keys.loadMore') });
  loadMore.hidden = !cursor;
  loadMore.addEventListener('click', async () => {
    loadMore.disabled = true;
    loadMore.textContent = t('common.loading');
    try {
      const page = await api.listKeys(configId, { ...filter, limit: PAGE_SIZE, cursor });
      tbody.append(...page.items.map(row));
      shownCount += page.items.length;
      shown.textContent = t('keys.shown', { count: formatNumber(shownCount) });
      cursor = page.next_cursor;
      loadMore.hidden = !cursor;
    } catch (error) {
      fail(error);
    }
    loadMore.disabled = false;
    loadMore.textContent = t('keys.loadMore');
  });

  const pool = keys.length === 0 && !cursor
    ? h('div', { class: 'panel empty', text: t(filtered ? 'keys.noMatch' : 'keys.empty') })
    : h('div', { class: 'panel table-wrap' },
      h('table', { class: 'table table-cards keys-table' },
        h('thead', {}, h('tr', {}, columns.map(([name, key]) => h('th', { class: `col-${name}`, scope: 'col', text: t(key) })))),
        tbody),
      h('div', { class: 'pool-more' }, shown, loadMore));

  const controls = filterControls(configId, filter, (next) => {
    filters.set(configId, next);
    refresh();
  });

  return h('section', { class: 'keys-page', dataset: { configId: config.id } },
    h('a', { class: 'back', href: '#/configs', text: t('common.back') }),
    header,
    h('div', { class: 'pool-summary' },
      counts ? countBadges(counts) : h('span', { class: 'muted', text: t('keys.countsUnknown') })),
    controls,
    pool,
    importForm);
}
