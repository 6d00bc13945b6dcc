// Charts as inline SVG built node by node (createElementNS, setAttribute, textContent): no
// charting library, nothing fetched, nothing parsed as markup, and colours come from style.css
// classes because the Content-Security-Policy allows no inline style.

import { h } from './dom.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Creates an SVG element; attributes are set as strings, children are nodes or text. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * A round upper bound and the step of its grid lines for values up to `max`; `integer` keeps
 * the steps whole (counts, milliseconds), so no axis label is a rounded fraction.
 */
export function niceScale(max, { lines = 4, integer = false } = {}) {
  if (!(max > 0)) return integer ? { top: lines, step: 1 } : { top: 1, step: 1 / lines };
  const rough = max / lines;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= rough);
  if (integer) step = Math.max(1, Math.round(step));
  return { top: step * Math.ceil(max / step), step };
}

// Room for the axis labels inside the drawing.
const MARGIN = { top: 12, right: 12, bottom: 26, left: 52 };

/** The drawing width that fits the screen: charts are redrawn on every render, never scaled down. */
function drawingWidth() {
  const viewport = typeof window === 'undefined' ? 1280 : window.innerWidth;
  // Two charts side by side on wide screens, one per row from 820 px down (as style.css lays them).
  const column = viewport > 820 ? (Math.min(viewport, 1320) - 80) / 2 : viewport - 56;
  return Math.round(Math.max(280, Math.min(640, column)));
}

/**
 * A time chart. `times`: Date per bucket; `series`: [{label, values}] (a null value leaves a gap
 * in a line); `kind`: `line` or `bars` (stacked); `format` turns a value into axis and tooltip
 * text, `timeFormat` a Date into an axis label; `integer` (the default) keeps the axis steps
 * whole. Returns a <figure> with a legend.
 */
export function timeChart({
  id, title, times, series, kind = 'line', format = String, timeFormat = String, emptyText = '', integer = true,
}) {
  const width = drawingWidth();
  const height = 200;
  const plotWidth = width - MARGIN.left - MARGIN.right;
  const plotHeight = height - MARGIN.top - MARGIN.bottom;
  const count = times.length;
  const totals = times.map((_, i) => series.reduce((sum, s) => sum + (Number(s.values[i]) || 0), 0));
  const max = kind === 'bars'
    ? Math.max(0, ...totals)
    : Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined).map(Number)));
  const { top, step } = niceScale(max, { integer });
  const slot = count > 0 ? plotWidth / count : plotWidth;
  const x = (i) => MARGIN.left + slot * i + slot / 2;
  const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;

  const grid = [];
  for (let value = 0; value <= top + step / 2; value += step) {
    const at = y(value);
    grid.push(svg('line', { class: 'grid-line', x1: MARGIN.left, x2: width - MARGIN.right, y1: at, y2: at }));
    grid.push(svg('text', { class: 'axis-label', x: MARGIN.left - 6, y: at + 4, 'text-anchor': 'end' }, format(value)));
  }
  // About one time label per 70 px.
  const every = Math.max(1, Math.ceil(count / Math.max(1, Math.floor(plotWidth / 70))));
  const labels = [];
  for (let i = 0; i < count; i += every) {
    labels.push(svg('text', { class: 'axis-label', x: x(i), y: height - 8, 'text-anchor': 'middle' }, timeFormat(times[i])));
  }

  const marks = [];
  if (kind === 'bars') {
    const barWidth = Math.max(1, slot * 0.72);
    const base = new Array(count).fill(0);
    series.forEach((s, index) => {
      s.values.forEach((raw, i) => {
        const value = Number(raw) || 0;
        if (value <= 0) return;
        const y1 = y(base[i] + value);
        const y0 = y(base[i]);
        base[i] += value;
        marks.push(svg('rect', {
          class: ['bar', `series-${index}`], x: x(i) - barWidth / 2, y: y1, width: barWidth, height: Math.max(0.5, y0 - y1),
        }, svg('title', {}, `${timeFormat(times[i])} · ${s.label}: ${format(value)}`)));
      });
    });
  } else {
    series.forEach((s, index) => {
      let d = '';
      let open = false;
      s.values.forEach((raw, i) => {
        if (raw === null || raw === undefined) {
          open = false;
          return;
        }
        d += `${open ? 'L' : 'M'}${x(i).toFixed(1)},${y(Number(raw)).toFixed(1)}`;
        open = true;
      });
      if (d) marks.push(svg('path', { class: ['line', `series-${index}`], d, fill: 'none' }));
      s.values.forEach((raw, i) => {
        if (raw === null || raw === undefined) return;
        marks.push(svg('circle', { class: ['point', `series-${index}`], cx: x(i), cy: y(Number(raw)), r: count > 40 ? 2.2 : 2.8 },
          svg('title', {}, `${timeFormat(times[i])} · ${s.label}: ${format(Number(raw))}`)));
      });
    });
  }

  const hasData = series.some((s) => s.values.some((v) => Number(v) > 0));
  const drawing = svg('svg', {
    class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': title,
    preserveAspectRatio: 'xMidYMid meet',
  },
  svg('g', { class: 'grid' }, grid),
  svg('g', { class: 'marks' }, marks),
  svg('g', { class: 'time-axis' }, labels));
  const legend = h('ul', { class: 'legend' },
    series.map((s, index) => h('li', {}, h('span', { class: ['swatch', `series-${index}`], 'aria-hidden': 'true' }), h('span', { text: s.label }))));
  return h('figure', { class: ['panel', 'chart', hasData ? '' : 'chart-empty'], dataset: { chart: id, kind } },
    h('figcaption', { class: 'chart-title', text: title }),
    drawing,
    legend,
    hasData ? null : h('p', { class: 'chart-note muted', text: emptyText }));
}

/**
 * A ranked list with a bar per row: rows are {label, href, value, detail}; bars are relative to
 * the largest value.
 */
export function rankList({ id, title, rows, format = String, emptyText = '' }) {
  const max = Math.max(0, ...rows.map((row) => Number(row.value) || 0));
  const items = rows.map((row) => {
    const share = max > 0 ? (Number(row.value) || 0) / max : 0;
    const label = row.href
      ? h('a', { class: 'rank-label', href: row.href, text: row.label })
      : h('span', { class: 'rank-label', text: row.label });
    return h('li', { class: 'rank-row', dataset: { id: row.id } },
      h('div', { class: 'rank-head' }, label, h('span', { class: 'rank-value', text: format(row.value) })),
      svg('svg', { class: 'rank-bar', viewBox: '0 0 100 6', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
        svg('rect', { class: 'rank-track', x: 0, y: 0, width: 100, height: 6, rx: 3 }),
        svg('rect', { class: 'rank-fill', x: 0, y: 0, width: (share * 100).toFixed(2), height: 6, rx: 3 })),
      row.detail ? h('div', { class: 'rank-detail muted small', text: row.detail }) : null);
  });
  return h('section', { class: 'panel rank', dataset: { rank: id } },
    h('h2', { text: title }),
    rows.length > 0 ? h('ol', { class: 'rank-list' }, items) : h('p', { class: 'muted', text: emptyText }));
}
