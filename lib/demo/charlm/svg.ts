// A hand-written SVG line plot: validation loss (solid) and train loss (faint) against tokens
// seen, one color per optimizer, with axes, ticks and a legend.

export interface Series {
  label: string;
  /** [x, y] points of the validation curve. */
  val: [number, number][];
  /** [x, y] points of the train curve (drawn faint). */
  train?: [number, number][];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function fmtTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e3) return `${Number((v / 1e3).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

export function lossPlotSvg(series: Series[], o: { title: string; xLabel: string; yLabel: string; width?: number; height?: number }): string {
  const W = o.width ?? 940, H = o.height ?? 520;
  const m = { left: 70, right: 320, top: 40, bottom: 55 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const pts = series.flatMap((s) => [...s.val, ...(s.train ?? [])]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = 0, x1 = xs.length ? Math.max(...xs) : 1;
  // The y range of the curves after their first point (the start is the same for all and far
  // above the rest, so it is clipped at the top).
  const tail = (p: [number, number][] | undefined) => (p ?? []).slice(p && p.length > 2 ? 1 : 0).map((q) => q[1]);
  const yv = series.flatMap((s) => [...tail(s.val), ...tail(s.train)]).filter(Number.isFinite);
  const yAll = yv.length ? yv : ys.length ? ys : [0, 1];
  let y0 = Math.min(...yAll), y1 = Math.max(...yAll);
  const pad = (y1 - y0) * 0.08 || 0.1;
  y0 -= pad; y1 += pad;
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0 || 1)) * pw;
  const sy = (y: number) => m.top + (1 - (y - y0) / (y1 - y0)) * ph;
  const line = (p: [number, number][]) =>
    p.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      .map(([x, y]) => `${sx(x).toFixed(1)},${sy(Math.min(Math.max(y, y0), y1)).toFixed(1)}`).join(" ");
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  for (const t of niceTicks(y0, y1)) {
    const y = sy(t).toFixed(1);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${fmtTick(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1)) {
    const x = sx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 18}" text-anchor="middle">${fmtTick(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    if (s.train && s.train.length > 1)
      out.push(`<polyline points="${line(s.train)}" fill="none" stroke="${c}" stroke-opacity="0.3" stroke-width="1"/>`);
    out.push(`<polyline points="${line(s.val)}" fill="none" stroke="${c}" stroke-width="2"/>`);
    const ly = m.top + 10 + i * 20;
    out.push(`<line x1="${m.left + pw + 14}" y1="${ly}" x2="${m.left + pw + 40}" y2="${ly}" stroke="${c}" stroke-width="2"/>`);
    out.push(`<text x="${m.left + pw + 46}" y="${ly}" dominant-baseline="middle">${esc(s.label)}</text>`);
  });
  const ny = m.top + 10 + series.length * 20 + 10;
  out.push(`<text x="${m.left + pw + 14}" y="${ny}" fill="#666" font-size="11">solid: validation, faint: train</text>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
