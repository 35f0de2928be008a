/* softmax-serve dashboard: polls dashboard/state and redraws in place (no reload). */
"use strict";
(function () {
  const STATE_URL = new URL("dashboard/state", document.baseURI);
  const KEY_STORAGE = "softmax-serve-dashboard-key";
  const $ = (id) => document.getElementById(id);
  const COLORS = {
    accuracy: "#2f6fed", loss: "#8a5cf5", batch: "rgba(47,111,237,.35)",
    predict: "#2f6fed", train: "#0e9f9a", other: "#9aa4b5", p95: "#d64545",
  };

  let refreshMs = 2000;
  let lastOk = null;
  let lastVersion = null;
  let preqPlot = null;
  let trafficPlot = null;

  // ------------------------------------------------------------------ formatting
  const pct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + " %");
  const num = (x, digits = 3) => (x == null ? "–" : Number(x).toFixed(digits));
  const rate = (x) => (x == null ? "–" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const ms = (x) => (x == null ? "–" : x >= 100 ? x.toFixed(0) + " ms" : x >= 1 ? x.toFixed(1) + " ms" : x.toFixed(2) + " ms");
  const count = (x) => (x == null ? "–" : Math.round(x).toLocaleString("en"));
  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleTimeString("en-GB", { hour12: false });
  }
  function ago(iso) {
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    if (!isFinite(seconds)) return iso;
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
    return new Date(iso).toISOString().slice(0, 10);
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value != null) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child != null) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  // ------------------------------------------------------------------ charts
  function chartWidth(node) {
    return Math.max(200, Math.floor(node.getBoundingClientRect().width));
  }
  function makePlot(node, series, axes, height, hooks, xRange) {
    const plot = new uPlot(
      {
        width: chartWidth(node), height: height,
        series: [{}].concat(series), axes: axes,
        scales: { x: xRange ? { time: true, range: xRange } : { time: true } },
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        hooks: hooks || {},
      },
      [[]].concat(series.map(() => [])),
      node,
    );
    new ResizeObserver(() => plot.setSize({ width: chartWidth(node), height: height })).observe(node);
    return plot;
  }
  const grid = { stroke: "#edf0f5", width: 1 };
  const ticks = { stroke: "#dfe4ec", width: 1 };
  function axis(extra) {
    return Object.assign({ stroke: "#687388", grid: grid, ticks: ticks, font: "11px system-ui, sans-serif" }, extra);
  }
  const hms = (v) => new Date(v * 1000).toLocaleTimeString("en-GB", { hour12: false });
  function timeAxis() {
    // Whole seconds, or tenths when the ticks are closer than a second (a burst of updates).
    const label = (v, step) => (step < 1 ? hms(v) + "." + Math.floor((v % 1) * 10 + 1e-6) : hms(v));
    return axis({ space: 70, values: (u, vals, axisIndex, space, step) => vals.map((v) => label(v, step)) });
  }

  // Activations and rollbacks as dashed lines, refusals as red ticks, on the chart's time axis.
  let markers = [];
  const MARK = { activation: "#2f6fed", rollback: "#c77d00", refused: "#d64545" };
  function drawMarkers(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const ratio = uPlot.pxRatio;
    ctx.save();
    ctx.font = 11 * ratio + "px system-ui, sans-serif";
    ctx.lineWidth = ratio;
    for (const m of markers) {
      const x = u.valToPos(m.t, "x", true);
      if (!(x >= left && x <= left + width)) continue;
      ctx.strokeStyle = ctx.fillStyle = MARK[m.kind];
      if (m.kind === "refused") {
        ctx.beginPath();
        ctx.moveTo(x, top + height - 9 * ratio);
        ctx.lineTo(x - 5 * ratio, top + height);
        ctx.lineTo(x + 5 * ratio, top + height);
        ctx.fill();
      } else {
        ctx.setLineDash([4 * ratio, 3 * ratio]);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        const label = "v" + m.version;
        const room = left + width - x - 4 * ratio;  // near the right edge: the label goes left
        const shift = ctx.measureText(label).width < room ? 4 * ratio : -4 * ratio - ctx.measureText(label).width;
        ctx.fillText(label, x + shift, top + 12 * ratio);
      }
    }
    ctx.restore();
  }

  function preqChart() {
    return makePlot(
      $("chart-preq"),
      [
        { label: "accuracy (window)", scale: "acc", stroke: COLORS.accuracy, width: 2,
          fill: "rgba(47,111,237,.07)", value: (u, v) => pct(v), points: { show: false } },
        { label: "batch accuracy", scale: "acc", stroke: COLORS.batch, width: 0,
          value: (u, v) => pct(v), points: { show: true, size: 4, fill: COLORS.batch, stroke: COLORS.batch } },
        { label: "log-loss (window)", scale: "loss", stroke: COLORS.loss, width: 2,
          value: (u, v) => num(v), points: { show: false } },
      ],
      [
        timeAxis(),
        axis({ scale: "acc", values: (u, vals) => vals.map((v) => Math.round(v * 100) + "%"), size: 46 }),
        axis({ scale: "loss", side: 1, grid: { show: false }, size: 46 }),
      ],
      196,
      { draw: [drawMarkers] },
      // The time axis reaches the newest marker: a rollback after the last update shows.
      (u, min, max) => {
        if (min == null) return [min, max];
        const newest = markers.reduce((t, m) => Math.max(t, m.t), max);
        return min === newest ? [min - 1, newest + 1] : [min, newest];
      },
    );
  }
  function trafficChart() {
    return makePlot(
      $("chart-traffic"),
      [
        { label: "/predict", scale: "rps", stroke: COLORS.predict, width: 2, value: (u, v) => rate(v) + "/s", points: { show: false } },
        { label: "/train", scale: "rps", stroke: COLORS.train, width: 2, value: (u, v) => rate(v) + "/s", points: { show: false } },
        { label: "other", scale: "rps", stroke: COLORS.other, width: 1.5, value: (u, v) => rate(v) + "/s", points: { show: false } },
        { label: "p95 latency", scale: "ms", stroke: COLORS.p95, width: 1.5, dash: [5, 4], value: (u, v) => ms(v), points: { show: false } },
      ],
      [
        timeAxis(),
        axis({ scale: "rps", size: 46 }),
        axis({ scale: "ms", side: 1, grid: { show: false }, size: 60, values: (u, vals) => vals.map((v) => (v >= 1000 ? v / 1000 + " s" : v + " ms")) }),
      ],
      140,
    );
  }

  // ------------------------------------------------------------------ rendering
  function renderActive(state) {
    const active = state.active;
    setText("model-name", state.model ? "model " + state.model : "");
    if (!active) {
      setText("active-version", "none");
      setText("active-detail", "no model loaded yet");
      return;
    }
    setText("active-version", "v" + active.version);
    const made = active.kind === "update" ? "update of v" + active.parent : "offline snapshot";
    setText("active-detail", made + (active.key ? " · key " + active.key : ""));
    if (lastVersion !== null && lastVersion !== active.version) {
      const card = $("card-version");
      card.classList.remove("flash");
      void card.offsetWidth; // restart the animation
      card.classList.add("flash");
    }
    lastVersion = active.version;
  }

  function renderPrequential(state) {
    const preq = state.prequential;
    const guard = state.active && state.active.guard;
    setText("guard-figures", guard ? "guard set " + num(guard.log_loss) + " (" + count(guard.rows) + " rows)" : "");
    if (!preq) return;
    setText("preq-accuracy", pct(preq.accuracy));
    setText("preq-loss", num(preq.log_loss));
    setText("preq-detail", preq.rows ? "last " + count(preq.rows) + " of " + count(preq.window_rows) + " rows" : "no online update yet");
    const s = preq.series;
    setText("preq-caption", s.version.length ? "· " + s.version.length + " online updates, window " + count(preq.window_rows) + " rows" : "· no online update stored yet");
    markers = (state.events || [])
      .filter((e) => e.kind in MARK)
      .map((e) => ({ kind: e.kind, version: e.version, t: new Date(e.at).getTime() / 1000 }));
    preqPlot = preqPlot || preqChart();
    preqPlot.setData([s.time, s.accuracy, s.batch_accuracy, s.log_loss]);
    const node = $("chart-preq");
    node.dataset.points = String(s.time.length);
    node.dataset.lastVersion = s.version.length ? String(s.version[s.version.length - 1]) : "";
  }

  function renderGuard(state) {
    const refused = state.traffic.refused || {};
    const guardReasons = Object.entries(refused).filter(([r]) => r.startsWith("update_rejected") || r === "out_of_range");
    const total = guardReasons.reduce((sum, [, n]) => sum + n, 0);
    setText("guard-refused", count(total));
    const guard = state.active && state.active.guard;
    setText("guard-detail", state.guard_mode + (guard ? " · guard set " + pct(guard.accuracy) : ""));
    const chips = $("refusal-reasons");
    const entries = Object.entries(refused).filter(([, n]) => n > 0);
    chips.replaceChildren(
      ...(entries.length
        ? entries.map(([reason, n]) => el("span", { class: "chip", title: "refused /train requests, all workers" }, reason + " × " + count(n)))
        : [el("span", { class: "chip none" }, "no /train refused")]),
    );
  }

  function renderEvents(state) {
    const list = $("events");
    const events = state.events || [];
    if (!events.length) {
      list.replaceChildren(el("li", { class: "empty" }, "No refusal or activation seen by this process yet."));
      return;
    }
    list.replaceChildren(
      ...events.map((e) => {
        let what, why;
        if (e.kind === "refused") {
          what = e.reason.replace("update_rejected:", "") + (e.key ? " · key " + e.key : "");
          why = e.message;
        } else {
          what = (e.previous != null ? "v" + e.previous + " → " : "") + "v" + e.version + (e.by ? " · key " + e.by : "");
          why = (e.previous != null ? "v" + e.version + ": " : "") + (e.source === "offline" ? "offline training" : "online update") + (e.key ? " by key " + e.key : "");
        }
        const item = el("li", { "data-kind": e.kind },
          el("span", { class: "badge " + e.kind }, e.kind),
          el("span", { class: "what", title: what }, what),
          el("time", { class: "when", datetime: e.at }, clock(e.at)),
          el("span", { class: "why", title: why }, why));
        return item;
      }),
    );
  }

  function renderDrift(state) {
    const drift = state.drift || {};
    const stream = drift.stream || {};
    const traffic = drift.traffic || {};
    const alarm = Boolean(stream.detected || traffic.detected);
    $("card-drift").classList.toggle("alarm", alarm);
    setText("drift-state", alarm ? "drift" : state.active ? "stable" : "–");
    const parts = [];
    if (stream.statistic != null) parts.push("PH " + num(stream.statistic, 2));
    if (traffic.statistic != null) parts.push("traffic " + num(traffic.statistic, 2));
    const alarms = (stream.alarms || 0) + (traffic.alarms || 0);
    if (alarms) parts.push(alarms + " alarm" + (alarms > 1 ? "s" : ""));
    setText("drift-detail", parts.join(" · ") || "no online update yet");
  }

  function renderTraffic(state) {
    const traffic = state.traffic;
    const routes = traffic.routes || [];
    const total = routes.reduce((sum, r) => sum + (r.rate || 0), 0);
    setText("traffic-rate", rate(total) + "/s");
    const predict = routes.find((r) => r.route === "POST /predict");
    const totals = traffic.totals || {};
    setText("traffic-detail", "predict p95 " + ms(predict && predict.p95_ms));
    $("traffic-detail").title = count(totals.rows_predicted) + " rows predicted, " + count(totals.updates_applied) + " updates applied";
    setText("traffic-caption", "· last " + Math.round(traffic.window_seconds) + " s, all workers");
    const body = $("routes").tBodies[0];
    body.replaceChildren(
      ...(routes.length
        ? routes.map((r) => el("tr", {},
            el("td", {}, r.route), el("td", { class: "num" }, rate(r.rate)),
            el("td", { class: "num hide-narrow" }, rate(r.error_rate)), el("td", { class: "num" }, ms(r.p50_ms)),
            el("td", { class: "num" }, ms(r.p95_ms)), el("td", { class: "num hide-narrow" }, count(r.requests))))
        : [el("tr", {}, el("td", { colspan: "6", class: "empty" }, "No request yet."))]),
    );
    const s = traffic.series;
    trafficPlot = trafficPlot || trafficChart();
    trafficPlot.setData([s.time, s.predict, s.train, s.other, s.p95_ms]);
  }

  function renderVersions(state) {
    const body = $("versions").tBodies[0];
    const versions = state.versions || [];
    body.replaceChildren(
      ...versions.map((v) => {
        const made = v.kind === "snapshot" ? "snapshot" : "update";
        const accuracy = v.accuracy_before != null ? pct(v.accuracy_before) : v.test_accuracy != null ? pct(v.test_accuracy) + " test" : "–";
        return el("tr", { class: v.active ? "active" : null, "data-version": v.version },
          el("td", { class: "vnum" }, "v" + v.version, v.active ? el("span", { class: "tag live" }, "live") : null),
          el("td", {}, el("span", { class: "tag " + v.source }, v.source + " " + made), v.forced ? el("span", { class: "tag", title: "applied although the guard refused it" }, "forced") : null),
          el("td", { class: "hide-narrow" }, v.parent != null ? "v" + v.parent : "–"),
          el("td", {}, v.key || "–"),
          el("td", { class: "num", title: v.rows != null ? "prequential accuracy on its " + v.rows + " rows" : "on the test split" }, accuracy),
          el("td", { class: "num", title: v.created_at }, ago(v.created_at)));
      }),
    );
  }

  function render(state) {
    renderActive(state);
    renderPrequential(state);
    renderGuard(state);
    renderEvents(state);
    renderDrift(state);
    renderTraffic(state);
    renderVersions(state);
  }

  // ------------------------------------------------------------------ polling
  function setStatus(ok, text) {
    const dot = $("live-dot");
    dot.classList.toggle("ok", ok);
    dot.classList.toggle("down", !ok);
    setText("status-text", text);
  }
  function askForKey(message) {
    $("key-overlay").hidden = false;
    setText("key-error", message || "");
    $("key-input").focus();
  }
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
    $("key-overlay").hidden = true;
    poll();
  });

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY_STORAGE);
    try {
      const response = await fetch(STATE_URL, {
        cache: "no-store",
        headers: key ? { Authorization: "Bearer " + key } : {},
      });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => null);
        setStatus(false, "needs a key");
        askForKey(key && body && body.error ? body.error.message : "");
        return; // polling resumes once a key is given
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const state = await response.json();
      refreshMs = Math.max(500, 1000 * (state.refresh_seconds || 2));
      render(state);
      lastOk = Date.now();
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      setStatus(true, "live · every " + refreshMs / 1000 + " s");
    } catch (error) {
      setStatus(false, "unreachable · retrying" + (lastOk ? " (last data " + Math.round((Date.now() - lastOk) / 1000) + " s ago)" : ""));
    }
    timer = setTimeout(poll, refreshMs);
  }
  poll();
})();
