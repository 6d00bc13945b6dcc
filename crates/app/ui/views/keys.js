// A config's key pool: masked keys, health, usage, enable/disable, test, delete, batch import
// and clear all.

import * as api from '../api.js';
import {
  h, replace, toast, confirmDialog, copyableUrl, countBadges, toggleSwitch, formatTime, relativeTime, formatNumber,
} from '../dom.js';
import { t } from '../i18n.js';
import { clientBaseUrl, keyCounts } from '../model.js';

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

// Test and import results survive the re-render that follows them.
const testResults = new Map();
const lastImports = new Map();

function testText(result) {
  if (result.error && result.status == null) {
    return `${t('keys.testNoStatus', { latency: result.latency_ms, health: t(`health.${result.health}`) })} · ${result.error}`;
  }
  return t('keys.testResult', { status: result.status, latency: result.latency_ms, health: t(`health.${result.health}`) });
}

/** Renders the key pool of config `context.params[0]`. */
export async function keysView(context) {
  const configId = context.params[0];
  const [settings, config, keys] = await Promise.all([
    api.appConfig().catch(() => ({})),
    api.getConfig(configId),
    api.listKeys(configId),
  ]);
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
    disabled: keys.length === 0,
    on: {
      click: async () => {
        const confirmed = await confirmDialog({
          title: t('keys.clearTitle'),
          message: t('keys.clearMessage', { count: keys.length, name: config.name }),
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
  const rows = keys.map((key) => {
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
  });

  const pool = keys.length === 0
    ? h('div', { class: 'panel empty', text: t('keys.empty') })
    : h('div', { class: 'panel table-wrap' },
      h('table', { class: 'table table-cards keys-table' },
        h('thead', {}, h('tr', {}, columns.map(([name, key]) => h('th', { class: `col-${name}`, scope: 'col', text: t(key) })))),
        h('tbody', {}, rows)));

  return h('section', { class: 'keys-page', dataset: { configId: config.id } },
    h('a', { class: 'back', href: '#/configs', text: t('common.back') }),
    header,
    h('div', { class: 'pool-summary' }, countBadges(keyCounts(keys))),
    pool,
    importForm);
}
