/**
 * Small hand-drawn SVG charts for the latent cards (histogram, bars against a chance tick,
 * sparklines, an input raster): a report has dozens of cards per layer, and drawing each through
 * Vega would take seconds per layer, so these are plain strings with no dependencies.
 */

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const num = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
const r1 = (v: number) => Math.round(v * 10) / 10;

function svg(width: number, height: number, label: string, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>${body}</svg>`;
}

/** Bars over bin edges (non-zero activations); `n_zero` is said in the label, not drawn (it dwarfs the rest). */
export function histogramSvg(edges: readonly number[], counts: readonly number[], label: string): string {
  const W = 260, H = 90, pad = 16;
  let last = counts.length - 1;
  while (last > 0 && !(counts[last]! > 0)) last--;
  const shown = counts.slice(0, last + 1);
  const max = Math.max(1, ...shown);
  const w = (W - 2 * pad) / Math.max(1, shown.length);
  const bars = shown.map((c, i) => {
    const h = ((H - 2 * pad) * c) / max;
    return `<rect class="bar" x="${r1(pad + i * w)}" y="${r1(H - pad - h)}" width="${r1(Math.max(1, w - 1))}" height="${r1(h)}" fill="#72b7b2"><title>${fmtNum(edges[i])}–${fmtNum(edges[i + 1])}: ${c}</title></rect>`;
  });
  const axis = `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#999"/><text x="${pad}" y="${H - 3}" font-size="9">${fmtNum(edges[0])}</text><text x="${W - pad}" y="${H - 3}" font-size="9" text-anchor="end">${fmtNum(edges[last + 1])}</text><text x="${pad}" y="10" font-size="9">max ${max}</text>`;
  return svg(W, H, label, bars.join('') + axis);
}

export function fmtNum(v: number | null | undefined): string {
  if (!num(v)) return '–';
  const a = Math.abs(v);
  return Number.isInteger(v) ? String(v) : a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toFixed(3);
}

/** One horizontal bar per name (|value|, signed colour) with a tick at its chance level. */
export function barsVsControlSvg(rows: readonly { name: string; value: number | null; control: number | null }[], label: string, legend = '|r| (faded: within chance; tick: shuffled control)'): string {
  const W = 320, row = 15, left = 92, top = 4;
  const H = top + row * rows.length + 14;
  const max = Math.max(1e-9, ...rows.flatMap((r) => [Math.abs(r.value ?? 0), r.control ?? 0]));
  const scale = (v: number) => ((W - left - 40) * v) / max;
  const body = rows.map((r, i) => {
    const y = top + i * row;
    const v = r.value ?? 0;
    // Without a chance level there is nothing to fade against.
    const beats = r.control === null || Math.abs(v) > r.control;
    const tick = num(r.control) ? `<line class="control" x1="${r1(left + scale(r.control))}" x2="${r1(left + scale(r.control))}" y1="${y}" y2="${y + row - 3}" stroke="#222" stroke-width="1.5"/>` : '';
    return `<text x="${left - 4}" y="${y + 10}" font-size="10" text-anchor="end">${esc(r.name.length > 15 ? `${r.name.slice(0, 14)}…` : r.name)}</text>` +
      `<rect class="bar" x="${left}" y="${y + 1}" width="${r1(scale(Math.abs(v)))}" height="${row - 5}" fill="${v >= 0 ? '#4c78a8' : '#e45756'}" opacity="${beats ? 1 : 0.35}"><title>${esc(r.name)}: ${fmtNum(r.value)} (chance ${fmtNum(r.control)})</title></rect>` +
      tick + `<text x="${r1(left + scale(Math.abs(v)) + 3)}" y="${y + 10}" font-size="9">${fmtNum(r.value)}</text>`;
  });
  return svg(W, H, label, body.join('') + `<text x="${left}" y="${H - 3}" font-size="9" fill="#555">${esc(legend)}</text>`);
}

/** A line over positions, with an optional marked position (the example's). */
export function sparklineSvg(values: readonly (number | null)[], label: string, opts: { mark?: number; width?: number; height?: number; color?: string } = {}): string {
  const W = opts.width ?? 260, H = opts.height ?? 44, pad = 3;
  const finite = values.filter(num);
  if (finite.length === 0) return svg(W, H, label, `<text x="4" y="${H / 2}" font-size="9">no values</text>`);
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const x = (i: number) => r1(pad + ((W - 2 * pad) * i) / Math.max(1, values.length - 1));
  const y = (v: number) => r1(H - pad - ((H - 2 * pad) * (v - lo)) / (hi - lo || 1));
  let d = '';
  values.forEach((v, i) => {
    if (num(v)) d += `${d === '' || !num(values[i - 1]) ? 'M' : 'L'}${x(i)},${y(v)}`;
  });
  const mark = opts.mark !== undefined && opts.mark >= 0 && opts.mark < values.length ? `<line x1="${x(opts.mark)}" x2="${x(opts.mark)}" y1="0" y2="${H}" stroke="#e45756" stroke-dasharray="2,2"/>` : '';
  return svg(W, H, label, `${mark}<path class="line" d="${d}" fill="none" stroke="${opts.color ?? '#4c78a8'}" stroke-width="1.4"/>`);
}

/** A flat input (one row of many values) wraps into lines of this many values, in reading order. */
const WRAP = 128;

/**
 * The input window as a heatmap: positions across, input channels down (a spike raster for the
 * demo). A flat input is one long row: it is drawn wrapped, line after line, instead.
 */
export function rasterSvg(rows: readonly (readonly (number | null)[])[], label: string, opts: { mark?: number } = {}): string {
  if (rows.length === 1 && rows[0]!.length > WRAP) {
    const flat = rows[0]!;
    const lines: (number | null)[][] = [];
    for (let i = 0; i < flat.length; i += WRAP) lines.push(flat.slice(i, i + WRAP));
    // Transposed so that each wrapped line is one row of the picture (the heatmap draws rows down).
    const T = WRAP;
    return rasterSvg(Array.from({ length: T }, (_, t) => lines.map((l) => l[t] ?? null)), `${label} (a flat input, wrapped every ${WRAP} values)`);
  }
  const T = rows.length;
  const C = Math.max(0, ...rows.map((r) => r.length));
  const W = 260;
  const cw = (W - 2) / Math.max(1, T);
  const ch = Math.max(1, Math.min(6, 120 / Math.max(1, C)));
  const H = Math.ceil(ch * C) + 2;
  let max = 0;
  for (const r of rows) for (const v of r) if (num(v)) max = Math.max(max, Math.abs(v));
  const cells: string[] = [];
  rows.forEach((r, t) => r.forEach((v, c) => {
    if (!num(v) || v === 0) return;
    const a = Math.min(1, Math.abs(v) / (max || 1));
    cells.push(`<rect x="${r1(1 + t * cw)}" y="${r1(1 + c * ch)}" width="${r1(Math.max(0.5, cw))}" height="${r1(ch)}" fill="${v > 0 ? '#2f3e4e' : '#e45756'}" fill-opacity="${a.toFixed(2)}"/>`);
  }));
  const mark = opts.mark !== undefined && opts.mark >= 0 && opts.mark < T ? `<rect x="${r1(1 + opts.mark * cw)}" y="0" width="${r1(Math.max(1, cw))}" height="${H}" fill="none" stroke="#e45756"/>` : '';
  return svg(W, H, label, `<rect class="raster" x="0" y="0" width="${W}" height="${H}" fill="#fafafa" stroke="#ddd"/>${cells.join('')}${mark}`);
}
