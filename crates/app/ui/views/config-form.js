// Create or edit a proxy config. Fields are shown or hidden by type and format; the server's
// validation errors (422) are shown beside the field they name.

import * as api from '../api.js';
import { h, toast } from '../dom.js';
import { t } from '../i18n.js';
import { clientBaseUrl, defaultPlacement } from '../model.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
const API_FORMATS = ['openai_compatible', 'anthropic_native', 'gemini_native'];
const OUTPUT_FORMATS = ['none', 'openai', 'anthropic', 'gemini', 'openai_responses'];
const RETRY_CLASSES = ['rate_limited', 'auth_failed', 'server_error', 'connect_error', 'timeout'];

function slugify(name) {
  return name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9._-]+/g, '-').replace(/^[-_.]+|-+$/g, '').slice(0, 100);
}

/** Renders the config form; `context.params[0]` is the id when editing. */
export async function configFormView(context) {
  const editing = context.params[0] || null;
  const [settings, existing] = await Promise.all([
    api.appConfig().catch(() => ({})),
    editing ? api.getConfig(editing) : Promise.resolve(null),
  ]);
  const start = existing || {
    name: '', slug: '', config_type: 'LLM', is_active: true, method: 'POST', target_url: '',
    target_base_url: '', api_format: 'openai_compatible', output_format: 'none',
    api_key_location: null, api_key_name: null, api_key_prefix: null,
    max_retries: null, retry_on: null, response_timeout_seconds: null,
  };

  const inputs = {};
  const errors = {};
  const wrappers = {};

  function field(name, control, { hint, show } = {}) {
    control.id = `field-${name}`;
    control.name = name;
    inputs[name] = control;
    const error = h('p', { class: 'field-error', id: `err-${name}`, role: 'alert', hidden: true });
    errors[name] = error;
    const describedBy = [hint ? `hint-${name}` : null, `err-${name}`].filter(Boolean).join(' ');
    control.setAttribute('aria-describedby', describedBy);
    const isCheckbox = control.type === 'checkbox';
    const label = h('label', { for: control.id, text: t(`form.${name}`) });
    const wrapper = h('div', { class: isCheckbox ? 'field field-check' : 'field', dataset: { field: name } },
      isCheckbox ? [control, label] : [label, control],
      hint && h('p', { class: 'hint', id: `hint-${name}`, text: hint }),
      error);
    wrappers[name] = { wrapper, show: show || (() => true) };
    return wrapper;
  }

  const select = (options, value) => h('select', {},
    options.map(([optionValue, label]) => h('option', { value: optionValue, text: label, selected: optionValue === value })));

  const nameInput = h('input', { type: 'text', value: start.name, maxlength: 100, autocomplete: 'off', required: true });
  const slugInput = h('input', { type: 'text', value: start.slug, maxlength: 100, autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', required: true });
  let slugTouched = Boolean(editing);
  slugInput.addEventListener('input', () => { slugTouched = true; });
  nameInput.addEventListener('input', () => {
    if (!slugTouched) slugInput.value = slugify(nameInput.value);
    sync();
  });

  const typeSelect = select([['GENERIC', t('form.typeGeneric')], ['LLM', t('form.typeLlm')]], start.config_type);
  const activeInput = h('input', { type: 'checkbox', checked: start.is_active !== false });
  const methodSelect = select(METHODS.map((m) => [m, m]), start.method || 'POST');
  const targetUrl = h('input', { type: 'url', value: start.target_url || '', placeholder: 'https://api.example.com/v1', autocomplete: 'off', spellcheck: 'false' });
  const targetBaseUrl = h('input', { type: 'url', value: start.target_base_url || '', placeholder: 'https://api.openai.com/v1', autocomplete: 'off', spellcheck: 'false' });
  const apiFormat = select(API_FORMATS.map((f) => [f, f]), start.api_format || 'openai_compatible');
  const outputFormat = select(OUTPUT_FORMATS.map((f) => [f, f === 'none' ? t('form.outputNone') : f]), start.output_format || 'none');
  const location = h('select', {});
  const keyName = h('input', { type: 'text', value: start.api_key_name || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'x-api-key' });
  // Not trimmed: the trailing space of `Bearer ` is part of the prefix.
  const keyPrefix = h('input', { type: 'text', value: start.api_key_prefix || '', maxlength: 64, autocomplete: 'off', spellcheck: 'false', placeholder: 'Bearer ' });

  // Failover policy: blank numbers and "default" classes follow the server's environment.
  const optionalNumber = (value, max) => h('input', {
    type: 'number', min: 0, max, step: 1, inputmode: 'numeric', value: value ?? '', placeholder: t('form.policyDefault'),
  });
  const maxRetries = optionalNumber(start.max_retries, 10);
  const responseTimeout = optionalNumber(start.response_timeout_seconds, 86400);
  const retryDefault = h('input', { type: 'checkbox', id: 'retry-on-default', checked: !start.retry_on });
  const retryBoxes = RETRY_CLASSES.map((name) => h('input', {
    type: 'checkbox', value: name, id: `retry-on-${name}`, checked: Boolean(start.retry_on?.includes(name)),
  }));
  const retryOn = h('div', { role: 'group', class: 'retry-on' },
    h('label', { class: 'check' }, retryDefault, h('span', { text: t('form.retryOnDefault') })),
    retryBoxes.map((box) => h('label', { class: 'check' }, box, h('span', { text: t(`form.retry.${box.value}`) }))));
  const syncRetry = () => { for (const box of retryBoxes) box.disabled = retryDefault.checked; };
  retryDefault.addEventListener('change', syncRetry);
  syncRetry();

  const isLlm = () => typeSelect.value === 'LLM';

  // The key location offers "format default" only for LLM configs; its label names the default.
  function fillLocations() {
    const chosen = location.value || start.api_key_location || (isLlm() ? '' : 'header');
    const options = [['header', t('form.locationHeader')], ['query', t('form.locationQuery')]];
    if (isLlm()) options.unshift(['', t('form.locationDefault', { placement: defaultPlacement(apiFormat.value) })]);
    location.replaceChildren(...options.map(([value, label]) => h('option', { value, text: label })));
    location.value = options.some(([value]) => value === chosen) ? chosen : options[0][0];
  }

  const preview = h('code', { class: 'client-url', id: 'client-url-preview' });

  function sync() {
    fillLocations();
    for (const { wrapper, show } of Object.values(wrappers)) wrapper.hidden = !show();
    preview.textContent = clientBaseUrl(settings.proxy_public_base_url, {
      slug: slugInput.value.trim().toLowerCase() || '…',
      config_type: typeSelect.value,
      api_format: apiFormat.value,
      output_format: outputFormat.value,
    });
  }
  for (const control of [typeSelect, apiFormat, outputFormat, location]) control.addEventListener('change', sync);
  slugInput.addEventListener('input', sync);

  const formError = h('p', { class: 'alert alert-error form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary save', text: t('common.save') });

  const form = h('form', { class: 'panel config-form', novalidate: true },
    formError,
    h('div', { class: 'form-grid' },
      field('name', nameInput, { hint: t('form.nameHint') }),
      field('slug', slugInput, { hint: t('form.slugHint') }),
      field('config_type', typeSelect),
      field('method', methodSelect, { hint: t('form.methodHint'), show: () => !isLlm() }),
      field('target_url', targetUrl, { hint: t('form.targetUrlHint'), show: () => !isLlm() }),
      field('target_base_url', targetBaseUrl, { hint: t('form.targetBaseUrlHint'), show: isLlm }),
      field('api_format', apiFormat, { show: isLlm }),
      field('output_format', outputFormat, { hint: t('form.outputFormatHint'), show: isLlm }),
      field('api_key_location', location),
      field('api_key_name', keyName, { hint: t('form.keyNameHint'), show: () => !isLlm() || location.value !== '' }),
      field('api_key_prefix', keyPrefix, { hint: t('form.keyPrefixHint'), show: () => !isLlm() || location.value !== '' }),
      field('max_retries', maxRetries, { hint: t('form.maxRetriesHint') }),
      field('response_timeout_seconds', responseTimeout, { hint: t('form.responseTimeoutHint') }),
      field('retry_on', retryOn, { hint: t('form.retryOnHint') }),
      field('is_active', activeInput)),
    h('div', { class: 'preview' }, h('span', { class: 'muted', text: `${t('form.clientUrlPreview')}: ` }), preview),
    h('div', { class: 'form-actions' },
      h('a', { class: 'btn btn-secondary', href: editing ? '#/configs' : '#/configs', text: t('common.cancel') }),
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
      if (error && !wrappers[name].wrapper.hidden) {
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

  function body() {
    const input = {
      name: nameInput.value.trim(),
      slug: slugInput.value.trim(),
      config_type: typeSelect.value,
      is_active: activeInput.checked,
    };
    const number = (control) => (control.value.trim() === '' ? null : Number(control.value));
    Object.assign(input, {
      max_retries: number(maxRetries),
      response_timeout_seconds: number(responseTimeout),
      retry_on: retryDefault.checked ? null : retryBoxes.filter((box) => box.checked).map((box) => box.value),
    });
    if (isLlm()) {
      Object.assign(input, {
        target_base_url: targetBaseUrl.value.trim(),
        api_format: apiFormat.value,
        output_format: outputFormat.value,
      });
      if (location.value) Object.assign(input, { api_key_location: location.value, api_key_name: keyName.value.trim() });
    } else {
      Object.assign(input, {
        method: methodSelect.value,
        target_url: targetUrl.value.trim(),
        api_key_location: location.value,
        api_key_name: keyName.value.trim(),
      });
    }
    // A new config with an empty prefix gets the server's default (`Bearer ` for an LLM
    // `Authorization` header); an edit sends what the field holds, so a prefix can be removed.
    if (input.api_key_location && (editing || keyPrefix.value !== '')) input.api_key_prefix = keyPrefix.value;
    return input;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    submit.textContent = t('common.saving');
    try {
      const saved = editing ? await api.replaceConfig(editing, body()) : await api.createConfig(body());
      toast(editing ? t('form.saved') : t('form.created'), 'success');
      context.navigate(editing ? '#/configs' : `#/configs/${saved.id}/keys`);
    } catch (error) {
      if (error.status === 401) return;
      if (error.status === 422) {
        showErrors(error.fields, t('error.fixFields'));
      } else if (error.status === 409) {
        const name = /\bslug\b/.test(error.message) ? 'slug' : /\bname\b/.test(error.message) ? 'name' : null;
        showErrors(name ? [{ field: name, message: error.message }] : [], t('error.conflict', { message: error.message }));
      } else {
        showErrors([], error.status === 0 ? t('error.network') : t('error.generic', { message: error.message }));
      }
    } finally {
      submit.disabled = false;
      submit.textContent = t('common.save');
    }
  });

  sync();
  formError.tabIndex = -1;
  const title = editing ? t('form.editTitle', { name: existing.name }) : t('form.newTitle');
  return h('section', { class: 'config-form-page' },
    h('a', { class: 'back', href: '#/configs', text: t('common.back') }),
    h('div', { class: 'page-header' }, h('h1', { text: title })),
    form);
}
