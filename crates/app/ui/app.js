// The console's entry point: a hash router over the views, the navigation, the language switch
// and logout.

import * as api from './api.js';
import { h, replace, toast } from './dom.js';
import { t, lang, setLang, applyDocumentLang } from './i18n.js';
import { loginView } from './views/login.js';
import { configsView } from './views/configs.js';
import { configFormView } from './views/config-form.js';
import { keysView } from './views/keys.js';
import { clientKeysView, clientKeyFormView } from './views/client-keys.js';
import { dashboardView } from './views/dashboard.js';
import { requestLogView } from './views/request-log.js';

const ROUTES = [
  { pattern: /^#\/login$/, view: loginView, public: true },
  { pattern: /^#\/configs$/, view: configsView },
  { pattern: /^#\/configs\/new$/, view: configFormView },
  { pattern: /^#\/configs\/(\d+)\/edit$/, view: configFormView },
  { pattern: /^#\/configs\/(\d+)\/keys$/, view: keysView },
  { pattern: /^#\/client-keys$/, view: clientKeysView },
  { pattern: /^#\/client-keys\/new$/, view: clientKeyFormView },
  { pattern: /^#\/client-keys\/(\d+)\/edit$/, view: clientKeyFormView },
  { pattern: /^#\/dashboard(?:\?(.*))?$/, view: dashboardView },
  { pattern: /^#\/logs(?:\?(.*))?$/, view: requestLogView },
];

// The sections of the navigation: a link is current when the route starts with its hash.
const SECTIONS = [
  ['#/configs', 'nav.configs'],
  ['#/client-keys', 'nav.clientKeys'],
  ['#/dashboard', 'nav.dashboard'],
  ['#/logs', 'nav.logs'],
];

const view = document.getElementById('view');
const langToggle = document.getElementById('lang-toggle');
const logoutButton = document.getElementById('logout');
const mainNav = document.getElementById('main-nav');

let generation = 0;
let afterLogin = null;
let notice = null;

function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function updateNav(loggedIn, hash) {
  mainNav.hidden = !loggedIn;
  mainNav.setAttribute('aria-label', t('nav.label'));
  mainNav.replaceChildren(...SECTIONS.map(([target, key]) => {
    const current = hash === target || hash.startsWith(`${target}/`) || hash.startsWith(`${target}?`);
    return h('a', {
      class: ['nav-link', current ? 'current' : ''],
      href: target,
      'aria-current': current ? 'page' : null,
      dataset: { section: target.slice(2) },
      text: t(key),
    });
  }));
}

function updateChrome(loggedIn) {
  document.title = t('app.title');
  langToggle.textContent = t('lang.switch');
  langToggle.lang = lang() === 'zh' ? 'en' : 'zh';
  langToggle.title = t('lang.switchTitle');
  logoutButton.textContent = t('nav.logout');
  logoutButton.hidden = !loggedIn;
}

async function render() {
  const current = ++generation;
  const hash = location.hash || '#/configs';
  const route = ROUTES.find((r) => r.pattern.test(hash));
  if (!route) {
    navigate('#/configs');
    return;
  }
  const loggedIn = api.isLoggedIn();
  if (!route.public && !loggedIn) {
    afterLogin = hash;
    navigate('#/login');
    return;
  }
  if (route.public && loggedIn) {
    navigate('#/configs');
    return;
  }
  updateChrome(loggedIn);
  updateNav(loggedIn, hash);
  const params = hash.match(route.pattern).slice(1);
  const context = {
    params,
    navigate,
    alive: () => current === generation,
    takeNotice: () => {
      const taken = notice;
      notice = null;
      return taken;
    },
    afterLogin: () => {
      const target = afterLogin || '#/configs';
      afterLogin = null;
      return target;
    },
    rerender: render,
  };
  replace(view, h('p', { class: 'loading', text: t('common.loading') }));
  try {
    const content = await route.view(context);
    if (!context.alive()) return;
    replace(view, content);
    view.dataset.route = hash.replace(/\d+/g, ':id');
  } catch (error) {
    if (!context.alive()) return;
    if (error instanceof api.ApiError && error.status === 401) return;
    const message = error instanceof api.ApiError && error.status === 404
      ? t('error.notFound')
      : error instanceof api.ApiError && error.status === 0
        ? t('error.network')
        : t('error.generic', { message: error.message });
    replace(view, h('div', { class: 'panel' },
      h('p', { class: 'alert alert-error', role: 'alert', text: message }),
      h('a', { class: 'btn btn-secondary', href: '#/configs', text: t('common.back') })));
  }
}

api.onUnauthorized(() => {
  notice = t('session.expired');
  if (location.hash !== '#/login') afterLogin = location.hash || null;
  navigate('#/login');
});

langToggle.addEventListener('click', () => {
  setLang(lang() === 'zh' ? 'en' : 'zh');
  render();
});

logoutButton.addEventListener('click', () => {
  api.logout();
  afterLogin = null;
  notice = null;
  toast(t('session.loggedOut'));
  navigate('#/login');
});

window.addEventListener('hashchange', render);
applyDocumentLang();
api.resumeSession();
render();
