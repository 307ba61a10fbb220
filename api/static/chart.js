// Time charts as SVG built here (no chart library to vendor): step lines for prices, shaded bands
// for competitor ranges and forecast intervals, bars for sales; one time axis, a left axis for
// money and an optional right one for units.
const NS = "http://www.w3.org/2000/svg";
const W = 800, H = 260, PAD = { l: 52, r: 48, t: 12, b: 26 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function extent(values, fallback) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return fallback;
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

// series: {kind: "step"|"line"|"band"|"bars", axis: "left"|"right", color, label,
//          points: [{t: Date, y}] or, for bands, [{t, lo, hi}]}
export function timeChart(series, { title = "", now = null } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  const all = series.flatMap((s) => s.points);
  if (!all.length) return svg;
  const [t0, t1] = extent(all.map((p) => +p.t), [0, 1]);
  const yOf = (axis) => extent(series.filter((s) => s.axis === axis).flatMap((s) =>
    s.points.flatMap((p) => s.kind === "band" ? [p.lo, p.hi] : [p.y]).concat(s.kind === "bars" ? [0] : [])), [0, 1]);
  const ranges = { left: yOf("left"), right: yOf("right") };
  const x = (t) => PAD.l + ((+t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v, axis) => { const [lo, hi] = ranges[axis]; return H - PAD.b - ((v - lo) / (hi - lo)) * (H - PAD.t - PAD.b); };
  axes(svg, ranges, t0, t1, x, y, series.some((s) => s.axis === "right" && s.points.length));
  for (const s of series) svg.append(draw(s, x, y, t1));
  if (now) svg.append(el("line", { x1: x(now), x2: x(now), y1: PAD.t, y2: H - PAD.b, stroke: "#999", "stroke-dasharray": "3 3" }));
  return svg;
}

function axes(svg, ranges, t0, t1, x, y, right) {
  for (let i = 0; i <= 4; i++) {
    const [lo, hi] = ranges.left, v = lo + ((hi - lo) * i) / 4;
    svg.append(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v, "left"), y2: y(v, "left"), stroke: "#eee" }));
    svg.append(el("text", { x: PAD.l - 4, y: y(v, "left") + 4, "text-anchor": "end" }, v.toFixed(2)));
    if (right) {
      const [rlo, rhi] = ranges.right, rv = rlo + ((rhi - rlo) * i) / 4;
      svg.append(el("text", { x: W - PAD.r + 4, y: y(rv, "right") + 4 }, Math.round(rv)));
    }
  }
  const short = t1 - t0 < 2 * 864e5;  // within two days: times, not dates
  for (let i = 0; i <= 4; i++) {
    const t = new Date(t0 + ((t1 - t0) * i) / 4);
    const label = short ? t.toTimeString().slice(0, 5) : t.toISOString().slice(0, 10);
    svg.append(el("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, label));
  }
}

function draw(s, x, y, tEnd) {
  const pts = [...s.points].sort((a, b) => a.t - b.t);
  if (s.kind === "band") {
    const top = pts.map((p) => `${x(p.t)},${y(p.hi, s.axis)}`);
    const bottom = pts.map((p) => `${x(p.t)},${y(p.lo, s.axis)}`).reverse();
    return el("polygon", { points: top.concat(bottom).join(" "), fill: s.color, "fill-opacity": 0.25, stroke: "none" });
  }
  if (s.kind === "bars") {
    const g = el("g");
    const width = Math.max(2, (W - PAD.l - PAD.r) / Math.max(pts.length, 1) * 0.6);
    for (const p of pts) {
      const top = y(Math.max(p.y, 0), s.axis), base = y(0, s.axis);
      g.append(el("rect", { x: x(p.t) - width / 2, y: top, width, height: Math.max(0, base - top), fill: s.color, "fill-opacity": 0.5 }));
    }
    return g;
  }
  let d = "";
  pts.forEach((p, i) => {
    const px = x(p.t), py = y(p.y, s.axis);
    if (i === 0) d += `M${px},${py}`;
    else d += s.kind === "step" ? `H${px}V${py}` : `L${px},${py}`;
  });
  if (s.kind === "step" && pts.length) d += `H${x(tEnd)}`;
  return el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2 });
}

export function legend(series) {
  const div = document.createElement("div");
  div.className = "legend";
  for (const s of series) {
    const span = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = s.color;
    span.append(i, s.label);
    div.append(span);
  }
  return div;
}
