// Client keys (SPEC §7): the list with usage, limits, expiry and an enable switch; the create and
// edit form; rotate and delete. A secret exists in the page only inside the one dialog that shows
// it after create or rotate: it is never stored, and closing the dialog removes it.

import * as api from '../api.js';
import {
  h, toast, confirmDialog, copyText, toggleSwitch, formatTime, relativeTime, formatNumber,
} from '../dom.js';
import { t } from '../i18n.js';

const PERIODS = ['day', 'month', 'total'];

// The secret of a key just created, shown by the list the create form leads to, then dropped.
let pendingSecret = null;

/** The create/replace body of `key`, with `changes` applied (PUT takes the whole body). */
export function keyBody(key, changes = {}) {
  return {
    name: key.name,
    is_active: key.is_active,
    expires_at: key.expires_at ?? null,
    allowed_config_ids: Array.isArray(key.allowed_config_ids) ? key.allowed_config_ids : [],
    rpm: key.rpm ?? null,
    tpm: key.tpm ?? null,
    max_concurrency: key.max_concurrency ?? null,
    token_budget: key.token_budget ?? null,
    budget_period: key.budget_period ?? null,
    ...changes,
  };
}

/** Whether `key` has expired by now. */
function expired(key) {
  return Boolean(key.expires_at) && new Date(key.expires_at).getTime() <= Date.now();
}

/** `2026-12-06T14:05:00Z` → `2026-12-06T15:05` in local time, for a datetime-local input. */
export function toLocalInput(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A datetime-local value (local time) → RFC 3339 UTC, or null when empty. */
export function fromLocalInput(value) {
  if (!value) return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return undefined;
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Shows a secret once, in a modal dialog with a copy button. The secret lives in this dialog
 * only; it is removed from the page when the dialog closes.
 */
export function secretDialog({ title, name, secret }) {
  return new Promise((resolve) => {
    const code = h('code', { class: 'secret-value', id: 'client-key-secret', text: secret });
    const copy = h('button', {
      type: 'button',
      class: 'btn btn-primary copy-secret',
      text: t('common.copy'),
      on: {
        click: async () => {
          const copied = await copyText(secret);
          toast(copied ? t('clientKeys.secretCopied') : t('clientKeys.secretCopyFailed'), copied ? 'success' : 'error');
          if (copied) copy.textContent = t('clientKeys.copiedButton');
        },
      },
    });
    const done = h('button', { type: 'button', class: 'btn btn-secondary close-secret', text: t('clientKeys.secretDone') });
    const dialog = h('dialog', { class: 'dialog secret-dialog', 'aria-labelledby': 'secret-title' },
      h('h2', { id: 'secret-title', text: title }),
      h('p', { class: 'secret-name', text: name }),
      h('p', { class: 'alert alert-info secret-warning', text: t('clientKeys.secretOnce') }),
      h('div', { class: 'secret-box' }, code, copy),
      h('div', { class: 'dialog-actions' }, done));
    done.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      code.textContent = '';
      dialog.remove();
      resolve();
    });
    document.body.append(dialog);
    dialog.showModal();
    copy.focus();
  });
}

function limitsText(key) {
  const parts = [];
  if (key.rpm != null) parts.push(t('clientKeys.limitRpm', { value: formatNumber(key.rpm) }));
  if (key.tpm != null) parts.push(t('clientKeys.limitTpm', { value: formatNumber(key.tpm) }));
  if (key.max_concurrency != null) parts.push(t('clientKeys.limitConcurrency', { value: formatNumber(key.max_concurrency) }));
  return parts;
}

function budgetCell(key) {
  if (key.token_budget == null) {
    return h('span', { class: 'budget muted', text: t('clientKeys.noBudget') });
  }
  const used = Number(key.budget_used) || 0;
  const budget = Number(key.token_budget) || 0;
  const period = key.budget_period ? t(`clientKeys.period.${key.budget_period}`) : '';
  return h('div', { class: 'budget' },
    h('meter', {
      class: 'budget-meter', min: 0, max: Math.max(1, budget), value: Math.min(used, budget), low: budget * 0.8, high: budget * 0.95, optimum: 0,
      'aria-label': t('clientKeys.budgetUsed'),
    }),
    h('span', { class: 'budget-text', text: t('clientKeys.budgetOf', { used: formatNumber(used), budget: formatNumber(budget), period }) }));
}

/** Renders the list of client keys. */
export async function clientKeysView(context) {
  const [list, configs] = await Promise.all([
    api.listClientKeys(),
    api.listConfigs().catch(() => []),
  ]);
  const keys = list.items || [];
  const configNames = new Map(configs.map((config) => [String(config.id), config.name]));
  const refresh = () => context.rerender();
  const fail = (error) => {
    if (error.status !== 401) toast(t('error.generic', { message: error.message }), 'error');
  };

  const columns = [
    ['name', 'clientKeys.name'], ['enabled', 'clientKeys.enabled'], ['usage', 'clientKeys.usage'],
    ['budget', 'clientKeys.budget'], ['limits', 'clientKeys.limits'], ['configs', 'clientKeys.configs'],
    ['expires', 'clientKeys.expires'], ['last-used', 'clientKeys.lastUsed'], ['actions', 'common.actions'],
  ];
  const cell = (column, ...content) => {
    const label = t(columns.find(([name]) => name === column)[1]);
    return h('td', { class: `col-${column}`, dataset: { label } }, h('div', { class: 'cell' }, ...content));
  };

  const row = (key) => {
    const isExpired = expired(key);
    const enabled = toggleSwitch({
      checked: key.is_active,
      label: `${t('clientKeys.enabled')}: ${key.name}`,
      onChange: async (checked, input) => {
        input.disabled = true;
        try {
          const saved = await api.replaceClientKey(key.id, keyBody(key, { is_active: checked }));
          Object.assign(key, saved);
          toast(t(checked ? 'clientKeys.enabledToast' : 'clientKeys.disabledToast', { name: key.name }), 'success');
          refresh();
        } catch (error) {
          input.checked = !checked;
          input.disabled = false;
          fail(error);
        }
      },
    });
    const rotate = h('button', {
      type: 'button',
      class: 'btn btn-small btn-secondary rotate-client-key',
      text: t('clientKeys.rotate'),
      on: {
        click: async () => {
          const confirmed = await confirmDialog({
            title: t('clientKeys.rotateTitle'),
            message: t('clientKeys.rotateMessage', { name: key.name }),
            confirmLabel: t('clientKeys.rotate'),
          });
          if (!confirmed) return;
          try {
            const rotated = await api.rotateClientKey(key.id);
            await secretDialog({ title: t('clientKeys.rotatedTitle'), name: rotated.name || key.name, secret: rotated.secret });
            refresh();
          } catch (error) {
            fail(error);
          }
        },
      },
    });
    const remove = h('button', {
      type: 'button',
      class: 'btn btn-small btn-danger-ghost delete-client-key',
      text: t('common.delete'),
      on: {
        click: async () => {
          const confirmed = await confirmDialog({
            title: t('clientKeys.deleteTitle'),
            message: t('clientKeys.deleteMessage', { name: key.name }),
            confirmLabel: t('common.delete'),
          });
          if (!confirmed) return;
          try {
            await api.deleteClientKey(key.id);
            toast(t('clientKeys.deleted', { name: key.name }), 'success');
            refresh();
          } catch (error) {
            fail(error);
          }
        },
      },
    });
    const allowed = Array.isArray(key.allowed_config_ids) ? key.allowed_config_ids : [];
    const limits = limitsText(key);
    return h('tr', {
      class: ['client-key-row', key.is_active ? '' : 'disabled', isExpired ? 'expired' : ''],
      dataset: { clientKeyId: key.id, name: key.name, active: key.is_active },
    },
    cell('name',
      h('div', { class: 'client-key-name', text: key.name }),
      h('code', { class: 'key-prefix', title: t('clientKeys.prefixTitle'), text: `${key.key_prefix}…` })),
    cell('enabled', enabled, !key.is_active ? h('span', { class: 'badge badge-disabled', text: t('health.disabled') }) : null),
    cell('usage',
      h('div', { class: 'usage-requests', text: t('clientKeys.requestsCount', { count: formatNumber(key.request_count) }) }),
      h('div', { class: 'usage-tokens muted small', text: t('clientKeys.tokensCount', { count: formatNumber(key.token_count) }) })),
    cell('budget', budgetCell(key)),
    cell('limits', limits.length > 0
      ? h('ul', { class: 'limit-list' }, limits.map((text) => h('li', { text })))
      : h('span', { class: 'muted', text: t('clientKeys.noLimits') })),
    cell('configs', allowed.length === 0
      ? h('span', { class: 'muted', text: t('clientKeys.allConfigs') })
      : h('ul', { class: 'config-list' }, allowed.map((configId) => h('li', {
        text: configNames.get(String(configId)) || t('clientKeys.configId', { id: configId }),
      })))),
    cell('expires', key.expires_at
      ? [
        h('time', { class: 'expires-at', datetime: key.expires_at, title: formatTime(key.expires_at), text: formatTime(key.expires_at) }),
        isExpired
          ? h('span', { class: 'badge badge-failed expired-badge', text: t('clientKeys.expired') })
          : h('div', { class: 'muted small', text: relativeTime(key.expires_at) }),
      ]
      : h('span', { class: 'muted', text: t('clientKeys.never') })),
    cell('last-used', key.last_used_at
      ? h('time', { class: 'last-used', datetime: key.last_used_at, title: formatTime(key.last_used_at), text: relativeTime(key.last_used_at) })
      : h('span', { class: 'last-used muted', text: t('clientKeys.neverUsed') })),
    cell('actions', h('div', { class: 'row-actions' },
      h('a', { class: 'btn btn-small btn-secondary edit-client-key', href: `#/client-keys/${key.id}/edit`, text: t('common.edit') }),
      rotate,
      remove)));
  };

  const header = h('div', { class: 'page-header' },
    h('div', {},
      h('h1', { text: t('clientKeys.title') }),
      h('p', { class: 'hint page-hint', text: t('clientKeys.intro') })),
    h('div', { class: 'page-actions' },
      h('button', { type: 'button', class: 'btn btn-secondary refresh', text: t('common.refresh'), on: { click: refresh } }),
      h('a', { class: 'btn btn-primary new-client-key', href: '#/client-keys/new', text: t('clientKeys.new') })));

  const body = keys.length === 0
    ? h('div', { class: 'panel empty', text: t('clientKeys.empty') })
    : h('div', { class: 'panel table-wrap' },
      h('table', { class: 'table table-cards client-keys-table' },
        h('thead', {}, h('tr', {}, columns.map(([name, key]) => h('th', { class: `col-${name}`, scope: 'col', text: t(key) })))),
        h('tbody', {}, keys.map(row))));

  const page = h('section', { class: 'client-keys-page' }, header, body);
  if (pendingSecret) {
    const shown = pendingSecret;
    pendingSecret = null;
    // After the page is in place, so the list shows behind the dialog.
    setTimeout(() => {
      if (context.alive()) secretDialog({ title: t('clientKeys.createdTitle'), name: shown.name, secret: shown.secret });
    }, 0);
  }
  return page;
}

/** Renders the create or edit form; `context.params[0]` is the id when editing. */
export async function clientKeyFormView(context) {
  const editing = context.params[0] || null;
  const [existing, configs] = await Promise.all([
    editing ? api.getClientKey(editing) : Promise.resolve(null),
    api.listConfigs().catch(() => []),
  ]);
  const start = existing || {
    name: '', is_active: true, expires_at: null, allowed_config_ids: [],
    rpm: null, tpm: null, max_concurrency: null, token_budget: null, budget_period: null,
  };

  const inputs = {};
  const errors = {};
  function field(name, control, { hint } = {}) {
    control.id = control.id || `ck-${name}`;
    if (control.tagName !== 'DIV') control.name = name;
    inputs[name] = control;
    const error = h('p', { class: 'field-error', id: `ck-err-${name}`, role: 'alert', hidden: true });
    errors[name] = error;
    control.setAttribute('aria-describedby', [hint ? `ck-hint-${name}` : null, `ck-err-${name}`].filter(Boolean).join(' '));
    const isCheckbox = control.type === 'checkbox';
    const label = control.tagName === 'DIV'
      ? h('span', { class: 'field-label', id: `ck-label-${name}`, text: t(`clientKeys.field.${name}`) })
      : h('label', { for: control.id, text: t(`clientKeys.field.${name}`) });
    return h('div', { class: isCheckbox ? 'field field-check' : 'field', dataset: { field: name } },
      isCheckbox ? [control, label] : [label, control],
      hint && h('p', { class: 'hint', id: `ck-hint-${name}`, text: hint }),
      error);
  }

  const nameInput = h('input', { type: 'text', value: start.name, maxlength: 100, autocomplete: 'off', required: true });
  const activeInput = h('input', { type: 'checkbox', checked: start.is_active !== false });
  const expiresInput = h('input', { type: 'datetime-local', value: toLocalInput(start.expires_at) });
  const number = (value) => h('input', {
    type: 'number', min: 1, step: 1, inputmode: 'numeric', value: value ?? '', placeholder: t('clientKeys.unlimited'),
  });
  const rpmInput = number(start.rpm);
  const tpmInput = number(start.tpm);
  const concurrencyInput = number(start.max_concurrency);
  const budgetInput = number(start.token_budget);
  const periodSelect = h('select', {},
    [['', t('clientKeys.periodNone')], ...PERIODS.map((p) => [p, t(`clientKeys.period.${p}`)])]
      .map(([value, text]) => h('option', { value, text, selected: (start.budget_period || '') === value })));
  const allowedNow = new Set((start.allowed_config_ids || []).map(String));
  const configBoxes = configs.map((config) => h('input', {
    type: 'checkbox', value: String(config.id), id: `ck-config-${config.id}`, checked: allowedNow.has(String(config.id)),
  }));
  const configGroup = h('div', { role: 'group', class: 'config-choices', 'aria-labelledby': 'ck-label-allowed_config_ids' },
    configs.length === 0
      ? h('span', { class: 'muted', text: t('clientKeys.noConfigs') })
      : configs.map((config, i) => h('label', { class: 'check', for: configBoxes[i].id },
        configBoxes[i], h('span', { text: config.name }), ' ', h('code', { class: 'slug', text: config.slug }))));
  const syncBudget = () => { periodSelect.required = budgetInput.value.trim() !== ''; };
  budgetInput.addEventListener('input', syncBudget);
  syncBudget();

  const formError = h('p', { class: 'alert alert-error form-error', role: 'alert', hidden: true, tabindex: -1 });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary save', text: editing ? t('common.save') : t('clientKeys.create') });
  const form = h('form', { class: 'panel client-key-form', novalidate: true },
    formError,
    h('div', { class: 'form-grid' },
      field('name', nameInput, { hint: t('clientKeys.nameHint') }),
      field('expires_at', expiresInput, { hint: t('clientKeys.expiresHint') }),
      field('rpm', rpmInput, { hint: t('clientKeys.rpmHint') }),
      field('tpm', tpmInput, { hint: t('clientKeys.tpmHint') }),
      field('max_concurrency', concurrencyInput, { hint: t('clientKeys.concurrencyHint') }),
      field('token_budget', budgetInput, { hint: t('clientKeys.budgetHint') }),
      field('budget_period', periodSelect),
      field('allowed_config_ids', configGroup, { hint: t('clientKeys.configsHint') }),
      field('is_active', activeInput)),
    h('div', { class: 'form-actions' },
      h('a', { class: 'btn btn-secondary', href: '#/client-keys', text: t('common.cancel') }),
      submit));

  function clearErrors() {
    formError.hidden = true;
    formError.replaceChildren();
    for (const [name, error] of Object.entries(errors)) {
      error.hidden = true;
      error.textContent = '';
      inputs[name].removeAttribute('aria-invalid');
    }
  }

  function showErrors(fields, fallback) {
    const unplaced = [];
    let first = null;
    for (const { field: name, message } of fields) {
      const error = errors[name];
      if (error) {
        error.textContent = error.textContent ? `${error.textContent}; ${message}` : message;
        error.hidden = false;
        inputs[name].setAttribute('aria-invalid', 'true');
        first = first || inputs[name];
      } else {
        unplaced.push(`${name}: ${message}`);
      }
    }
    formError.replaceChildren(h('span', { text: fallback }), ...unplaced.map((line) => h('span', { class: 'detail', text: line })));
    formError.hidden = false;
    (first || formError).focus?.();
  }

  // Checked here only where the browser would otherwise send something else than typed.
  function localErrors() {
    const found = [];
    if (nameInput.value.trim() === '') found.push({ field: 'name', message: t('clientKeys.nameRequired') });
    if (fromLocalInput(expiresInput.value) === undefined) found.push({ field: 'expires_at', message: t('clientKeys.badDate') });
    for (const [name, control] of [['rpm', rpmInput], ['tpm', tpmInput], ['max_concurrency', concurrencyInput], ['token_budget', budgetInput]]) {
      const text = control.value.trim();
      if (text !== '' && !/^\d+$/.test(text)) found.push({ field: name, message: t('clientKeys.wholeNumber') });
    }
    if (budgetInput.value.trim() !== '' && !periodSelect.value) found.push({ field: 'budget_period', message: t('clientKeys.periodRequired') });
    return found;
  }

  function body() {
    const whole = (input) => (input.value.trim() === '' ? null : Number(input.value.trim()));
    return {
      name: nameInput.value.trim(),
      is_active: activeInput.checked,
      expires_at: fromLocalInput(expiresInput.value) ?? null,
      allowed_config_ids: configBoxes.filter((box) => box.checked).map((box) => Number(box.value)),
      rpm: whole(rpmInput),
      tpm: whole(tpmInput),
      max_concurrency: whole(concurrencyInput),
      token_budget: whole(budgetInput),
      budget_period: periodSelect.value || null,
    };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    const local = localErrors();
    if (local.length > 0) {
      showErrors(local, t('error.fixFields'));
      return;
    }
    submit.disabled = true;
    submit.textContent = t('common.saving');
    try {
      if (editing) {
        await api.replaceClientKey(editing, body());
        toast(t('clientKeys.saved'), 'success');
      } else {
        const created = await api.createClientKey(body());
        pendingSecret = { name: created.name, secret: created.secret };
      }
      context.navigate('#/client-keys');
    } catch (error) {
      if (error.status === 401) return;
      if (error.status === 422 || error.status === 400) {
        showErrors(error.fields, error.fields.length > 0 ? t('error.fixFields') : t('error.generic', { message: error.message }));
      } else if (error.status === 409) {
        showErrors([{ field: 'name', message: error.message }], t('error.conflict', { message: error.message }));
      } else {
        showErrors([], error.status === 0 ? t('error.network') : t('error.generic', { message: error.message }));
      }
    } finally {
      submit.disabled = false;
      submit.textContent = editing ? t('common.save') : t('clientKeys.create');
    }
  });

  const title = editing ? t('clientKeys.editTitle', { name: existing.name }) : t('clientKeys.newTitle');
  return h('section', { class: 'client-key-form-page' },
    h('a', { class: 'back', href: '#/client-keys', text: t('clientKeys.back') }),
    h('div', { class: 'page-header' },
      h('div', {},
        h('h1', { text: title }),
        existing ? h('code', { class: 'key-prefix', text: `${existing.key_prefix}…` }) : null)),
    form);
}
