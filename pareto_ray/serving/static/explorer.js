"use strict";
// The front explorer: plain DOM and SVG, no library. The API token lives in `token` only (never a URL or storage).
(() => {
  const BASE = location.pathname.replace(/\/explorer\/?$/, "");
  const SVG = "http://www.w3.org/2000/svg";
  const DEBOUNCE_MS = 150;
  let token = null;
  const S = { card: null, rows: [], T: 0, lambda: [], sample: 0, inflight: false, pending: false, timer: null,
              syncControl: null, marker: null, predictions: 0 };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, parent = null, text = null) {
    const svg = ["svg", "g", "circle", "line", "path", "polyline", "polygon", "text", "rect", "title"].includes(tag);
    const node = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  const fmt = (v, d = 4) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "—");
  const fmtLambda = (l) => "(" + l.map((v) => v.toFixed(3)).join(", ") + ")";
  const setStatus = (text) => { $("status").textContent = text; };

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.error ? `${body.error.field}: ${body.error.message}` : `HTTP ${status}`);
      this.status = status; this.body = body;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const r = await fetch(BASE + path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401) { showAuth("The server refused the token."); }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ------------------------------------------------------------------ auth
  function showAuth(message) {
    $("main").hidden = true;
    $("auth").hidden = false;
    $("auth-message").textContent = token ? message : "";
    setStatus("locked: an API token is required");
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim() || null;
    $("token").value = "";
    start();
  });

  // ------------------------------------------------------------------ start
  async function start() {
    let card;
    try {
      card = await api("GET", "/v1/explorer/card");
    } catch (e) {
      if (e.status !== 401) setStatus("error: " + e.message);
      return;
    }
    $("auth").hidden = true;
    S.card = card; S.T = card.tasks.length;
    try {
      S.rows = (await api("GET", "/v1/front")).rows;
    } catch (e) {
      S.rows = [];
      $("front-caption").textContent = "(" + e.message + ")";
    }
    $("main").hidden = false;
    renderCard();
    renderFront();
    renderControl();
    renderTargets();
    renderSamples();
    setStatus(`${card.method} · ${card.dataset} · ${S.rows.length} evaluated rays`);
    setLambda(Array(S.T).fill(1 / S.T), null);
  }

  // ------------------------------------------------------------------ model card
  function renderCard() {
    const c = S.card, dl = $("card-list");
    dl.replaceChildren();
    const add = (k, v) => { el("dt", {}, dl, k); return el("dd", {}, dl, v === null || v === undefined ? "—" : String(v)); };
    add("method", c.method);
    add("backbone", c.backbone);
    add("dataset", c.dataset);
    add("tasks", c.tasks.length);
    add("epoch", c.epoch);
    const run = add("MLflow run", c.run_id);
    run.id = "card-run";
    if (c.run_id && c.tracking_uri) {
      run.textContent = c.run_id + " on ";
      el("a", { href: c.tracking_uri, rel: "noreferrer" }, run, c.tracking_uri);
    }
    add("test HV", fmt(c.test_hv)).id = "card-test-hv";
    add("val HV", fmt(c.val_hv));
    add("version", c.version);
    add("source", c.source);
    const table = $("task-table");
    table.replaceChildren();
    const head = el("tr", {}, table);
    for (const h of ["#", "task", "kind", "front metric"]) el("th", {}, head, h);
    c.tasks.forEach((t, i) => {
      const tr = el("tr", { class: "task-row" }, table);
      el("td", {}, tr, String(i + 1)); el("td", {}, tr, t.name); el("td", {}, tr, t.kind);
      el("td", {}, tr, `${t.metric} ${t.higher_is_better ? "↑ higher is better" : "↓ lower is better"}`);
    });
  }

  // ------------------------------------------------------------------ front data
  const metricName = (t) => S.card.tasks[t].metric;
  function metric(row, t) {
    const v = row[`${metricName(t)}_${t + 1}`];
    return v === undefined ? row[`acc_${t + 1}`] : v;
  }
  const rayOf = (row) => Array.from({ length: S.T }, (_, t) => row[`ray_${t + 1}`]);
  const taskLabel = (t) => `${S.card.tasks[t].name} ${metricName(t)} ${S.card.tasks[t].higher_is_better ? "↑" : "↓"}`;

  function color(lam) {
    if (lam.length === 2) { // blue (task 2) → red (task 1)
      const a = lam[0];
      return `rgb(${Math.round(40 + 190 * a)},${Math.round(90 + 40 * (1 - Math.abs(2 * a - 1)))},${Math.round(230 - 190 * a)})`;
    }
    if (lam.length === 3) return `rgb(${lam.map((v) => Math.round(40 + 200 * v)).join(",")})`;
    let x = 0, y = 0;
    lam.forEach((v, t) => { const a = (2 * Math.PI * t) / lam.length; x += v * Math.cos(a); y += v * Math.sin(a); });
    const hue = ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360;
    return `hsl(${hue.toFixed(0)},${Math.min(90, 30 + 200 * Math.hypot(x, y)).toFixed(0)}%,45%)`;
  }

  /** The metrics expected at λ: linear between neighbouring rays (2 tasks), inverse-distance weighted beyond. */
  function interpolate(lam) {
    if (!S.rows.length) return null;
    const T = S.T;
    if (T === 2) {
      const rows = [...S.rows].sort((a, b) => a.ray_1 - b.ray_1);
      const x = Math.min(Math.max(lam[0], rows[0].ray_1), rows[rows.length - 1].ray_1);
      let i = 0;
      while (i < rows.length - 2 && rows[i + 1].ray_1 < x) i++;
      const a = rows[i], b = rows[Math.min(i + 1, rows.length - 1)];
      const w = b.ray_1 > a.ray_1 ? (x - a.ray_1) / (b.ray_1 - a.ray_1) : 0;
      return [0, 1].map((t) => metric(a, t) * (1 - w) + metric(b, t) * w);
    }
    let wsum = 0;
    const out = Array(T).fill(0);
    for (const row of S.rows) {
      const r = rayOf(row);
      const d2 = r.reduce((s, v, t) => s + (v - lam[t]) ** 2, 0);
      if (d2 < 1e-12) return Array.from({ length: T }, (_, t) => metric(row, t));
      const w = 1 / d2;
      wsum += w;
      for (let t = 0; t < T; t++) out[t] += w * metric(row, t);
    }
    return out.map((v) => v / wsum);
  }

  // ------------------------------------------------------------------ tooltip
  function tooltip(ev, row) {
    const tip = $("tooltip");
    tip.replaceChildren();
    el("div", { class: "mono" }, tip, "λ = " + fmtLambda(rayOf(row)));
    for (let t = 0; t < S.T; t++) {
      const extra = Object.keys(row).filter((k) => k.endsWith(`_${t + 1}`) && !k.startsWith("ray_"))
        .map((k) => `${k.slice(0, -(`_${t + 1}`).length)} ${fmt(row[k])}`).join(", ");
      el("div", {}, tip, `${S.card.tasks[t].name}: ${extra}`);
    }
    tip.hidden = false;
    tip.style.left = ev.clientX + 14 + "px";
    tip.style.top = ev.clientY + 10 + "px";
  }
  const hideTooltip = () => { $("tooltip").hidden = true; };

  function hoverable(node, row) {
    node.addEventListener("mousemove", (ev) => tooltip(ev, row));
    node.addEventListener("mouseleave", hideTooltip);
    node.addEventListener("click", () => setLambda(rayOf(row), null));
  }

  // ------------------------------------------------------------------ front plots
  function extent(values) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!(hi > lo)) { lo -= 0.01; hi += 0.01; }
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }
  const ticks = (lo, hi, n = 5) => Array.from({ length: n }, (_, i) => lo + ((hi - lo) * (i + 0.5)) / n);

  function renderFront() {
    const box = $("front-plot");
    box.replaceChildren();
    S.marker = null;
    if (!S.rows.length) return;
    $("front-caption").textContent = `(validation split, ${S.rows.length} rays, coloured by λ; click a point to use its λ)`;
    if (S.T === 2) scatter(box); else parallel(box);
  }

  function scatter(box) {
    const W = 520, H = 380, m = { l: 58, r: 16, t: 12, b: 44 };
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", id: "front-svg", role: "img" }, box);
    const xs = S.rows.map((r) => metric(r, 0)), ys = S.rows.map((r) => metric(r, 1));
    const [x0, x1] = extent(xs), [y0, y1] = extent(ys);
    const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (const v of ticks(x0, x1)) {
      el("line", { x1: X(v), x2: X(v), y1: m.t, y2: H - m.b, class: "grid" }, svg);
      el("text", { x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, svg, v.toFixed(3));
    }
    for (const v of ticks(y0, y1)) {
      el("line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: "grid" }, svg);
      el("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, svg, v.toFixed(3));
    }
    el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }, svg);
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }, svg);
    el("text", { x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle" }, svg, taskLabel(0));
    el("text", { x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` },
       svg, taskLabel(1));
    const sorted = [...S.rows].sort((a, b) => a.ray_1 - b.ray_1);
    el("polyline", { points: sorted.map((r) => `${X(metric(r, 0))},${Y(metric(r, 1))}`).join(" "), fill: "none",
                     stroke: "#c9ced6", "stroke-width": 1 }, svg);
    S.rows.forEach((row, i) => {
      const c = el("circle", { cx: X(metric(row, 0)), cy: Y(metric(row, 1)), r: 6, fill: color(rayOf(row)),
                               class: "front-point", "data-index": i }, svg);
      hoverable(c, row);
    });
    const marker = el("circle", { r: 9, class: "operating-point", id: "operating-marker" }, svg);
    S.marker = (values) => { marker.setAttribute("cx", X(values[0])); marker.setAttribute("cy", Y(values[1])); };
  }

  function parallel(box) {
    const T = S.T, W = 520, H = 320, m = { l: 40, r: 40, t: 22, b: 34 };
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", id: "front-svg", role: "img" }, box);
    const ranges = Array.from({ length: T }, (_, t) => extent(S.rows.map((r) => metric(r, t))));
    const X = (t) => m.l + (t * (W - m.l - m.r)) / (T - 1);
    const Y = (t, v) => H - m.b - ((v - ranges[t][0]) / (ranges[t][1] - ranges[t][0])) * (H - m.t - m.b);
    for (let t = 0; t < T; t++) {
      el("line", { x1: X(t), x2: X(t), y1: m.t, y2: H - m.b, class: "axis" }, svg);
      el("text", { x: X(t), y: H - m.b + 16, "text-anchor": "middle" }, svg, `${S.card.tasks[t].name}`);
      el("text", { x: X(t), y: H - m.b + 28, "text-anchor": "middle" }, svg, `${metricName(t)} ${S.card.tasks[t].higher_is_better ? "↑" : "↓"}`);
      el("text", { x: X(t), y: m.t - 6, "text-anchor": "middle" }, svg, ranges[t][1].toFixed(3));
    }
    const line = (vals) => vals.map((v, t) => `${X(t)},${Y(t, v)}`).join(" ");
    S.rows.forEach((row, i) => {
      const p = el("polyline", { points: line(Array.from({ length: T }, (_, t) => metric(row, t))), fill: "none",
                                 stroke: color(rayOf(row)), "stroke-width": 2, "stroke-opacity": 0.7,
                                 class: "front-point", "data-index": i }, svg);
      hoverable(p, row);
    });
    const marker = el("polyline", { class: "operating-point", id: "operating-marker", "stroke-dasharray": "6 3" }, svg);
    S.marker = (values) => marker.setAttribute("points", line(values));
  }

  // ------------------------------------------------------------------ λ controls
  function renderControl() {
    const box = $("lambda-control");
    box.replaceChildren();
    if (S.T === 2) {
      const row = el("div", { class: "lambda-row" }, box);
      el("span", {}, row, S.card.tasks[1].name);
      const slider = el("input", { type: "range", min: 0, max: 1, step: 0.01, id: "lambda-slider",
                                   "aria-label": `λ for ${S.card.tasks[0].name}` }, row);
      el("span", {}, row, S.card.tasks[0].name);
      slider.addEventListener("input", () => { const a = Number(slider.value); setLambda([a, 1 - a], "control"); });
      S.syncControl = (lam) => { slider.value = String(lam[0]); };
    } else if (S.T === 3) {
      triangle(box);
    } else {
      sliders(box);
    }
  }

  function triangle(box) {
    const W = 360, H = 320, A = [W / 2, 24], B = [30, H - 30], C = [W - 30, H - 30];
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", id: "lambda-triangle" }, box);
    el("polygon", { points: [A, B, C].map((p) => p.join(",")).join(" "), fill: "#f2f4f7", stroke: "#98a2b3" }, svg);
    el("text", { x: A[0], y: A[1] - 8, "text-anchor": "middle" }, svg, S.card.tasks[0].name);
    el("text", { x: B[0], y: B[1] + 18, "text-anchor": "middle" }, svg, S.card.tasks[1].name);
    el("text", { x: C[0], y: C[1] + 18, "text-anchor": "middle" }, svg, S.card.tasks[2].name);
    const at = (l) => [0, 1].map((k) => l[0] * A[k] + l[1] * B[k] + l[2] * C[k]);
    S.rows.forEach((row, i) => {
      const [x, y] = at(rayOf(row));
      hoverable(el("circle", { cx: x, cy: y, r: 5, fill: color(rayOf(row)), class: "front-point tri-point", "data-index": i }, svg), row);
    });
    const handle = el("circle", { r: 9, class: "handle", id: "lambda-handle" }, svg);
    const fromPointer = (ev) => {
      const pt = svg.createSVGPoint();
      pt.x = ev.clientX; pt.y = ev.clientY;
      const p = pt.matrixTransform(svg.getScreenCTM().inverse());
      const det = (B[1] - C[1]) * (A[0] - C[0]) + (C[0] - B[0]) * (A[1] - C[1]);
      let l1 = ((B[1] - C[1]) * (p.x - C[0]) + (C[0] - B[0]) * (p.y - C[1])) / det;
      let l2 = ((C[1] - A[1]) * (p.x - C[0]) + (A[0] - C[0]) * (p.y - C[1])) / det;
      let l3 = 1 - l1 - l2;
      [l1, l2, l3] = [l1, l2, l3].map((v) => Math.max(0, v));
      const s = l1 + l2 + l3;
      setLambda([l1 / s, l2 / s, l3 / s], null);
    };
    let dragging = false;
    svg.addEventListener("pointerdown", (ev) => { dragging = true; svg.setPointerCapture(ev.pointerId); fromPointer(ev); });
    svg.addEventListener("pointermove", (ev) => { if (dragging) fromPointer(ev); });
    svg.addEventListener("pointerup", () => { dragging = false; });
    S.syncControl = (lam) => { const [x, y] = at(lam); handle.setAttribute("cx", x); handle.setAttribute("cy", y); };
  }

  function sliders(box) {
    const inputs = S.card.tasks.map((t, i) => {
      const row = el("div", { class: "lambda-row" }, box);
      el("span", {}, row, t.name);
      const s = el("input", { type: "range", min: 0, max: 1, step: 0.01, class: "task-slider", "data-task": i,
                              "aria-label": `weight of ${t.name}` }, row);
      const shown = el("span", { class: "mono" }, row, "");
      s.addEventListener("input", () => {
        const w = inputs.map((x) => Number(x.slider.value));
        const sum = w.reduce((a, b) => a + b, 0);
        setLambda(sum > 0 ? w.map((v) => v / sum) : w.map(() => 1 / w.length), "control");
      });
      return { slider: s, shown };
    });
    S.syncControl = (lam, source) => inputs.forEach((x, t) => {
      if (source !== "control") x.slider.value = String(lam[t]);
      x.shown.textContent = lam[t].toFixed(3);
    });
  }

  /** λ on the simplex, rounded to 6 decimals, the last entry taking the rounding. */
  function normalize(lam) {
    const r = lam.map((v) => Math.round(Math.max(0, v) * 1e6) / 1e6);
    const last = Math.round((1 - r.slice(0, -1).reduce((a, b) => a + b, 0)) * 1e6) / 1e6;
    r[r.length - 1] = Math.max(0, last);
    return r;
  }

  function setLambda(lam, source) {
    S.lambda = normalize(lam);
    const shown = $("lambda-value");
    shown.textContent = fmtLambda(S.lambda);
    shown.dataset.lambda = JSON.stringify(S.lambda);
    if (S.syncControl && (source !== "control" || S.T > 3)) S.syncControl(S.lambda, source);
    const expected = interpolate(S.lambda);
    if (expected) {
      if (S.marker) S.marker(expected);
      $("operating-point").textContent = "expected on the front: " +
        expected.map((v, t) => `${S.card.tasks[t].name} ${metricName(t)} ${fmt(v)}`).join(", ") +
        (S.T > 2 ? " (≈, nearest rays)" : "");
    }
    schedulePredict();
  }

  // ------------------------------------------------------------------ targets
  function renderTargets() {
    const table = $("target-table");
    table.replaceChildren();
    const head = el("tr", {}, table);
    for (const h of ["task", "at least", "at most"]) el("th", {}, head, h);
    S.card.tasks.forEach((t, i) => {
      const tr = el("tr", {}, table);
      el("td", {}, tr, `${t.name} ${t.metric}`);
      el("input", { type: "number", step: "any", id: `target-min-${i + 1}`, "aria-label": `${t.name} at least` }, el("td", {}, tr));
      el("input", { type: "number", step: "any", id: `target-max-${i + 1}`, "aria-label": `${t.name} at most` }, el("td", {}, tr));
    });
  }

  $("target-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("select-message");
    const constraints = [];
    S.card.tasks.forEach((t, i) => {
      const c = { task: i + 1, metric: "acc" };
      const lo = $(`target-min-${i + 1}`).value, hi = $(`target-max-${i + 1}`).value;
      if (lo !== "") c.min = Number(lo);
      if (hi !== "") c.max = Number(hi);
      if (lo !== "" || hi !== "") constraints.push(c);
    });
    if (!constraints.length) { msg.className = ""; msg.textContent = "Enter at least one bound."; return; }
    const lowerBetter = S.card.tasks.findIndex((t) => !t.higher_is_better);
    const body = { constraints };
    if (lowerBetter >= 0) body.objective = { task: 1, metric: "acc", goal: S.card.tasks[0].higher_is_better ? "max" : "min" };
    msg.className = ""; msg.textContent = "…";
    try {
      const r = await api("POST", "/v1/select", body);
      msg.dataset.feasible = String(r.feasible);
      msg.dataset.preference = JSON.stringify(r.preference);
      if (r.feasible) {
        msg.className = "feasible";
        msg.textContent = `${r.message}. λ = ${fmtLambda(r.preference)}${r.interpolated ? " (between evaluated rays)" : ""}`;
        setLambda(r.preference, "select");
      } else {
        msg.className = "infeasible";
        msg.textContent = `${r.message}. The closest is λ = ${fmtLambda(r.preference)}; λ was left as it was.`;
      }
    } catch (e) {
      msg.className = "infeasible"; msg.dataset.feasible = ""; msg.textContent = "error: " + e.message;
    }
  });

  // ------------------------------------------------------------------ try it
  function thumbnail(x) {
    const shape = S.card.input_shape;
    if (shape.length !== 3 || ![1, 3].includes(shape[0])) {
      return el("span", { class: "mono" }, null, JSON.stringify(x).slice(0, 40));
    }
    const [C, H, W] = shape, flat = x.flat(2);
    const lo = Math.min(...flat), hi = Math.max(...flat), k = 255 / (hi - lo || 1);
    const canvas = el("canvas", { width: W, height: H, style: `width:${Math.max(W, 48)}px;height:${Math.max(H, 48)}px` });
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H);
    for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
      const o = 4 * (i * W + j);
      for (let c = 0; c < 3; c++) img.data[o + c] = (x[C === 3 ? c : 0][i][j] - lo) * k;
      img.data[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return canvas;
  }

  function renderSamples() {
    const box = $("samples");
    box.replaceChildren();
    const samples = S.card.samples;
    $("samples-caption").textContent = samples.length ? `(${samples.length} samples of the ${S.card.samples_split} split)` :
      "(this checkpoint stores no samples)";
    samples.forEach((s, i) => {
      const b = el("button", { type: "button", class: "sample" + (i === S.sample ? " selected" : ""), "data-index": i,
                               title: `sample ${i + 1}` }, box);
      b.appendChild(thumbnail(s.inputs));
      b.addEventListener("click", () => {
        S.sample = i;
        box.querySelectorAll(".sample").forEach((n, j) => n.classList.toggle("selected", j === i));
        schedulePredict();
      });
    });
  }

  function schedulePredict() {
    if (!S.card || !S.card.samples.length) return;
    clearTimeout(S.timer);
    S.timer = setTimeout(runPredict, DEBOUNCE_MS);
  }

  async function runPredict() {
    if (S.inflight) { S.pending = true; return; } // one request in flight; the latest λ goes next
    S.inflight = true;
    const sample = S.sample, lam = S.lambda.slice();
    try {
      const r = await api("POST", "/v1/predict", { preference: lam, inputs: [S.card.samples[sample].inputs] });
      renderPredictions(r, sample);
    } catch (e) {
      $("predictions").textContent = "error: " + e.message;
    } finally {
      S.inflight = false;
      if (S.pending) { S.pending = false; runPredict(); }
    }
  }

  function renderPredictions(r, sample) {
    const box = $("predictions");
    box.replaceChildren();
    const target = S.card.samples[sample].target;
    el("p", { class: "mono" }, box, `sample ${sample + 1} at λ = ${fmtLambda(r.preference)}`);
    const table = el("table", {}, box);
    const head = el("tr", {}, table);
    for (const h of ["task", "predicted", "probability", "true"]) el("th", {}, head, h);
    r.predictions.forEach((p, t) => {
      const task = S.card.tasks[t] || { name: `task ${t + 1}` };
      const tr = el("tr", { class: "prediction" }, table);
      el("td", {}, tr, task.name);
      let cls = p.classes ? p.classes[0] : null, prob = p.probabilities ? Math.max(...p.probabilities[0]) : null;
      const name = (c) => (task.labels && task.labels[c] !== undefined ? `${task.labels[c]} (${c})` : String(c));
      el("td", { class: "predicted" }, tr, cls !== null ? name(cls) : JSON.stringify(p).slice(0, 60));
      el("td", {}, tr, prob !== null ? fmt(prob, 3) : "—");
      const y = target ? target[t] : undefined; // a negative class is a missing label (e.g. CIFAR-100's other superclasses)
      el("td", {}, tr, y === undefined || y === null || (Number.isInteger(y) && y < 0) ? "—" : Number.isInteger(y) ? name(y) : fmt(y));
    });
    S.predictions += 1;
    box.dataset.count = String(S.predictions);
    box.dataset.sample = String(sample);
    box.dataset.preference = JSON.stringify(r.preference);
    box.dataset.probabilities = JSON.stringify(r.predictions.map((p) => (p.probabilities ? p.probabilities[0] : null)));
  }

  start();
})();
