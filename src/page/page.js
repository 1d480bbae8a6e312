// The live page: renders the service's live feed (/live/stream, Server-Sent Events) and runs
// the lessons' experiments. Plain DOM and canvas: nothing to download. Every value from the
// service goes in as text (request ids come from clients), never as HTML.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const HISTORY_MS = 120_000;
const history = []; // { at, lag, busy: [..] }

// el("td", { class: "x" }, "text", child…): an element with attributes and text/children.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 1000) return (value / 1000).toFixed(2) + " s";
  if (value >= 10) return value.toFixed(0) + " ms";
  return value.toFixed(1) + " ms";
}

function traceLink(traceId) {
  if (!traceId) return null;
  if (!config.trace_url) return el("span", { class: "quiet" }, "trace ", el("code", { title: traceId }, traceId.slice(0, 16) + "…"));
  return el("a", { href: config.trace_url.replace("{trace_id}", traceId), target: "_blank", rel: "noopener" }, "trace");
}

function fillBody(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows);
}

// A line chart of the history: series picks values from a history entry.
function drawChart(canvas, series, { max, threshold, unit }) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const now = history.length ? history[history.length - 1].at : Date.now();
  const x = (at) => width - ((now - at) / HISTORY_MS) * width;
  const top = Math.max(max(), 1e-9);
  const y = (v) => height - 14 - (Math.min(v, top) / top) * (height - 24);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#5f6368";
  ctx.fillText(unit(top), 4, 10);
  ctx.fillText("2 min ago", 4, height - 2);
  ctx.fillText("now", width - 24, height - 2);
  if (threshold !== undefined && threshold <= top) {
    ctx.strokeStyle = "#b3261e";
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(0, y(threshold));
    ctx.lineTo(width, y(threshold));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#b3261e";
    ctx.fillText("stall threshold", width - 90, y(threshold) - 3);
  }
  const colours = ["#0b57d0", "#1e7d32", "#8a5a00", "#6a1b9a", "#00838f", "#5d4037"];
  series.forEach((pick, i) => {
    ctx.strokeStyle = colours[i % colours.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const entry of history) {
      const value = pick(entry);
      if (value === undefined) continue;
      if (!started) { ctx.moveTo(x(entry.at), y(value)); started = true; }
      else ctx.lineTo(x(entry.at), y(value));
    }
    ctx.stroke();
  });
}

function renderWorkers(workers) {
  const rows = workers.map((w) => {
    const held = w.poll_ms >= config.stall_threshold_ms;
    return el("div", { class: "worker" + (held ? " held" : ""), "data-worker": w.worker },
      el("span", {}, "worker " + w.worker),
      el("span", { class: "bar", role: "img", "aria-label": Math.round(w.busy * 100) + "% busy" },
        el("span", { class: "fill", style: `width:${Math.round(w.busy * 100)}%;display:block` })),
      el("span", {}, Math.round(w.busy * 100) + "%"),
      held ? el("strong", { class: "badge stall" }, "held " + ms(w.poll_ms)) : null);
  });
  document.getElementById("workers").replaceChildren(...rows);
}

function renderStalls(stalls) {
  const now = stalls.filter((s) => s.in_progress);
  const box = document.getElementById("stalls-now");
  if (now.length === 0) {
    box.replaceChildren(el("p", { class: "none" }, "✓ None: every worker is free to poll."));
  } else {
    box.replaceChildren(...now.map((s) => el("div", { class: "stall-now", "data-route": s.route, "data-variant": s.variant },
      el("strong", {}, "⚠ STALL in progress "),
      el("span", { class: "elapsed" }, ms(s.length_ms)),
      el("div", {}, "A poll of ", el("code", {}, s.route), " (", el("code", {}, s.variant), ") is holding worker ",
        el("code", {}, s.worker), s.request_id ? " — request " : "", s.request_id ? el("code", {}, s.request_id) : null,
        s.cause === "host" ? " — cause: the host kept the thread from a CPU" : "", " ", traceLink(s.trace_id)),
      s.victims.length ? el("div", {}, `${s.victims.length} request(s) already delayed by it`) : null)));
  }
  const recent = stalls.filter((s) => !s.in_progress);
  const list = document.getElementById("stalls-recent");
  if (recent.length === 0) {
    list.replaceChildren(el("p", { class: "quiet" }, "No stall in the last five minutes."));
    return;
  }
  const rows = recent.map((s) => el("tr", { "data-route": s.route, "data-variant": s.variant },
    el("td", {}, el("span", { class: "badge stall" }, "stall"), " ", el("code", {}, s.route), " ", el("code", {}, s.variant)),
    el("td", {}, el("code", {}, s.worker)),
    el("td", {}, s.request_id ? el("code", {}, s.request_id) : "background task", " ", traceLink(s.trace_id)),
    el("td", {}, ms(s.length_ms), s.cause === "host" ? " (host)" : ""),
    el("td", {}, s.victims.length === 0 ? el("span", { class: "quiet" }, "none")
      : el("ul", { class: "victims" }, ...s.victims.slice(-8).map((v) => el("li", {},
          el("code", {}, v.route), " ", el("code", {}, v.variant), " ", el("code", {}, v.request_id), " delayed ", ms(v.delayed_ms))),
        s.victims.length > 8 ? el("li", { class: "quiet" }, `and ${s.victims.length - 8} more`) : null))));
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["culprit", "worker", "request", "length", "victims: requests it delayed"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows));
  list.replaceChildren(table);
}

function render(snapshot) {
  history.push({ at: snapshot.at_ms, lag: snapshot.lag_ms, busy: snapshot.workers.map((w) => w.busy) });
  while (history.length && history[0].at < snapshot.at_ms - HISTORY_MS) history.shift();

  const lag = document.getElementById("lag");
  lag.textContent = ms(snapshot.lag_ms);
  lag.style.color = snapshot.lag_ms >= snapshot.stall_threshold_ms ? "var(--stall)" : "var(--ok)";
  document.getElementById("threshold").textContent = ms(snapshot.stall_threshold_ms);
  drawChart(document.getElementById("lag-chart"), [(e) => e.lag], {
    max: () => Math.max(snapshot.stall_threshold_ms * 2, ...history.map((e) => e.lag)),
    threshold: snapshot.stall_threshold_ms,
    unit: ms,
  });
  renderWorkers(snapshot.workers);
  drawChart(document.getElementById("busy-chart"), snapshot.workers.map((w, i) => (e) => e.busy[i]), {
    max: () => 1,
    unit: () => "100%",
  });
  renderStalls(snapshot.stalls);

  const pool = snapshot.blocking;
  document.getElementById("blocking-pool").textContent =
    `${pool.threads} thread(s), ${pool.idle} idle, ${pool.queue_depth} job(s) queued for a thread`;
  fillBody(document.getElementById("call-sites"), pool.call_sites.map((site) => el("tr", {},
    el("td", {}, el("code", {}, site.call_site)), el("td", {}, site.in_flight), el("td", {}, ms(site.recent_max_wait_ms)))));

  document.getElementById("in-flight-total").textContent = `${snapshot.in_flight_total} request(s) in flight`;
  fillBody(document.getElementById("in-flight"), snapshot.in_flight.map((r) => el("tr", {},
    el("td", {}, el("code", {}, r.request_id)), el("td", {}, r.method, " ", el("code", {}, r.route)),
    el("td", {}, el("code", {}, r.variant)), el("td", {}, ms(r.age_ms)))));

  fillBody(document.getElementById("routes"), snapshot.routes.map((r) => el("tr", {},
    el("td", {}, r.method, " ", el("code", {}, r.route)), el("td", {}, el("code", {}, r.variant)), el("td", {}, r.active),
    el("td", {}, r.requests), el("td", {}, ms(r.p50_ms)), el("td", {}, ms(r.p99_ms)))));
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/live/stream");
  let last = 0;
  source.addEventListener("snapshot", (event) => {
    last = Date.now();
    status.textContent = "live";
    status.className = "state-live";
    render(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    status.textContent = "stream lost: reconnecting…";
    status.className = "state-lost";
  });
  setInterval(() => {
    if (last && Date.now() - last > 2000) {
      status.textContent = `no update for ${((Date.now() - last) / 1000).toFixed(0)} s`;
      status.className = "state-lost";
    }
  }, 1000);
}

// One SVG timeline: a bar per request from send to answer, stalls in red on their worker.
function timeline(variant) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const rows = variant.timeline.length;
  const stalls = variant.stalls || []; // absent when the watchdog saw none
  const workers = [...new Set(stalls.map((s) => s.worker))];
  const end = Math.max(1, ...variant.timeline.map((r) => r.done_ms || r.sent_ms), ...stalls.map((s) => s.end_ms));
  const width = 640, left = 110, right = 60, row = 16;
  const height = (rows + workers.length) * row + 24;
  const x = (t) => left + (t / end) * (width - left - right);
  const root = svg("svg", { class: "timeline", width: "100%", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${variant.variant}: ${rows} requests; slowest answered after ${ms(variant.slowest_ms)}` });
  variant.timeline.forEach((r, i) => {
    const yy = i * row + 4;
    root.append(svg("text", { x: 4, y: yy + 11 }, `request ${i + 1}`));
    const done = r.done_ms === null ? end : r.done_ms;
    root.append(svg("rect", { class: r.done_ms === null ? "failed" : "request", x: x(r.sent_ms), y: yy + 2, width: Math.max(1, x(done) - x(r.sent_ms)), height: row - 5, rx: 2 }));
    root.append(svg("text", { x: x(done) + 4, y: yy + 11 }, r.done_ms === null ? "failed" : ms(r.done_ms)));
  });
  workers.forEach((worker, j) => {
    const yy = (rows + j) * row + 4;
    root.append(svg("text", { x: 4, y: yy + 11, class: "stall-label" }, worker));
    for (const s of stalls.filter((s) => s.worker === worker)) {
      root.append(svg("rect", { class: "stalled", x: x(s.start_ms), y: 0, width: Math.max(2, x(s.end_ms) - x(s.start_ms)), height: yy + row, rx: 2 }));
      root.append(svg("text", { x: x(s.start_ms) + 3, y: yy + 11, class: "stall-label" }, `stall ${ms(s.end_ms - s.start_ms)}`));
    }
  });
  root.append(svg("text", { x: left, y: height - 4 }, "0"));
  root.append(svg("text", { x: x(end) - 20, y: height - 4 }, ms(end)));
  return root;
}

function renderLessons() {
  document.getElementById("plan").textContent =
    `${config.default_concurrency} concurrent requests of ${ms(config.default_ms)} on ${config.workers} worker(s)`;
  const container = document.getElementById("lessons");
  for (const lesson of config.lessons) {
    const button = el("button", { type: "button", id: `run-${lesson.name}`, "data-lesson": lesson.name }, `Run the ${lesson.name} experiment`);
    const status = el("span", { class: "quiet", role: "status" });
    const variants = lesson.variants.map((v) => el("div", { class: "variant", "data-variant": v.name },
      el("h4", {}, el("code", {}, lesson.route.replace("{variant}", v.name)), " ",
        v.stalls ? el("span", { class: "badge stall" }, "stalls") : el("span", { class: "badge ok" }, "does not stall"),
        v.disabled ? el("span", { class: "badge off", title: "this service runs with --no-stall-demos: the variant answers 403" }, "switched off (--no-stall-demos)") : null),
      el("p", {}, v.teaches),
      el("div", { class: "code" },
        el("div", {}, el("h4", {}, "Rust (stallscope)"), v.rust ? el("pre", {}, el("code", {}, v.rust)) : el("p", { class: "quiet" }, "see docs/lessons.md")),
        el("div", {}, el("h4", {}, "FastAPI"), v.fastapi ? el("pre", {}, el("code", {}, v.fastapi)) : el("p", { class: "quiet" }, "no direct counterpart in the tutorial"))),
      el("div", { class: "result" })));
    const section = el("section", { class: "lesson", "data-lesson": lesson.name, "aria-label": `lesson ${lesson.name}` },
      el("h3", {}, `${lesson.name} `, el("code", { class: "quiet" }, lesson.route)),
      el("p", {}, button, " ", status), ...variants);
    button.addEventListener("click", () => runLesson(lesson, section, button, status));
    container.append(section);
  }
}

async function runLesson(lesson, section, button, status) {
  button.disabled = true;
  status.textContent = "running… (watch the stalls above)";
  for (const result of section.querySelectorAll(".result")) result.replaceChildren();
  try {
    const response = await fetch(`/live/lessons/${lesson.name}/run`, { method: "POST" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || response.statusText);
    status.textContent = `${body.concurrency} requests of ${ms(body.ms)} per variant on ${body.workers} worker(s); a parallel finish is ≈ ${ms(body.parallel_ms)}`;
    for (const variant of body.variants) {
      const target = section.querySelector(`.variant[data-variant="${CSS.escape(variant.variant)}"] .result`);
      if (!target) continue;
      target.replaceChildren(
        el("p", {},
          el("span", { class: `verdict ${variant.verdict}`, "data-verdict": variant.verdict }, variant.verdict),
          ` slowest ${ms(variant.slowest_ms)} (${variant.slowdown.toFixed(2)} × parallel), ` +
          `${variant.watchdog_stalls ?? "?"} stall(s) caught by the watchdog`,
          variant.agrees_with_lesson ? "" : " — not what the lesson expects on this machine"),
        timeline(variant));
      if (variant.errors && variant.errors.length) target.append(el("p", { class: "error" }, variant.errors.join("; ")));
    }
  } catch (err) {
    status.textContent = "";
    status.append(el("span", { class: "error" }, `the experiment failed: ${err.message}`));
  } finally {
    button.disabled = false;
  }
}

renderLessons();
connect();
