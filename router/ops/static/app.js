// The event-router console: one page over the console's API (/api/v1). No framework, no
// build step. Every value from the API is put in the page as text (textContent), never as
// HTML. The admin token is kept in sessionStorage (gone when the tab closes) and sent as
// "Authorization: Bearer"; live views read server-sent events through fetch for that reason.
"use strict";

const WINDOWS = [["15m", "15 minutes"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"]];
const MAX_ROWS = 500;
const REFRESH_MS = 5000;

const state = {
  token: sessionStorage.getItem("router-token") || "",
  workspace: null,
  window: sessionStorage.getItem("router-window") || "1h",
  view: null,
  timer: null,
  debugger: { source: null, paused: false, pending: 0, rows: new Map(), order: [], selected: null, stream: null },
  destination: null,
  letters: [],
};

// ------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }

// replaceChildren() would turn null into the text "null": leave out what is not there.
function fill(node, ...children) { node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)); return node; }

function number(value) { return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US"); }

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  return `${(value / 60).toFixed(1)} min`;
}

function when(unixSeconds) {
  if (!unixSeconds) return "–";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function clock(millis) {
  return new Date(millis).toISOString().slice(11, 23);
}

function pretty(value) { return JSON.stringify(value, null, 2); }

function badge(kind, text, title) { return el("span", { class: `badge ${kind}`, title }, text); }

function windowOptions(select) {
  clear(select);
  for (const [value, label] of WINDOWS) select.append(el("option", { value, selected: value === state.window }, label));
  select.onchange = () => { state.window = select.value; sessionStorage.setItem("router-window", state.window); route(); };
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) throw new Unauthorized((await response.json()).message);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function failed(error) {
  if (error instanceof Unauthorized) { signOut(error.message); return; }
  console.error(error);
}

// ------------------------------------------------------------------ sign in

async function signIn(token) {
  state.token = token;
  try {
    state.workspace = await api("/api/v1/workspace");
  } catch (error) {
    state.token = "";
    sessionStorage.removeItem("router-token");
    $("login-error").textContent = error instanceof Unauthorized ? error.message : `cannot reach the console: ${error.message}`;
    $("login").hidden = false;
    $("app").hidden = true;
    return;
  }
  sessionStorage.setItem("router-token", token);
  $("login").hidden = true;
  $("app").hidden = false;
  fillSelectors();
  route();
}

function signOut(message) {
  stopTimers();
  state.token = "";
  sessionStorage.removeItem("router-token");
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
}

function fillSelectors() {
  const source = $("dbg-source");
  clear(source);
  for (const s of state.workspace.sources) source.append(el("option", { value: s.id }, s.name === s.id ? s.id : `${s.name} (${s.id})`));
  const vio = $("vio-source");
  clear(vio).append(el("option", { value: "" }, "every source"));
  for (const s of state.workspace.sources) vio.append(el("option", { value: s.id }, s.id));
  for (const select of document.querySelectorAll(".window-select")) windowOptions(select);
}

// ------------------------------------------------------------------ routing

function stopTimers() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  if (state.debugger.stream) state.debugger.stream.abort();
  state.debugger.stream = null;
}

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  const nav = view === "destination" ? "delivery" : view;
  for (const link of document.querySelectorAll(".top nav a")) link.classList.toggle("active", link.dataset.view === nav);
}

function route() {
  if (!state.workspace) return;
  stopTimers();
  const [, view, arg] = (location.hash || "#/debugger").split("/").map(decodeURIComponent);
  if (view === "delivery" && arg) { show("destination"); openDestination(arg); return; }
  if (view === "delivery") { show("delivery"); openOverview(); return; }
  if (view === "violations") { show("violations"); openViolations(); return; }
  if (view === "event") { show("event"); if (arg) { $("evt-id").value = arg; lookUp(arg); } return; }
  show("debugger");
  openDebugger(arg || state.debugger.source || state.workspace.sources[0].id);
}

function every(fn) {
  fn();
  state.timer = setInterval(fn, REFRESH_MS);
}

// ------------------------------------------------------------------ debugger

function debuggerQuery() {
  const params = new URLSearchParams();
  const q = $("dbg-q").value.trim(); if (q) params.set("q", q);
  const type = $("dbg-type").value; if (type) params.set("type", type);
  const name = $("dbg-event").value.trim(); if (name) params.set("event", name);
  return params;
}

function routeBadge(route) {
  const outcome = route.outcome;
  if (outcome === "delivered") return badge("delivered", `${route.destination} ✓`, "delivered");
  if (outcome === "retry") return badge("retrying", `${route.destination} ↻`, `retrying: ${route.outcomeReason || ""}`);
  if (outcome === "dlq") return badge("dead_lettered", `${route.destination} ✕`, `dead-lettered: ${route.outcomeReason || ""}`);
  if (route.state === "routed") return badge("routed", route.destination, "routed, waiting for delivery");
  if (route.state === "rejected") return badge("rejected", `${route.destination} ✕`, `rejected: ${route.reason}`);
  return badge("filtered", `${route.destination} –`, `filtered: ${route.detail || route.reason}`);
}

const SUMMARY = [["delivered", "✓", "delivered"], ["retrying", "↻", "retrying"], ["dead_lettered", "✕", "dead-lettered"],
  ["rejected", "✕", "rejected"], ["routed", "→", "routed, not delivered yet"], ["filtered", "–", "filtered out"]];

function routeState(route) {
  if (route.outcome === "delivered") return "delivered";
  if (route.outcome === "retry") return "retrying";
  if (route.outcome === "dlq") return "dead_lettered";
  return route.state === "routed" || route.state === "rejected" ? route.state : "filtered";
}

function routeSummary(routes) {
  // Many destinations: one badge per state with a count, not one per destination.
  if (routes.length <= 6) return routes.map(routeBadge);
  const counts = new Map();
  for (const route of routes) counts.set(routeState(route), (counts.get(routeState(route)) || 0) + 1);
  return SUMMARY.filter(([state]) => counts.has(state)).map(([state, mark, words]) => badge(state, `${mark} ${counts.get(state)}`, `${counts.get(state)} ${words}`));
}

function eventRow(entry) {
  const row = el("tr", { class: "clickable", "data-id": entry.messageId || entry.id },
    el("td", {}, entry.receivedAt ? entry.receivedAt.slice(11, 23) : clock(entry.timestamp)),
    el("td", {}, entry.type || "?"),
    el("td", {}, entry.event || (entry.rejected ? `rejected: ${entry.rejected.reason}` : "")),
    el("td", {}, routeSummary(entry.routes)));
  row.addEventListener("click", () => selectEvent(entry.messageId || entry.id));
  return row;
}

function renderDebugger() {
  const dbg = state.debugger;
  const body = $("dbg-table").tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const key of dbg.order) {
    const entry = dbg.rows.get(key);
    const row = eventRow(entry);
    if (key === dbg.selected) row.classList.add("selected");
    fragment.append(row);
  }
  body.replaceChildren(fragment);
  $("dbg-empty").hidden = dbg.order.length > 0;
}

let renderQueued = false;
function scheduleRender() {
  // Live events can arrive faster than frames: render at most once per frame.
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderDebugger(); });
}

function keep(entry, front) {
  const dbg = state.debugger;
  const key = entry.messageId || entry.id;
  if (!dbg.rows.has(key)) {
    if (front) dbg.order.unshift(key); else dbg.order.push(key);
  }
  dbg.rows.set(key, entry);
  while (dbg.order.length > MAX_ROWS) dbg.rows.delete(dbg.order.pop());
}

async function openDebugger(source) {
  const dbg = state.debugger;
  if (dbg.source !== source) { dbg.selected = null; $("dbg-detail").replaceChildren(el("p", { class: "muted" }, "Select an event to see its payload and where it went.")); }
  dbg.source = source;
  $("dbg-source").value = source;
  dbg.rows = new Map(); dbg.order = []; dbg.pending = 0;
  const params = debuggerQuery();
  params.set("limit", String(MAX_ROWS));
  try {
    const body = await api(`/api/v1/sources/${encodeURIComponent(source)}/events?${params}`);
    for (const entry of body.events) keep(entry, false);
  } catch (error) { failed(error); return; }
  renderDebugger();
  if (dbg.selected && dbg.rows.has(dbg.selected)) selectEvent(dbg.selected);
  if (!dbg.paused) follow(source, debuggerQuery());
  else setLive("paused", "paused");
}

function setLive(kind, text) {
  const live = $("dbg-live");
  live.className = `live ${kind}`;
  live.textContent = text;
}

async function follow(source, params) {
  const dbg = state.debugger;
  const controller = new AbortController();
  dbg.stream = controller;
  let delay = 1000;
  while (!controller.signal.aborted) {
    try {
      const response = await fetch(`/api/v1/sources/${encodeURIComponent(source)}/live?${params}`, {
        headers: { Authorization: `Bearer ${state.token}` }, signal: controller.signal,
      });
      if (response.status === 401) { signOut("the admin token is no longer valid"); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive("on", "live");
      delay = 1000;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let kind = "message"; let data = "";
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onLive(kind, JSON.parse(data));
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      console.warn("live stream:", error);
    }
    if (controller.signal.aborted) return;
    setLive("", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function onLive(kind, data) {
  const dbg = state.debugger;
  if (kind === "event") {
    keep(data, true);
    scheduleRender();
  } else if (kind === "outcome") {
    const entry = dbg.rows.get(data.messageId);
    if (!entry) return;
    const route = entry.routes.find((r) => r.destination === data.destination);
    if (route) Object.assign(route, { outcome: data.outcome, attempt: data.attempt, outcomeReason: data.reason, status: data.status, at: data.at });
    scheduleRender();
    if (dbg.selected === data.messageId) selectEvent(data.messageId);
  } else if (kind === "skipped") {
    setLive("on", `live (${data.count} skipped: too many to show)`);
  }
}

function routeTable(routes) {
  const names = new Map(state.workspace.destinations.map((d) => [d.id, d.name]));
  return el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, el("th", {}, "Destination"), el("th", {}, "Routing"), el("th", {}, "Delivery"))),
    el("tbody", {}, routes.map((r) => el("tr", {},
      el("td", {}, el("a", { href: `#/delivery/${encodeURIComponent(r.destination)}` }, names.get(r.destination) || r.destination)),
      el("td", {}, r.state === "routed" ? "routed" : `${r.state}: ${r.detail || r.reason || ""}`),
      el("td", {}, r.outcome ? [routeBadge(r), ` attempt ${r.attempt}`, r.status ? `, HTTP ${r.status}` : "", r.outcomeReason ? `, ${r.outcomeReason}` : ""] : (r.state === "routed" ? "pending" : "–"))))));
}

function selectEvent(key) {
  const dbg = state.debugger;
  dbg.selected = key;
  for (const row of $("dbg-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.id === key);
  const entry = dbg.rows.get(key);
  const pane = $("dbg-detail");
  if (!entry) { clear(pane); return; }
  fill(pane,
    el("h3", {}, `${entry.type || "?"} ${entry.event || ""}`),
    el("dl", { class: "kv" },
      el("dt", {}, "messageId"), el("dd", {}, el("a", { href: `#/event/${encodeURIComponent(entry.messageId || "")}` }, entry.messageId || "–")),
      el("dt", {}, "received"), el("dd", {}, entry.receivedAt || clock(entry.timestamp)),
      el("dt", {}, "partition / offset"), el("dd", {}, `${entry.partition} / ${entry.offset}`)),
    entry.rejected ? el("p", { class: "error" }, `Rejected (${entry.rejected.reason}): ${entry.rejected.message}`) : null,
    el("h3", {}, "Destinations"),
    routeTable(entry.routes),
    el("h3", {}, "Payload (after source middleware)"),
    el("pre", { class: "payload" }, entry.payload ? pretty(entry.payload) : "not shown: the source's middleware could not be applied to it"));
}

function setupDebugger() {
  const dbg = state.debugger;
  $("dbg-source").addEventListener("change", (e) => { location.hash = `#/debugger/${encodeURIComponent(e.target.value)}`; });
  let typing = null;
  const refilter = () => { clearTimeout(typing); typing = setTimeout(() => { stopTimers(); openDebugger(dbg.source); }, 300); };
  $("dbg-q").addEventListener("input", refilter);
  $("dbg-event").addEventListener("input", refilter);
  $("dbg-type").addEventListener("change", refilter);
  $("dbg-pause").addEventListener("click", () => {
    dbg.paused = !dbg.paused;
    $("dbg-pause").textContent = dbg.paused ? "Resume" : "Pause";
    stopTimers();
    if (dbg.paused) setLive("paused", "paused");
    else openDebugger(dbg.source);
  });
}

// ------------------------------------------------------------------ Event Delivery

async function openOverview() {
  every(async () => {
    let body;
    try { body = await api(`/api/v1/destinations?window=${state.window}`); } catch (error) { failed(error); return; }
    const fragment = document.createDocumentFragment();
    for (const d of body.destinations) {
      const row = el("tr", { class: "clickable" },
        el("td", {}, el("a", { href: `#/delivery/${encodeURIComponent(d.id)}` }, d.name), d.enabled ? "" : " (disabled)"),
        el("td", {}, d.type),
        el("td", { class: "num" }, number(d.delivered)),
        el("td", { class: "num" }, number(d.not_delivered)),
        el("td", { class: "num" }, seconds(d.p95_seconds)),
        el("td", { class: "num" }, number(d.retry_backlog)),
        el("td", { class: "num" }, number(d.dlq_backlog)));
      row.addEventListener("click", () => { location.hash = `#/delivery/${encodeURIComponent(d.id)}`; });
      fragment.append(row);
    }
    $("ov-table").tBodies[0].replaceChildren(fragment);
  });
}

function stat(label, value, kind) {
  return el("div", { class: `stat ${kind || ""}` }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function trendChart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 900; const height = 150; const pad = 4;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const peak = Math.max(1, ...points.map((p) => p.delivered + p.retried + p.dead_lettered));
  const slowest = Math.max(0.001, ...points.map((p) => p.p95_seconds || 0));
  const w = (width - pad * 2) / Math.max(1, points.length);
  const line = [];
  points.forEach((p, i) => {
    const x = pad + i * w;
    const failedCount = p.retried + p.dead_lettered;
    const hOk = (p.delivered / peak) * (height - 20);
    const hBad = (failedCount / peak) * (height - 20);
    for (const [h, y, color, label] of [[hOk, height - hOk, "#4caf7a", `${p.delivered} delivered`], [hBad, height - hOk - hBad, "#e0604f", `${failedCount} failed`]]) {
      if (h <= 0) continue;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(x + 1)); rect.setAttribute("width", String(Math.max(1, w - 2)));
      rect.setAttribute("y", String(y)); rect.setAttribute("height", String(h)); rect.setAttribute("fill", color);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${when(p.at)}: ${label}, P95 ${seconds(p.p95_seconds)}`;
      rect.append(title);
      svg.append(rect);
    }
    if (p.p95_seconds !== null) line.push(`${x + w / 2},${height - 4 - (p.p95_seconds / slowest) * (height - 24)}`);
  });
  if (line.length > 1) {
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", line.join(" ")); path.setAttribute("fill", "none");
    path.setAttribute("stroke", "#3358d4"); path.setAttribute("stroke-width", "2");
    svg.append(path);
  }
  const measured = points.some((p) => p.p95_seconds !== null);
  return el("div", {}, svg, el("div", { class: "legend" },
    el("span", {}, el("i", { class: "l-ok" }), "delivered"), el("span", {}, el("i", { class: "l-bad" }), "failed (retried or dead-lettered)"),
    measured ? el("span", {}, el("i", { class: "l-p95" }), `P95 latency (top of the chart: ${seconds(slowest)})`) : null));
}

function threeParts(sample, container) {
  const parts = [["Event", sample.event], ["Request", sample.request], ["Response", sample.response]];
  const pre = el("pre", { class: "part" });
  const tabs = el("div", { class: "tabs" });
  const pick = (index) => {
    pre.textContent = parts[index][1] === null || parts[index][1] === undefined ? "(none)" : pretty(parts[index][1]);
    [...tabs.children].forEach((b, i) => b.classList.toggle("active", i === index));
  };
  parts.forEach(([label], index) => tabs.append(el("button", { type: "button", onclick: () => pick(index) }, label)));
  container.append(tabs, pre);
  pick(1);
}

function showSample(group) {
  const box = $("dst-sample");
  box.hidden = false;
  clear(box);
  const sample = group.samples[0];
  if (!sample) { box.append(el("p", { class: "muted" }, "No sample kept for this reason.")); return; }
  box.append(el("h3", {}, `${group.reason}: ${sample.message || ""}`),
    el("dl", { class: "kv" },
      el("dt", {}, "when"), el("dd", {}, when(sample.at)),
      el("dt", {}, "outcome"), el("dd", {}, sample.outcome),
      el("dt", {}, "HTTP status"), el("dd", {}, sample.status ?? "–"),
      el("dt", {}, "events in the request"), el("dd", {}, sample.events)));
  threeParts(sample, box);
}

async function openDestination(id) {
  state.destination = id;
  const info = state.workspace.destinations.find((d) => d.id === id);
  $("dst-title").textContent = info ? `${info.name} (${info.type})` : id;
  $("dst-sample").hidden = true;
  $("dlq-letter").hidden = true;
  $("dlq-result").textContent = "";
  every(() => refreshDestination(id));
}

async function refreshDestination(id) {
  let view;
  try { view = await api(`/api/v1/destinations/${encodeURIComponent(id)}/delivery?window=${state.window}`); } catch (error) { failed(error); return; }
  if (state.destination !== id) return;
  $("dst-cards").replaceChildren(
    stat("Delivered", number(view.delivered), "ok"),
    stat("Not delivered", number(view.not_delivered), view.not_delivered ? "bad" : ""),
    stat("Retrying", number(view.retrying)),
    stat("Dead-lettered", number(view.dead_lettered), view.dead_lettered ? "bad" : ""),
    stat("P95 latency", seconds(view.p95_seconds)),
    stat("P50 latency", seconds(view.p50_seconds)),
    stat("Retry backlog", number(view.retry_backlog)),
    stat("Dead letters (live)", number(view.dlq_backlog)));
  $("dst-step").textContent = `(per ${seconds(view.step_seconds)})`;
  $("dst-trend").replaceChildren(trendChart(view.trend));
  const body = $("dst-errors").tBodies[0];
  const fragment = document.createDocumentFragment();
  for (const group of view.errors) {
    const row = el("tr", { class: "clickable", "data-reason": group.reason },
      el("td", {}, group.reason), el("td", { class: "num" }, number(group.events)),
      el("td", { class: "num" }, number(group.retried)), el("td", { class: "num" }, number(group.dead_lettered)),
      el("td", {}, when(group.last)));
    row.addEventListener("click", () => showSample(group));
    fragment.append(row);
  }
  body.replaceChildren(fragment);
  $("dst-no-errors").hidden = view.errors.length > 0;
  await refreshLetters(id);
}

async function refreshLetters(id) {
  const reason = $("dlq-reason").value;
  let body;
  try { body = await api(`/api/v1/destinations/${encodeURIComponent(id)}/dlq?limit=200${reason ? `&reason=${encodeURIComponent(reason)}` : ""}`); } catch (error) { failed(error); return; }
  if (state.destination !== id) return;
  const checked = new Set([...document.querySelectorAll("#dlq-table tbody input:checked")].map((i) => i.value));
  state.letters = body.letters;
  $("dlq-count").textContent = `(${body.total} live)`;
  const select = $("dlq-reason");
  const chosen = select.value;
  clear(select).append(el("option", { value: "" }, "every reason"));
  for (const [name, count] of Object.entries(body.reasons)) select.append(el("option", { value: name, selected: name === chosen }, `${name} (${count})`));
  const fragment = document.createDocumentFragment();
  for (const letter of body.letters) {
    const box = el("input", { type: "checkbox", value: letter.id, checked: checked.has(letter.id), "aria-label": `select letter ${letter.id}` });
    box.addEventListener("change", updateRedriveButtons);
    const row = el("tr", { class: "clickable", "data-letter": letter.id },
      el("td", {}, box), el("td", {}, letter.id), el("td", {}, when(letter.failedAt)), el("td", {}, letter.reason),
      el("td", { class: "num" }, letter.status ?? "–"), el("td", { class: "num" }, letter.attempts ?? "–"),
      el("td", {}, letter.messageId || "–"), el("td", {}, [letter.type, letter.event].filter(Boolean).join(" ")));
    row.addEventListener("click", (e) => { if (e.target !== box) openLetter(id, letter.id); });
    fragment.append(row);
  }
  $("dlq-table").tBodies[0].replaceChildren(fragment);
  $("dlq-empty").hidden = body.letters.length > 0;
  updateRedriveButtons();
}

function updateRedriveButtons() {
  const selected = document.querySelectorAll("#dlq-table tbody input:checked").length;
  $("dlq-redrive-selected").disabled = selected === 0;
  $("dlq-redrive-selected").textContent = selected ? `Redrive selected (${selected})` : "Redrive selected";
  $("dlq-redrive-all").disabled = state.letters.length === 0;
}

async function openLetter(destination, letterId) {
  let letter;
  try { letter = await api(`/api/v1/destinations/${encodeURIComponent(destination)}/dlq/${encodeURIComponent(letterId)}`); } catch (error) { failed(error); return; }
  const box = $("dlq-letter");
  box.hidden = false;
  clear(box).append(el("h3", {}, `Letter ${letter.id}: ${letter.reason} after ${letter.attempts ?? "?"} attempt(s)`),
    el("p", { class: "muted" }, letter.letter.error ? letter.letter.error.message : ""));
  threeParts({ event: letter.letter.event, request: letter.letter.request, response: letter.letter.response }, box);
}

async function redriveLetters(body) {
  const id = state.destination;
  $("dlq-result").textContent = "redriving…";
  try {
    const result = await api(`/api/v1/destinations/${encodeURIComponent(id)}/dlq/redrive`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const skipped = result.skipped.length ? `; ${result.skipped.length} skipped (${result.skipped.map((s) => `${s.id}: ${s.reason}`).join(", ")})` : "";
    $("dlq-result").textContent = `Redriven ${result.redriven} of ${result.selected} letter(s)${skipped}.`;
  } catch (error) { failed(error); $("dlq-result").textContent = `Redrive failed: ${error.message}`; return; }
  $("dlq-all").checked = false;
  await refreshDestination(id);
}

function setupDestination() {
  $("dlq-reason").addEventListener("change", () => refreshLetters(state.destination));
  $("dlq-all").addEventListener("change", (e) => {
    for (const box of document.querySelectorAll("#dlq-table tbody input")) box.checked = e.target.checked;
    updateRedriveButtons();
  });
  $("dlq-redrive-selected").addEventListener("click", () => {
    const ids = [...document.querySelectorAll("#dlq-table tbody input:checked")].map((i) => i.value);
    if (ids.length) redriveLetters({ ids });
  });
  $("dlq-redrive-all").addEventListener("click", () => {
    const ids = state.letters.map((l) => l.id);
    if (ids.length && confirm(`Send ${ids.length} dead letter(s) back for delivery?`)) redriveLetters({ ids });
  });
}

// ------------------------------------------------------------------ violations

async function openViolations() {
  every(async () => {
    const source = $("vio-source").value;
    let body;
    try { body = await api(`/api/v1/violations?window=${state.window}${source ? `&source=${encodeURIComponent(source)}` : ""}`); } catch (error) { failed(error); return; }
    const container = $("vio-plans");
    const fragment = document.createDocumentFragment();
    for (const plan of body.plans) {
      const rows = plan.groups.map((g) => {
        const detail = el("tr", { hidden: true }, el("td", { colspan: 6 }, g.samples.map((s) => el("div", { class: "sample" },
          el("p", {}, `${when(s.at)} · ${s.messageId} · ${s.field || "(event)"}: ${s.description}${s.blocked ? " · blocked" : ""}`),
          s.event ? el("pre", {}, pretty(s.event)) : null))));
        const row = el("tr", { class: "clickable" }, el("td", {}, g.event || "–"), el("td", {}, g.type || "–"), el("td", {}, g.violation),
          el("td", { class: "num" }, number(g.count)), el("td", { class: "num" }, number(g.blocked)), el("td", {}, when(g.last)));
        row.addEventListener("click", () => { detail.hidden = !detail.hidden; });
        return [row, detail];
      });
      fragment.append(el("div", { class: "card" },
        el("h3", {}, `${plan.source} · plan ${plan.plan} · ${number(plan.violations)} violation(s)`),
        el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", {}, "Event"), el("th", {}, "Type"), el("th", {}, "Violation"),
          el("th", { class: "num" }, "Count"), el("th", { class: "num" }, "Blocked"), el("th", {}, "Last seen"))), el("tbody", {}, rows.flat()))));
    }
    container.replaceChildren(fragment);
    $("vio-empty").hidden = body.plans.length > 0;
  });
}

// ------------------------------------------------------------------ event lookup

const STATE_BADGE = { delivered: "delivered", retrying: "retrying", dead_lettered: "dead_lettered", filtered: "filtered", routed: "routed", rejected: "rejected" };

async function lookUp(messageId) {
  $("evt-error").textContent = "";
  const result = $("evt-result");
  clear(result);
  let body;
  try { body = await api(`/api/v1/events/${encodeURIComponent(messageId)}`); } catch (error) {
    if (error instanceof Unauthorized) { failed(error); return; }
    $("evt-error").textContent = error.message; return;
  }
  for (const d of body.destinations) {
    result.append(el("div", { class: "card" },
      el("h3", {}, el("a", { href: `#/delivery/${encodeURIComponent(d.destination)}` }, d.name), " ",
        badge(STATE_BADGE[d.state] || "filtered", d.state.replace("_", " ")), d.reason ? ` ${d.reason}` : ""),
      d.attempts.length ? el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, el("th", {}, "Attempt"), el("th", {}, "Outcome"), el("th", {}, "When"), el("th", {}, "Reason"), el("th", { class: "num" }, "HTTP"))),
        el("tbody", {}, d.attempts.map((a) => el("tr", {}, el("td", {}, a.attempt), el("td", {}, a.outcome), el("td", {}, when(a.at)), el("td", {}, a.reason || "–"), el("td", { class: "num" }, a.status ?? "–"))))) : null,
      d.deadLetters.map((l) => el("p", { class: "muted" }, `dead letter ${l.id} (${l.reason}) ${l.live ? "is live" : `was redriven ${when(l.redrivenAt)}`}`))));
  }
  if (body.event) {
    result.append(el("div", { class: "card" }, el("h3", {}, "Payload (after source middleware)"), el("pre", {}, body.event.payload ? pretty(body.event.payload) : "not shown")));
  }
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("evt-form").addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/event/${encodeURIComponent($("evt-id").value.trim())}`; });
  $("vio-source").addEventListener("change", () => route());
  setupDebugger();
  setupDestination();
  window.addEventListener("hashchange", route);
  if (state.token) signIn(state.token); else $("login").hidden = false;
});
