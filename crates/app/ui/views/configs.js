// The list of proxy configs: type, upstream, active switch, key counts and the client base URL.

import * as api from '../api.js';
import { h, toast, confirmDialog, copyableUrl, countBadges, toggleSwitch } from '../dom.js';
import { t } from '../i18n.js';
import { clientBaseUrl, countsOf } from '../model.js';

function typeCell(config) {
  if (config.config_type !== 'LLM') return h('span', { class: 'badge badge-type', text: config.config_type });
  const formats = config.output_format && config.output_format !== 'none'
    ? `${config.api_format} → ${config.output_format}`
    : config.api_format;
  return [h('span', { class: 'badge badge-type badge-llm', text: 'LLM' }), h('div', { class: 'muted small', text: formats })];
}

function upstreamCell(config) {
  if (config.config_type === 'LLM') return h('span', { class: 'url', text: config.target_base_url || '' });
  return [h('span', { class: 'method', text: config.method || '' }), ' ', h('span', { class: 'url', text: config.target_url || '' })];
}

/** Renders the config list. */
export async function configsView(context) {
  const [settings, configs] = await Promise.all([
    api.appConfig().catch(() => ({})),
    api.listConfigs(),
  ]);
  // One grouped count for every config, never the pools themselves.
  const allCounts = await api.keyCounts().catch(() => null);

  const header = h('div', { class: 'page-header' },
    h('h1', { text: t('configs.title') }),
    h('div', { class: 'page-actions' },
      h('button', { type: 'button', class: 'btn btn-secondary refresh', text: t('common.refresh'), on: { click: () => context.rerender() } }),
      h('a', { class: 'btn btn-primary new-config', href: '#/configs/new', text: t('configs.new') })));

  if (configs.length === 0) {
    return h('section', { class: 'configs-page' }, header, h('div', { class: 'panel empty', text: t('configs.empty') }));
  }

  const columns = [
    ['name', 'configs.name'], ['slug', 'configs.slug'], ['type', 'configs.type'], ['upstream', 'configs.upstream'],
    ['active', 'configs.active'], ['keys', 'configs.keys'], ['client-url', 'configs.clientUrl'], ['actions', 'common.actions'],
  ];
  const cell = (column, ...content) => {
    const label = t(columns.find(([name]) => name === column)[1]);
    // One wrapper, so the cell's parts stay together when narrow screens lay cells out as a grid.
    return h('td', { class: `col-${column}`, dataset: { label } }, h('div', { class: 'cell' }, ...content));
  };

  const rows = configs.map((config) => {
    const counts = allCounts ? countsOf(allCounts, config.id) : null;
    const active = toggleSwitch({
      checked: config.is_active,
      label: `${t('configs.active')}: ${config.name}`,
      onChange: async (checked, input) => {
        input.disabled = true;
        try {
          const updated = await api.setConfigActive(config.id, checked);
          config.is_active = updated.is_active;
          toast(t(updated.is_active ? 'configs.activated' : 'configs.deactivated', { name: config.name }), 'success');
        } catch (error) {
          input.checked = !checked;
          if (error.status !== 401) toast(t('error.generic', { message: error.message }), 'error');
        } finally {
          input.disabled = false;
        }
      },
    });
    const remove = h('button', {
      type: 'button',
      class: 'btn btn-small btn-danger-ghost delete-config',
      text: t('common.delete'),
      on: {
        click: async () => {
          const confirmed = await confirmDialog({
            title: t('configs.deleteTitle'),
            message: t('configs.deleteMessage', { name: config.name, count: counts ? counts.total : '?' }),
            confirmLabel: t('common.delete'),
          });
          if (!confirmed) return;
          try {
            await api.deleteConfig(config.id);
            toast(t('configs.deleted', { name: config.name }), 'success');
            context.rerender();
          } catch (error) {
            if (error.status !== 401) toast(t('error.generic', { message: error.message }), 'error');
          }
        },
      },
    });
    return h('tr', { class: config.is_active ? 'config-row' : 'config-row inactive', dataset: { configId: config.id, slug: config.slug } },
      cell('name', h('a', { class: 'config-name', href: `#/configs/${config.id}/keys`, text: config.name })),
      cell('slug', h('code', { class: 'slug', text: config.slug })),
      cell('type', typeCell(config)),
      cell('upstream', upstreamCell(config)),
      cell('active', active),
      cell('keys', counts ? countBadges(counts) : h('span', { class: 'muted', text: t('configs.keysUnknown') })),
      cell('client-url', copyableUrl(clientBaseUrl(settings.proxy_public_base_url, config))),
      cell('actions', h('div', { class: 'row-actions' },
        h('a', { class: 'btn btn-small btn-secondary manage-keys', href: `#/configs/${config.id}/keys`, text: t('configs.manageKeys') }),
        h('a', { class: 'btn btn-small btn-secondary edit-config', href: `#/configs/${config.id}/edit`, text: t('common.edit') }),
        remove)));
  });

  const table = h('table', { class: 'table table-cards configs-table' },
    h('thead', {}, h('tr', {}, columns.map(([name, key]) => h('th', { class: `col-${name}`, scope: 'col', text: t(key) })))),
    h('tbody', {}, rows));
  return h('section', { class: 'configs-page' }, header, h('div', { class: 'panel table-wrap' }, table));
}
