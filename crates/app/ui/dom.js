// DOM helpers. Every value is inserted as text (createElement, textContent, setAttribute):
// nothing in the console ever parses a string as HTML, so data from the API cannot inject markup.

import { t, lang } from './i18n.js';

// Properties set on the element itself (after its children exist, so a <select> finds its option).
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'open', 'hidden']);

/**
 * Creates an element. `props`: `class`, `text`, `on` ({event: handler}), `dataset`, the
 * properties above, and any other attribute (set as a string). Children: nodes or text.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  const later = [];
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (name === 'text') element.textContent = String(value);
    else if (name === 'on') for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    else if (name === 'dataset') for (const [key, data] of Object.entries(value)) element.dataset[key] = String(data);
    else if (PROPERTIES.has(name)) later.push([name, value]);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  for (const [name, value] of later) element[name] = value;
  return element;
}

/** Appends nodes or text (arrays flattened, null and false skipped). */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces every child of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A short notice in the corner; removed after a few seconds. */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const item = h('div', { class: ['toast', `toast-${kind}`], text: message });
  while (box.children.length >= 3) box.firstElementChild.remove();
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 7000 : 3500);
}

/** Asks for confirmation in a modal dialog; resolves to true when confirmed. */
export function confirmDialog({ title, message, confirmLabel, danger = true }) {
  return new Promise((resolve) => {
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary cancel', text: t('common.cancel') });
    const confirm = h('button', {
      type: 'button',
      class: ['btn', danger ? 'btn-danger' : 'btn-primary', 'confirm'],
      text: confirmLabel || t('common.confirm'),
    });
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' },
      h('h2', { id: 'dialog-title', text: title }),
      h('p', { text: message }),
      h('div', { class: 'dialog-actions' }, cancel, confirm));
    let answer = false;
    cancel.addEventListener('click', () => dialog.close());
    confirm.addEventListener('click', () => { answer = true; dialog.close(); });
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** Copies text to the clipboard, with a fallback for browsers without the async API. */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall through to the selection-based copy
  }
  const area = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

/** The client base URL with a copy button. */
export function copyableUrl(url) {
  const button = h('button', {
    type: 'button',
    class: 'btn btn-small btn-secondary copy',
    title: t('common.copy'),
    'aria-label': `${t('common.copy')}: ${url}`,
    text: t('common.copy'),
    on: {
      click: async () => {
        const copied = await copyText(url);
        toast(copied ? t('common.copied') : t('common.copyFailed'), copied ? 'success' : 'error');
      },
    },
  });
  return h('div', { class: 'copyable' }, h('code', { class: 'client-url', text: url }), button);
}

/** The locale tag for number and date formatting. */
export function locale() {
  return lang() === 'zh' ? 'zh-CN' : 'en';
}

/** A date-time as local text, or an em dash. */
export function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'short', timeStyle: 'medium' }).format(date);
}

/** "in 5 minutes" / "3 minutes ago". */
export function relativeTime(iso) {
  if (!iso) return '';
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  if (Number.isNaN(seconds)) return '';
  const format = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' });
  const abs = Math.abs(seconds);
  if (abs < 60) return format.format(seconds, 'second');
  if (abs < 3600) return format.format(Math.round(seconds / 60), 'minute');
  if (abs < 86400) return format.format(Math.round(seconds / 3600), 'hour');
  return format.format(Math.round(seconds / 86400), 'day');
}

/** A whole number in the current locale. */
export function formatNumber(value) {
  return new Intl.NumberFormat(locale()).format(Number(value) || 0);
}

/** Key counts as small badges: total, then ok / cooling / failed / disabled when non-zero. */
export function countBadges(counts) {
  const badge = (kind, key) => h('span', { class: ['badge', `badge-${kind}`], dataset: { count: kind }, text: t(key, { count: counts[kind] }) });
  return h('div', { class: 'key-counts' },
    badge('total', 'counts.total'),
    counts.ok > 0 && badge('ok', 'counts.ok'),
    counts.cooling > 0 && badge('cooling', 'counts.cooling'),
    counts.failed > 0 && badge('failed', 'counts.failed'),
    counts.disabled > 0 && badge('disabled', 'counts.disabled'));
}

/** An on/off switch (a checkbox with role="switch"). */
export function toggleSwitch({ checked, label, onChange, id }) {
  const input = h('input', { type: 'checkbox', role: 'switch', checked: Boolean(checked), 'aria-label': label, id });
  input.addEventListener('change', () => onChange(input.checked, input));
  return h('label', { class: 'switch', title: label }, input, h('span', { class: 'switch-track', 'aria-hidden': 'true' }));
}
