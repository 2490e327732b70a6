// dp-dau-mau dashboard: draws the published series, the budget and the configuration from the
// public JSON routes. Plain JavaScript and hand-drawn SVG, no build step, no third-party code.
//
// Rules (gateway/dashboard.py has the server side):
// 1. Everything shown comes from /series, /budget and /config, fetched with the key the user gave
//    (URL fragment #key=... or the form; kept in sessionStorage, never sent anywhere else).
//    Nothing is computed here that a release does not already publish.
// 2. Erasure counts come from the admin-only /erasures/summary; without an admin key the panel
//    says why it is hidden.
// 3. Charts are SVG drawn at the container's width: one path per metric (a vertex per released
//    day, broken at refused or missing days), the 95% band, and a lane of ticks under the axis
//    for revised days and one for refused days, so they stay readable at years of days. A lane,
//    its label and its entry in the chart's legend are shown only when it has a tick: an empty
//    labelled lane reads as "none yet" when it means nothing at all.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const DAY_MS = 86400000;
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const state = { key: null, range: "all", series: { dau: [], mau: [] }, budget: null, config: null };
  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtEps = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));
  const dayNum = (iso) => Math.round(Date.parse(iso + "T00:00:00Z") / DAY_MS);
  const isoOf = (n) => new Date(n * DAY_MS).toISOString().slice(0, 10);
  const $ = (sel, root = document) => root.querySelector(sel);

  // -- key and fetching -------------------------------------------------------------------------

  function readKey() {
    const m = /(?:^#|&)key=([^&]*)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem("dpdau-key", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    state.key = sessionStorage.getItem("dpdau-key");
    $("#forget").hidden = !state.key;
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.key) headers["X-API-Key"] = state.key;
    const resp = await fetch(new URL("../" + path, location.href), { headers, cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const err = new Error((body && body.detail) || resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  async function fetchSeries(metric) {
    const points = [];
    let offset = 0;
    for (;;) {
      const page = await api(`series?metric=${metric}&offset=${offset}&limit=1000`);
      points.push(...page.points);
      offset += page.points.length;
      if (offset >= page.total || page.points.length === 0) return { window: page.window, points };
    }
  }

  // -- small SVG helpers ------------------------------------------------------------------------

  function el(name, attrs = {}, parent = null, text = null) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    if (hi <= lo) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || 10 * mag;
    const ticks = [];
    const last = Math.ceil(hi / step - 1e-9) * step; // the top tick covers the highest value
    for (let t = Math.floor(lo / step) * step; t <= last + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  function compact(n) {
    const a = Math.abs(n);
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1).replace(/\.0$/, "") + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
    if (a >= 1e3) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(n);
  }

  function dateTicks(first, last) {
    const span = last - first;
    const ticks = [];
    const start = new Date(first * DAY_MS);
    let y = start.getUTCFullYear();
    let m = start.getUTCMonth();
    const monthStep = span > 540 ? 3 : span > 120 ? 1 : 0;
    if (monthStep === 0) {
      for (let d = first; d <= last; d++) {
        const date = new Date(d * DAY_MS);
        if (date.getUTCDate() === 1 || date.getUTCDate() === 15) {
          ticks.push({ day: d, label: `${MONTHS[date.getUTCMonth()]} ${date.getUTCDate()}` });
        }
      }
      return ticks;
    }
    m = Math.floor(m / monthStep) * monthStep;
    for (;;) {
      const d = Math.round(Date.UTC(y, m, 1) / DAY_MS);
      if (d > last) break;
      if (d >= first) ticks.push({ day: d, label: m === 0 ? `${MONTHS[m]} ${y}` : MONTHS[m] });
      m += monthStep;
      if (m >= 12) {
        m -= 12;
        y += 1;
      }
    }
    if (ticks.length && !/\d{4}/.test(ticks[0].label)) ticks[0].label += ` ${new Date(ticks[0].day * DAY_MS).getUTCFullYear()}`;
    return ticks;
  }

  // -- the series charts ------------------------------------------------------------------------

  function visible(points) {
    if (state.range === "all" || points.length === 0) return points;
    const last = dayNum(points[points.length - 1].day);
    const first = last - Number(state.range) + 1;
    return points.filter((p) => dayNum(p.day) >= first);
  }

  function drawSeries(metric) {
    const box = document.getElementById(`chart-${metric}`);
    box.textContent = "";
    const points = visible(state.series[metric].points || []);
    if (points.length === 0) {
      for (const li of box.closest("section").querySelectorAll("li[data-lane]")) li.hidden = true;
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "Nothing published yet: the first release appears once the first day has closed.";
      box.appendChild(p);
      return;
    }
    // the tick lanes under the axis, only those with a mark, stacked in this order
    const lanes = [
      { name: "revised", days: points.filter((p) => p.status !== "refused" && p.revision > 0) },
      { name: "refused", days: points.filter((p) => p.status === "refused") },
    ].filter((lane) => lane.days.length > 0);
    // the chart's legend names a lane only when it is drawn
    for (const li of box.closest("section").querySelectorAll("li[data-lane]")) {
      li.hidden = !lanes.some((lane) => lane.name === li.dataset.lane);
    }
    const W = Math.max(box.clientWidth, 480);
    const M = { left: 58, right: 14, top: 10, bottom: 26 + 12 * lanes.length };
    const plotH = 190;
    const H = M.top + plotH + M.bottom; // the SVG ends below the last lane drawn
    const days = points.map((p) => dayNum(p.day));
    const first = days[0];
    const last = days[days.length - 1];
    const released = points.filter((p) => p.status === "released");
    // the axis spans the intervals (not 0): a MAU of 1,200 +- 16 would otherwise be a flat line
    const lo = Math.min(...released.map((p) => p.lower_95));
    const hi = Math.max(...released.map((p) => p.upper_95));
    const yTicks = niceTicks(lo, Math.max(hi, lo + 1), 5);
    const y0 = yTicks[0];
    const y1 = yTicks[yTicks.length - 1];
    const x = (d) => M.left + (last === first ? (W - M.left - M.right) / 2 : ((d - first) / (last - first)) * (W - M.left - M.right));
    const y = (v) => M.top + plotH - ((v - y0) / (y1 - y0)) * plotH;

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metric.toUpperCase()} series` });
    for (const t of yTicks) {
      el("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }, svg);
      el("text", { x: M.left - 8, y: y(t) + 4, "text-anchor": "end" }, svg, compact(t));
    }
    const axisY = M.top + plotH;
    el("line", { class: "axisline", x1: M.left, x2: W - M.right, y1: axisY, y2: axisY }, svg);
    for (const t of dateTicks(first, last)) {
      el("line", { class: "axisline", x1: x(t.day), x2: x(t.day), y1: axisY, y2: axisY + 4 }, svg);
      el("text", { x: x(t.day), y: axisY + 15, "text-anchor": "middle" }, svg, t.label);
    }

    // segments of consecutive released days: a band and a line each
    const segments = [];
    let seg = [];
    points.forEach((p, i) => {
      const contiguous = seg.length && days[i] === dayNum(seg[seg.length - 1].day) + 1;
      if (p.status !== "released") {
        if (seg.length) segments.push(seg);
        seg = [];
        return;
      }
      if (seg.length && !contiguous) {
        segments.push(seg);
        seg = [];
      }
      seg.push(p);
    });
    if (seg.length) segments.push(seg);
    let bandD = "";
    let lineD = "";
    for (const s of segments) {
      const xs = s.map((p) => x(dayNum(p.day)).toFixed(2));
      if (s.length === 1) {
        const cx = Number(xs[0]);
        bandD += `M${(cx - 1.5).toFixed(2)},${y(s[0].upper_95).toFixed(2)}H${(cx + 1.5).toFixed(2)}V${y(s[0].lower_95).toFixed(2)}H${(cx - 1.5).toFixed(2)}Z`;
      } else {
        bandD += "M" + s.map((p, i) => `${xs[i]},${y(p.upper_95).toFixed(2)}`).join("L");
        bandD += "L" + s.map((p, i) => `${xs[i]},${y(p.lower_95).toFixed(2)}`).reverse().join("L") + "Z";
      }
      lineD += "M" + s.map((p, i) => `${xs[i]},${y(p.estimate).toFixed(2)}`).join("L");
    }
    el("path", { class: `band ${metric}`, d: bandD }, svg);
    el("path", { class: `line ${metric}`, d: lineD, "data-points": String(released.length) }, svg);

    // lanes: a tick per revised day and per refused day
    let laneBottom = axisY;
    lanes.forEach((lane, i) => {
      const ly = axisY + 24 + 12 * i;
      el("text", { class: "lane-label", x: M.left - 8, y: ly + 4, "text-anchor": "end" }, svg, lane.name);
      const g = el("g", { class: `lane ${lane.name}` }, svg);
      for (const p of lane.days) {
        const px = x(dayNum(p.day)).toFixed(2);
        el("line", { class: `mark-${lane.name}`, x1: px, x2: px, y1: ly - 5, y2: ly + 5, "data-day": p.day }, g);
      }
      laneBottom = ly + 6;
    });
    svg.setAttribute("data-points", String(released.length));
    svg.setAttribute("data-refused", String(points.length - released.length));
    box.appendChild(svg);
    hover(box, svg, points, days, x, y, metric, { top: M.top, bottom: laneBottom });
  }

  function hover(box, svg, points, days, x, y, metric, span) {
    const tip = $("#tip");
    const cross = el("line", { class: "crosshair", y1: span.top, y2: span.bottom, visibility: "hidden" }, svg);
    const dot = el("circle", { class: `hover-dot dot-${metric}`, r: 4, visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", (e) => {
      const rect = svg.getBoundingClientRect();
      const px = ((e.clientX - rect.left) / rect.width) * svg.viewBox.baseVal.width;
      let best = 0;
      for (let lo = 0, hi = points.length - 1; lo <= hi; ) {
        const mid = (lo + hi) >> 1;
        if (x(days[mid]) < px) lo = mid + 1;
        else hi = mid - 1;
        best = Math.min(Math.max(lo, 0), points.length - 1);
      }
      if (best > 0 && Math.abs(x(days[best - 1]) - px) < Math.abs(x(days[best]) - px)) best -= 1;
      const p = points[best];
      const cx = x(days[best]);
      cross.setAttribute("x1", cx);
      cross.setAttribute("x2", cx);
      cross.setAttribute("visibility", "visible");
      if (p.status === "released") {
        dot.setAttribute("cx", cx);
        dot.setAttribute("cy", y(p.estimate));
        dot.setAttribute("visibility", "visible");
      } else {
        dot.setAttribute("visibility", "hidden");
      }
      tip.innerHTML = "";
      const lines =
        p.status === "released"
          ? [
              [`${metric.toUpperCase()} ${p.day}`, true],
              [`${fmtInt(p.estimate)}  (95%: ${fmtInt(p.lower_95)} – ${fmtInt(p.upper_95)})`],
              [`${p.mechanism}, ε ${p.epsilon_used}${p.revision ? ` · revision ${p.revision}` : ""}`],
              [`released ${p.released_at.replace("T", " ").slice(0, 16)} UTC`],
            ]
          : [[`${metric.toUpperCase()} ${p.day}`, true], [`refused: ${p.refusal_reason.replace("_", " ")} (${p.accounting_period})`]];
      for (const [text, bold] of lines) {
        const div = document.createElement("div");
        if (bold) {
          const b = document.createElement("b");
          b.textContent = text;
          div.appendChild(b);
        } else div.textContent = text;
        tip.appendChild(div);
      }
      tip.hidden = false;
      const left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = `${left}px`;
      tip.style.top = `${e.clientY + 14}px`;
    });
    svg.addEventListener("mouseleave", () => {
      tip.hidden = true;
      cross.setAttribute("visibility", "hidden");
      dot.setAttribute("visibility", "hidden");
    });
  }

  // -- budget -----------------------------------------------------------------------------------

  function budgetRows() {
    const rows = [];
    for (const period of (state.budget && state.budget.periods) || []) {
      const bars = [];
      for (const [metric, m] of Object.entries(period.metrics || {})) {
        bars.push({ name: metric, spent: m.epsilon_spent, cap: m.epsilon_cap });
      }
      const c = period.combined;
      if (c && c.epsilon_cap !== undefined) bars.push({ name: "combined", spent: c.epsilon_spent, cap: c.epsilon_cap });
      rows.push({ period: period.accounting_period, bars });
    }
    return rows;
  }

  function drawBudget() {
    const box = $("#chart-budget");
    box.textContent = "";
    const rows = budgetRows();
    const legend = $("#budget-legend");
    legend.textContent = "";
    const names = [...new Set(rows.flatMap((r) => r.bars.map((b) => b.name)))];
    for (const n of names) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="sw bar-${n}"></span>`;
      li.append(n === "combined" ? "all metrics" : `${n.toUpperCase()} spent`);
      legend.appendChild(li);
    }
    const capLi = document.createElement("li");
    capLi.innerHTML = '<span class="sw cap"></span>';
    capLi.append("cap");
    legend.appendChild(capLi);
    if (!rows.length) return;
    const W = Math.max(box.clientWidth, 420);
    const H = 210;
    const M = { left: 40, right: 8, top: 10, bottom: 30 };
    const plotH = H - M.top - M.bottom;
    const top = Math.max(...rows.flatMap((r) => r.bars.flatMap((b) => [b.cap, b.spent])), 0.1);
    const ticks = niceTicks(0, top, 4);
    const yMax = ticks[ticks.length - 1];
    const y = (v) => M.top + plotH - (v / yMax) * plotH;
    const group = (W - M.left - M.right) / rows.length;
    const per = Math.max(names.length, 1);
    const barW = Math.max(2, Math.min(22, (group * 0.8) / per));
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "budget per accounting period" });
    for (const t of ticks) {
      el("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }, svg);
      el("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, svg, String(t));
    }
    const labelEvery = Math.ceil(rows.length / Math.max(1, Math.floor((W - M.left) / 64)));
    rows.forEach((r, i) => {
      const gx = M.left + i * group + (group - barW * per) / 2;
      r.bars.forEach((b) => {
        const bx = gx + names.indexOf(b.name) * barW;
        const g = el("g", { class: "budget-bar", "data-period": r.period, "data-metric": b.name, "data-spent": b.spent, "data-cap": b.cap }, svg);
        el("rect", { class: "bar-bg", x: bx + 0.5, y: y(b.cap), width: barW - 1, height: Math.max(0, y(0) - y(b.cap)) }, g);
        el("rect", { class: b.spent > b.cap ? "over" : `bar-${b.name}`, x: bx + 0.5, y: y(b.spent), width: barW - 1, height: Math.max(0, y(0) - y(b.spent)) }, g);
        el("line", { class: "cap", x1: bx, x2: bx + barW, y1: y(b.cap), y2: y(b.cap) }, g);
        el("title", {}, g, `${r.period} ${b.name}: ε ${fmtEps(b.spent)} of ${b.cap}`);
      });
      if (i % labelEvery === 0) el("text", { x: M.left + i * group + group / 2, y: H - 10, "text-anchor": "middle" }, svg, r.period);
    });
    el("line", { class: "axisline", x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }, svg);
    box.appendChild(svg);
  }

  // -- cards, config, erasures, tables ----------------------------------------------------------

  function fillCard(metric) {
    const card = document.getElementById(`card-${metric}`);
    const released = state.series[metric].points.filter((p) => p.status === "released");
    const p = released[released.length - 1];
    const set = (f, v) => ($(`[data-field="${f}"]`, card).textContent = v);
    if (!p) return;
    set("day", metric === "mau" ? `${state.series.mau.window} days to ${p.day}` : p.day);
    set("estimate", fmtInt(p.estimate));
    set("lower_95", fmtInt(p.lower_95));
    set("upper_95", fmtInt(p.upper_95));
    set("meta", `${p.mechanism} · ε ${p.epsilon_used} · δ ${p.delta}${p.revision ? ` · revision ${p.revision}` : ""} · version ${p.version}`);
  }

  function fillBudgetCard() {
    const card = $("#card-budget");
    const rows = budgetRows();
    const set = (f, v) => ($(`[data-field="${f}"]`, card).textContent = v);
    if (!rows.length) return;
    const latest = rows[rows.length - 1];
    const main = latest.bars.find((b) => b.name === "combined") || latest.bars[0];
    set("period", latest.period);
    set("spent", `ε ${fmtEps(main.spent)}`);
    set("cap", String(main.cap));
    set("detail", latest.bars.filter((b) => b !== main).map((b) => `${b.name.toUpperCase()} ${fmtEps(b.spent)} of ${b.cap}`).join(" · "));
  }

  function fillConfig() {
    const c = state.config;
    const dl = $("#config");
    dl.textContent = "";
    if (!c) return;
    const rows = [
      ["Schedule", c.release_schedule === "daily" ? `daily, from ${c.release_start || "first start"}` : "on request"],
      ["Revisions", c.revision_lags_days.length ? `at ${c.revision_lags_days.join(", ")} days` : "none"],
      ["DAU", `${c.dau_mechanism}, ε ${c.epsilon_dau} per release`],
      ["MAU", `${c.mau_mechanism}, ε ${c.epsilon_mau}, ${c.mau_window_days}-day window`],
      ["δ", String(c.delta)],
      ["Cap per period", `ε ${c.period_budget_total} over everything charged to it`],
      ["Sub-caps", `DAU ε ${c.dau_budget_total} · MAU ε ${c.mau_budget_total}`],
      ["Accounting period", c.privacy_period],
      ["Day closes", `midnight ${c.timezone}` + (c.lateness_hours ? ` + ${c.lateness_hours} h` : "")],
      ["Counting", c.sketch_impl === "set" ? "exact sets" : `theta sketch`],
      ["Version", `${c.version} (${c.version_of.replace("_", " ")})`],
    ];
    if (c.user_epsilon_limit !== null) rows.splice(7, 0, ["Lifetime limit", `ε ${c.user_epsilon_limit}`]);
    if ([c.dau_mechanism, c.mau_mechanism].some((m) => m === "sqrt" || m === "tree")) rows.splice(5, 0, ["Flip bound w", String(c.w_bound)]);
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.config = k;
      dl.append(dt, dd);
    }
    $("#mau-window").textContent = `(${c.mau_window_days}-day window)`;
  }

  async function loadErasures() {
    const body = $("#erasure-body");
    body.textContent = "";
    try {
      const counts = await api("erasures/summary");
      const total = Math.max(1, counts.pending + counts.applied + counts.purged);
      const grid = document.createElement("div");
      grid.className = "erasure-bars";
      for (const status of ["pending", "applied", "purged"]) {
        const label = document.createElement("span");
        label.textContent = status;
        const track = document.createElement("span");
        const bar = document.createElement("span");
        bar.className = `bar ${status}`;
        bar.style.width = `${(100 * counts[status]) / total}%`;
        bar.style.display = "block";
        track.appendChild(bar);
        const n = document.createElement("span");
        n.className = "n";
        n.dataset.status = status;
        n.textContent = fmtInt(counts[status]);
        grid.append(label, track, n);
      }
      body.appendChild(grid);
      const note = document.createElement("p");
      note.className = "hidden-note";
      note.textContent = "Admin view: exact counts of erasure receipts (not a release; do not publish).";
      body.appendChild(note);
    } catch (e) {
      const note = document.createElement("p");
      note.className = "hidden-note";
      note.id = "erasures-hidden";
      note.textContent =
        "Hidden. The number of erasure requests is an exact count, not protected by differential privacy, " +
        "so it is not a release: it is shown only with an admin key" + (e.status ? ` (this key: HTTP ${e.status}).` : ".");
      body.appendChild(note);
    }
  }

  function fillTable(metric) {
    const details = document.getElementById(`data-${metric}`);
    const points = state.series[metric].points;
    $('[data-field="count"]', details).textContent = String(points.length);
    const wrap = $(".tablewrap", details);
    wrap.textContent = "";
    const table = document.createElement("table");
    table.className = "data";
    const cols = ["day", "status", "estimate", "lower_95", "upper_95", "revision", "epsilon_used", "released_at"];
    const head = table.createTHead().insertRow();
    for (const c of cols) {
      const th = document.createElement("th");
      th.textContent = c;
      head.appendChild(th);
    }
    const tbody = table.createTBody();
    for (const p of points) {
      const tr = tbody.insertRow();
      tr.className = p.status;
      tr.dataset.day = p.day;
      for (const c of cols) {
        const td = tr.insertCell();
        td.dataset.col = c;
        const v = p[c];
        td.textContent = v === null ? "" : typeof v === "number" && c !== "epsilon_used" ? String(v) : String(v);
      }
    }
    wrap.appendChild(table);
  }

  // -- the page ---------------------------------------------------------------------------------

  function render() {
    drawSeries("dau");
    drawSeries("mau");
    drawBudget();
  }

  function setStatus(text, error = false) {
    const s = $("#status");
    s.textContent = text;
    s.classList.toggle("error", error);
  }

  async function load() {
    readKey();
    setStatus("Loading…");
    try {
      const [config, dau, mau, budget] = await Promise.all([api("config"), fetchSeries("dau"), fetchSeries("mau"), api("budget")]);
      Object.assign(state, { config, budget });
      state.series = { dau, mau };
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        $("#keyform").hidden = false;
        setStatus(`This page needs a read key (HTTP ${e.status}). Enter it above; it stays in this tab only.`, true);
      } else {
        setStatus(`Could not load the series: ${e.message}`, true);
      }
      return;
    }
    $("#keyform").hidden = true;
    fillConfig();
    fillCard("dau");
    fillCard("mau");
    fillBudgetCard();
    fillTable("dau");
    fillTable("mau");
    render();
    const lastDay = (m) => (state.series[m].points.length ? state.series[m].points[state.series[m].points.length - 1].day : "–");
    setStatus(
      `${state.series.dau.points.length} DAU and ${state.series.mau.points.length} MAU days published · latest ${lastDay("dau")} · loaded ${new Date().toISOString().slice(11, 16)} UTC`
    );
    document.body.dataset.loaded = "true";
    loadErasures();
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const b of document.querySelectorAll(".range button")) {
      b.addEventListener("click", () => {
        state.range = b.dataset.range;
        for (const o of document.querySelectorAll(".range button")) o.classList.toggle("on", o === b);
        render();
      });
    }
    $("#keyform").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem("dpdau-key", $("#key").value);
      $("#key").value = "";
      load();
    });
    $("#forget").addEventListener("click", () => {
      sessionStorage.removeItem("dpdau-key");
      location.reload();
    });
    let timer = null;
    window.addEventListener("resize", () => {
      clearTimeout(timer);
      timer = setTimeout(render, 150);
    });
    setInterval(load, 10 * 60 * 1000); // the schedule publishes once a day; refresh now and then
    load();
  });
})();
