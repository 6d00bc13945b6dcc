// What the console derives from API data: client base URLs and a config's key counts.

const UPSTREAM_CLIENT_FORMAT = {
  openai_compatible: 'openai',
  anthropic_native: 'anthropic',
  gemini_native: 'gemini',
};

/** The format an LLM config's clients speak (`output_format`, or the upstream's own). */
export function clientFormat(config) {
  if (config.output_format && config.output_format !== 'none') return config.output_format;
  return UPSTREAM_CLIENT_FORMAT[config.api_format] || 'openai';
}

/**
 * The base URL clients put in their SDK: `<base>/llm/<slug>/v1` for OpenAI-format LLM configs,
 * `<base>/llm/<slug>` for the other LLM formats, `<base>/proxy/<slug>` for GENERIC.
 */
export function clientBaseUrl(publicBase, config) {
  const base = String(publicBase || window.location.origin).replace(/\/+$/, '');
  const slug = encodeURIComponent(config.slug || '');
  if (String(config.config_type).toUpperCase() !== 'LLM') return `${base}/proxy/${slug}`;
  const format = clientFormat(config);
  return format === 'openai' || format === 'openai_responses' ? `${base}/llm/${slug}/v1` : `${base}/llm/${slug}`;
}

/** The counts of one config from `GET /admin/key-counts`; a config without keys has none. */
export function countsOf(keyCounts, configId) {
  const found = (keyCounts.items || []).find((item) => String(item.proxy_config_id) === String(configId));
  return found || { total: 0, ok: 0, cooling: 0, failed: 0, disabled: 0 };
}

/** Where the upstream format puts the key when the config does not say. */
export function defaultPlacement(apiFormat) {
  switch (apiFormat) {
    case 'anthropic_native':
      return 'x-api-key';
    case 'gemini_native':
      return 'x-goog-api-key';
    default:
      return 'Authorization: Bearer';
  }
}
