// Eddy's dashboard: polls the process's own JSON endpoints once a second
// and draws with plain SVG (no library, nothing fetched from elsewhere).
"use strict";
const NS = "http://www.w3.org/2000/svg";
let graph = null;
let polls = 0;
let prevOps = null;

const fmt = (n) => n >= 1e6 ? (n / 1e6).toFixed(2) + " M" : n >= 1e4 ? (n / 1e3).toFixed(1) + " k" : Math.round(n).toString();
const us = (v) => v == null ? "-" : v >= 1000 ? (v / 1000).toFixed(2) + " ms" : v.toFixed(0) + " µs";
const el = (name, attrs, text) => {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
};
const row = (cells, head) => "<tr>" + cells.map((c) => head ? `<th>${c}</th>` : `<td>${c}</td>`).join("") + "</tr>";
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// Columns by depth from the sources, rows in plan order.
function layout(g) {
  const depth = g.nodes.map(() => 0);
  for (let i = 0; i < g.nodes.length; i++)
    for (const e of g.edges) depth[e.to] = Math.max(depth[e.to], depth[e.from] + 1);
  const cols = {};
  g.nodes.forEach((n, i) => { (cols[depth[i]] = cols[depth[i]] || []).push(i); });
  const pos = [];
  for (const d in cols) cols[d].forEach((i, r) => { pos[i] = { x: 10 + d * 150, y: 10 + r * 62 }; });
  return pos;
}

// Per operator: instances summed (queued, counters), watermark the lowest.
function byOperator(p) {
  const per = {};
  for (const i of p.instances) {
    const o = per[i.operator] || (per[i.operator] = { n: 0, inn: 0, out: 0, queued: 0, late: 0, dropped: 0, wm: null, newest: null });
    o.n++; o.inn += i.records_in; o.out += i.records_out; o.queued += i.queued_input;
    o.late += i.late_records; o.dropped += i.dropped_records;
    if (i.watermark != null) o.wm = o.wm == null ? i.watermark : Math.min(o.wm, i.watermark);
    if (i.max_event_time != null) o.newest = Math.max(o.newest == null ? -Infinity : o.newest, i.max_event_time);
  }
  return per;
}

function drawGraph(p, sample) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  if (!graph) return;
  const pos = layout(graph);
  const per = byOperator(p);
  const rates = (sample && sample.operators) || {};
  const cap = Math.max(1, p.max_in_flight_records / Math.max(1, p.instances.length));
  let h = 0;
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to];
    svg.appendChild(el("line", { x1: a.x + 130, y1: a.y + 24, x2: b.x, y2: b.y + 24,
      stroke: e.side ? "#e76f51" : "#8a94a3", "stroke-dasharray": e.exchange === "hash" ? "5,3" : "" }));
  }
  graph.nodes.forEach((n, i) => {
    const a = pos[i];
    h = Math.max(h, a.y + 60);
    const o = per[n.name] || { queued: 0 };
    const fill = Math.min(1, o.queued / cap);
    const color = fill > 0.5 ? "#e76f51" : fill > 0.1 ? "#e9c46a" : "#2a9d8f";
    const g = el("g", { class: "node", "data-name": n.name });
    g.appendChild(el("rect", { x: a.x, y: a.y, width: 130, height: 48, rx: 5, fill: "#eef2f7", stroke: color, "stroke-width": 2 }));
    g.appendChild(el("rect", { x: a.x, y: a.y + 44, width: 130 * fill, height: 4, fill: color }));
    g.appendChild(el("text", { x: a.x + 6, y: a.y + 15 }, `${n.name} ×${n.parallelism}`));
    g.appendChild(el("text", { x: a.x + 6, y: a.y + 29, class: "rate" }, `${fmt(rates[n.name] || 0)}/s`));
    g.appendChild(el("text", { x: a.x + 6, y: a.y + 41, fill: "#56606c" }, `queued ${fmt(o.queued)}`));
    svg.appendChild(g);
  });
  svg.setAttribute("height", Math.max(80, h));
}

function drawLatency(samples) {
  const svg = document.getElementById("latency");
  svg.replaceChildren();
  const W = svg.clientWidth || 600, H = 200, L = 48;
  const pts = samples.filter((s) => s.p50_us != null);
  if (pts.length === 0) { svg.appendChild(el("text", { x: 10, y: 20 }, "no records visible yet")); return; }
  const max = Math.max(10, ...pts.map((s) => s.p999_us));
  const y = (v) => H - 16 - (Math.log10(Math.max(1, v)) / Math.log10(max * 1.5)) * (H - 26);
  const t0 = pts[0].t, t1 = Math.max(t0 + 1, pts[pts.length - 1].t);
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - 6);
  for (const v of [10, 100, 1000, 10000, 100000, 1000000]) {
    if (v > max * 1.5) break;
    svg.appendChild(el("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#e5e8ec" }));
    svg.appendChild(el("text", { x: 2, y: y(v) + 4, fill: "#56606c" }, us(v)));
  }
  for (const [k, c] of [["p50_us", "#2a9d8f"], ["p99_us", "#e9c46a"], ["p999_us", "#e76f51"]])
    svg.appendChild(el("polyline", { fill: "none", stroke: c, "stroke-width": 2,
      points: pts.map((s) => `${x(s.t).toFixed(1)},${y(s[k]).toFixed(1)}`).join(" ") }));
}

function drawCheckpoints(cks) {
  const svg = document.getElementById("ckchart");
  svg.replaceChildren();
  const last = cks.slice(-40);
  const W = svg.clientWidth || 600, max = Math.max(1, ...last.map((c) => c.duration_ms));
  last.forEach((c, i) => {
    const h = Math.max(1, c.duration_ms / max * 70);
    svg.appendChild(el("rect", { x: i * (W / 40), y: 80 - h, width: W / 40 - 2, height: h, fill: "#457b9d" }));
  });
  svg.appendChild(el("text", { x: 2, y: 10, fill: "#56606c" }, `duration, max ${max} ms`));
  document.getElementById("checkpoints").innerHTML = row(["epoch", "at", "duration", "written", "state", "alignment"], true) +
    cks.slice(-8).reverse().map((c) => row([c.epoch, c.t.toFixed(0) + " s", c.duration_ms + " ms", fmt(c.bytes_written) + "B",
      fmt(c.state_bytes) + "B", us(c.alignment_us)])).join("");
}

function drawTables(p) {
  const per = byOperator(p);
  const names = Object.keys(per);
  const newest = Math.max(...names.map((n) => per[n].newest).filter((t) => t != null), -Infinity);
  const time = (t) => new Date(t).toISOString().replace("T", " ").slice(0, 23);
  const wm = names.filter((n) => per[n].wm != null && per[n].wm < 9e18);
  document.getElementById("watermarks").innerHTML = row(["operator", "watermark (event time, lowest instance)", "behind newest event"], true) +
    wm.map((n) => row([esc(n), time(per[n].wm), isFinite(newest) ? ((newest - per[n].wm) / 1000).toFixed(2) + " s" : "-"])).join("");
  document.getElementById("operators").innerHTML = row(["operator", "instances", "in", "out", "queued", "late", "dropped"], true) +
    names.map((n) => { const o = per[n]; return row([esc(n), o.n, fmt(o.inn), fmt(o.out), fmt(o.queued), fmt(o.late), fmt(o.dropped)]); }).join("");
}

function drawTiles(p, samples) {
  const s = samples[samples.length - 1] || {};
  const c = p.checkpoint || {};
  const tiles = [
    ["elapsed", p.elapsed_secs.toFixed(0) + " s"],
    ["input", fmt(s.input_per_s || 0) + "/s"],
    ["output", fmt(s.output_per_s || 0) + "/s"],
    ["records in", fmt(p.input_rows)],
    ["queued", fmt(p.queued_records)],
    ["p99 (last s)", us(s.p99_us)],
    ["p99 (all)", us(p.latency && p.latency.p99_us)],
    ["checkpoints", c.completed == null ? "off" : c.completed + (c.failed ? ` (${c.failed} failed)` : "")],
    ["late", fmt(p.instances.reduce((a, i) => a + i.late_records, 0))],
  ];
  document.getElementById("tiles").innerHTML = tiles.map(([k, v]) =>
    `<div class="tile" data-k="${k}"><div class="v">${v}</div><div class="k">${k}</div></div>`).join("");
}

function drawApp(app) {
  if (app.title) document.getElementById("title").textContent = app.title;
  const p = app.panel;
  if (!p) return;
  document.getElementById("app-alerts").hidden = false;
  document.getElementById("app-machines").hidden = false;
  document.getElementById("alert-counts").innerHTML = p.alerts_per_rule.map(([r, n]) =>
    `<div class="tile"><div class="v">${n}</div><div class="k">${esc(r)}</div></div>`).join("");
  document.getElementById("alerts").innerHTML = row(["event time", "sensor", "machine", "rule", "value"], true) +
    p.recent.slice(0, 15).map((a) => row([new Date(a.ts).toISOString().slice(11, 23), a.sensor, a.machine, esc(a.rule),
      a.value.toFixed(2)])).join("");
  const svg = document.getElementById("machines");
  svg.replaceChildren();
  const alerting = new Map(p.alerting);
  const colors = { threshold: "#e63946", zscore: "#f4a261", stuck: "#9d4edd", silence: "#6c757d" };
  const cols = 50, cell = 11;
  for (let m = 0; m < p.machines; m++) {
    const r = alerting.get(m);
    const rect = el("rect", { x: (m % cols) * cell, y: Math.floor(m / cols) * cell, width: cell - 2, height: cell - 2,
      fill: r ? colors[r] || "#e63946" : "#2a9d8f", class: r ? "machine alerting" : "machine" });
    rect.appendChild(el("title", {}, `machine ${m}` + (r ? `: ${r}` : "")));
    svg.appendChild(rect);
  }
  svg.setAttribute("height", Math.ceil(p.machines / cols) * cell + 4);
}

async function tick() {
  try {
    if (!graph) graph = await get("/api/graph");
    const [p, h, app] = await Promise.all([get("/api/progress"), get("/api/history"), get("/api/app")]);
    const samples = h.samples;
    drawTiles(p, samples);
    drawGraph(p, samples[samples.length - 1]);
    drawLatency(samples);
    drawCheckpoints(h.checkpoints);
    drawTables(p);
    drawApp(app);
    polls++;
    document.body.dataset.polls = polls;
    document.body.dataset.inputRows = p.input_rows;
    document.getElementById("status").textContent = `live, updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById("status").innerHTML = `<span class="err">${esc(e.message)} (retrying)</span>`;
  }
}

tick();
setInterval(tick, 1000);
