// The login page.

import * as api from '../api.js';
import { h } from '../dom.js';
import { t } from '../i18n.js';

/** Renders the login form. */
export async function loginView(context) {
  const notice = context.takeNotice();
  const username = h('input', {
    id: 'login-username', name: 'username', type: 'text', autocomplete: 'username',
    required: true, value: 'admin', autocapitalize: 'none', spellcheck: 'false',
  });
  const password = h('input', {
    id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const error = h('p', { id: 'login-error', class: 'alert alert-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', text: t('login.submit') });

  const form = h('form', { class: 'login-form', novalidate: true, 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title', text: t('login.title') }),
    h('p', { class: 'muted', text: t('login.subtitle') }),
    notice && h('p', { class: 'alert alert-info', role: 'status', text: notice }),
    error,
    h('div', { class: 'field' }, h('label', { for: 'login-username', text: t('login.username') }), username),
    h('div', { class: 'field' }, h('label', { for: 'login-password', text: t('login.password') }), password),
    submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = t('login.submitting');
    try {
      await api.login(username.value.trim(), password.value);
      context.navigate(context.afterLogin());
    } catch (failure) {
      error.textContent = failure.status === 401
        ? t('login.invalid')
        : failure.status === 429
          ? t('login.tooMany')
          : failure.status === 0
            ? t('error.network')
            : t('error.generic', { message: failure.message });
      error.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
      submit.textContent = t('login.submit');
    }
  });
  setTimeout(() => password.focus(), 0);
  return h('section', { class: 'login-page' }, h('div', { class: 'panel login-panel' }, form));
}
