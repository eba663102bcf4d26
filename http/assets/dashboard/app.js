// The durable-jobs operator dashboard: plain JavaScript over the HTTP API it is served by.
// Hash routes: #/ (overview), #/runs, #/run/<id>, #/instances, #/instance/<job>/<id>,
// #/schedules, #/bulk, #/nodes (on PostgreSQL with a shared feed). Live updates come from the
// API's event streams.
"use strict";

const BASE = location.pathname.replace(/\/dashboard(\/.*)?$/, "");
const app = document.getElementById("app");
const STATUSES = ["pending", "leased", "completed", "failed", "cancelled"];
let cleanup = [];

// ---------------------------------------------------------------------------------------------
// Helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "html") el.innerHTML = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(BASE + path, init);
  const text = await res.text();
  let data = null;
  try { data = JSON.parse(text); } catch { data = text; }
  if (!res.ok) {
    if (res.status === 401) { showLogin(); }
    throw new ApiError(res.status, (data && data.error) || text || res.statusText);
  }
  return data;
}

const get = (p) => api("GET", p);
const post = (p, b) => api("POST", p, b);

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => x !== "" && u.append(k, x));
    else if (v !== undefined && v !== null && v !== "") u.set(k, v);
  }
  const s = u.toString();
  return s ? "?" + s : "";
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function badge(status) { return h("span", { class: "badge " + status, "data-status": status }, status); }

function json(value) { return h("pre", { class: "json" }, JSON.stringify(value, null, 2)); }

function progressBar(p) {
  if (!p) return h("span", { class: "muted" }, "–");
  const pct = p.total ? Math.min(100, (100 * p.current) / p.total) : 0;
  return h("div", { title: `${p.current}${p.total ? " / " + p.total : ""} ${p.message || ""}`, "data-testid": "progress" },
    h("div", { class: "progress" }, h("div", { style: `width:${pct}%` })),
    h("span", { class: "muted" }, `${p.current}${p.total ? " / " + p.total : ""}${p.message ? " · " + p.message : ""}`));
}

function toast(message, bad) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function act(label, fn, after) {
  try {
    const result = await fn();
    toast(label + ": done");
    if (after) after(result);
  } catch (e) {
    toast(label + ": " + e.message, true);
  }
}

/// An event stream that stays open across page changes until the route changes.
function stream(path, onEvent) {
  const es = new EventSource(BASE + path, { withCredentials: true });
  const live = document.getElementById("live");
  es.onopen = () => live.classList.add("on");
  es.onerror = () => live.classList.remove("on");
  es.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch { /* not ours */ } };
  cleanup.push(() => { es.close(); live.classList.remove("on"); });
  return es;
}

function debounce(fn, ms) {
  let t = null;
  const wrapped = () => { clearTimeout(t); t = setTimeout(fn, ms); };
  cleanup.push(() => clearTimeout(t));
  return wrapped;
}

function showLogin() {
  for (const c of cleanup.splice(0)) c();
  app.replaceChildren(h("div", { class: "card login" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This API needs a token."),
    h("form", { onsubmit: (e) => {
      e.preventDefault();
      const token = e.target.token.value.trim();
      document.cookie = "durable_jobs_token=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
      route();
    } },
      h("input", { name: "token", type: "password", placeholder: "token", autocomplete: "current-password", "data-testid": "token" }),
      h("button", { class: "primary", type: "submit", "data-testid": "sign-in" }, "Sign in"))));
}

document.getElementById("logout").addEventListener("click", () => {
  document.cookie = "durable_jobs_token=; path=/; max-age=0";
  showLogin();
});
document.getElementById("logout").hidden = !document.cookie.includes("durable_jobs_token=");

// ---------------------------------------------------------------------------------------------
// Overview

async function overview() {
  const [stats, jobs] = await Promise.all([get("/stats"), get("/jobs")]);
  const runs = stats.runs;
  const sum = (k) => runs.reduce((n, r) => n + (r[k] || 0), 0);
  const oldest = Math.max(0, ...runs.map((r) => r.oldestPendingAge || 0));
  const lag = Math.max(0, ...stats.instances.map((i) => i.alarmLag || 0));
  const tile = (n, l, id) => h("div", { class: "tile", "data-testid": id }, h("div", { class: "n" }, n), h("div", { class: "l" }, l));
  const view = h("div", {},
    h("h1", {}, "Overview"),
    h("div", { class: "tiles" },
      tile(jobs.length, "jobs", "tile-jobs"),
      tile(sum("pending") + sum("leased"), "runs active", "tile-active"),
      tile(sum("completedInWindow"), "completed, last hour", "tile-completed"),
      tile(sum("failedInWindow"), "failed, last hour", "tile-failed"),
      tile(runs.reduce((n, r) => n + r.throughputPerMinute, 0).toFixed(1), "runs / min", "tile-throughput"),
      tile(ago(oldest), "oldest pending", "tile-oldest"),
      tile(ago(lag), "alarm lag", "tile-lag"),
      tile(stats.instances.reduce((n, i) => n + i.total, 0), "instances", "tile-instances")),
    h("h2", {}, "Step jobs"),
    h("table", { "data-testid": "overview-runs" },
      h("thead", {}, h("tr", {}, ["job", "pending", "leased", "completed", "failed", "cancelled", "done / h", "failed / h", "per min", "oldest pending"].map((c, i) => h("th", { class: i ? "num" : "" }, c)))),
      h("tbody", {}, runs.map((r) => h("tr", { "data-job": r.jobName },
        h("td", {}, h("a", { href: "#/runs?job=" + encodeURIComponent(r.jobName) }, r.jobName)),
        ...["pending", "leased", "completed", "failed", "cancelled", "completedInWindow", "failedInWindow"].map((k) =>
          h("td", { class: "num" }, k === "failed" && r[k] ? h("a", { href: `#/runs?job=${encodeURIComponent(r.jobName)}&status=failed`, class: "error" }, r[k]) : r[k])),
        h("td", { class: "num" }, r.throughputPerMinute.toFixed(2)),
        h("td", { class: "num" }, ago(r.oldestPendingAge)))))),
    h("h2", {}, "Instance jobs"),
    h("table", { "data-testid": "overview-instances" },
      h("thead", {}, h("tr", {}, ["kind", "job", "instances", "scheduled", "retrying", "due now", "alarm lag", "next alarm"].map((c, i) => h("th", { class: i > 1 && i < 7 ? "num" : "" }, c)))),
      h("tbody", {}, stats.instances.map((i) => h("tr", { "data-job": i.job },
        h("td", {}, i.kind),
        h("td", {}, h("a", { href: "#/instances?job=" + encodeURIComponent(i.job) }, i.job)),
        h("td", { class: "num" }, i.total), h("td", { class: "num" }, i.scheduled),
        h("td", { class: "num" }, i.retrying ? h("a", { class: "error", href: `#/instances?job=${encodeURIComponent(i.job)}&status=retrying` }, i.retrying) : 0),
        h("td", { class: "num" }, i.due), h("td", { class: "num" }, ago(i.alarmLag)), h("td", {}, when(i.nextAlarm)))))),
    h("p", { class: "muted" }, `As of ${when(stats.now)}; window ${stats.windowSeconds / 3600} h.`));
  return view;
}

// ---------------------------------------------------------------------------------------------
// Runs

async function runsPage(params) {
  const jobs = (await get("/jobs")).filter((j) => j.kind === "step");
  const pageSize = 20;
  const state = {
    job: params.get("job") || "", status: params.get("status") || "", label: params.get("label") || "",
    search: "", page: Number(params.get("page") || 0),
  };
  const body = h("tbody", {});
  const pager = h("div", { class: "pager" });
  const query = () => {
    const q = { jobName: state.job, status: state.status, limit: pageSize + 1, offset: state.page * pageSize };
    if (state.label.includes("=")) {
      const [k, ...v] = state.label.split("=");
      q["label." + k] = v.join("=");
    }
    return q;
  };
  const setHash = () => {
    const p = new URLSearchParams();
    for (const k of ["job", "status", "label"]) if (state[k]) p.set(k, state[k]);
    if (state.page) p.set("page", state.page);
    history.replaceState(null, "", "#/runs" + (p.toString() ? "?" + p : ""));
  };
  const rows = new Map();
  async function load() {
    setHash();
    if (state.search) {
      try {
        const run = await get("/run" + qs({ runId: state.search }));
        render([run], false);
      } catch { render([], false); }
      return;
    }
    const runs = await get("/runs" + qs(query()));
    render(runs.slice(0, pageSize), runs.length > pageSize);
  }
  function render(runs, more) {
    rows.clear();
    body.replaceChildren(...runs.map((r) => {
      const progress = h("td", {}, progressBar(r.progress));
      const tr = h("tr", { "data-run": r.id, "data-testid": "run-row" },
        h("td", {}, h("a", { href: "#/run/" + r.id, class: "mono" }, r.id)),
        h("td", {}, r.jobName), h("td", {}, badge(r.status)), progress,
        h("td", {}, Object.entries(r.labels || {}).map(([k, v]) => h("span", { class: "badge" }, `${k}=${v}`))),
        h("td", {}, when(r.createdAt)), h("td", { class: "error" }, r.error || ""));
      rows.set(r.id, progress);
      return tr;
    }));
    if (!runs.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No runs.")));
    pager.replaceChildren(...[
      h("button", { disabled: state.page === 0, onclick: () => { state.page--; load(); } }, "← Newer"),
      h("span", { class: "muted" }, `page ${state.page + 1}`),
      h("button", { disabled: !more, onclick: () => { state.page++; load(); } }, "Older →"),
      state.page === 0 ? h("span", { class: "muted" }, "live") : null].filter(Boolean));
  }
  const refresh = debounce(() => { if (state.page === 0 && !state.search) load(); }, 250);
  const es = () => {
    stream("/runs/subscribe" + qs({ jobName: state.job }), (e) => {
      if (e.type === "run:progress" && rows.has(e.runId)) rows.get(e.runId).replaceChildren(progressBar(e.progress));
      else if (e.type.startsWith("run:")) refresh();
    });
  };
  const select = (name, options) => h("select", { name, "data-testid": "filter-" + name, onchange: (e) => { state[name] = e.target.value; state.page = 0; load(); } },
    options.map(([v, l]) => h("option", { value: v, selected: state[name] === v }, l)));
  const view = h("div", {},
    h("h1", {}, "Runs"),
    h("div", { class: "filters" },
      h("label", {}, "Job", select("job", [["", "all jobs"], ...jobs.map((j) => [j.name, j.name])])),
      h("label", {}, "Status", select("status", [["", "any status"], ...STATUSES.map((s) => [s, s])])),
      h("label", {}, "Label", h("input", { name: "label", placeholder: "key=value", value: state.label, "data-testid": "filter-label",
        onchange: (e) => { state.label = e.target.value.trim(); state.page = 0; load(); } })),
      h("label", {}, "Run id", h("input", { name: "search", placeholder: "search by id", "data-testid": "search",
        onchange: (e) => { state.search = e.target.value.trim(); load(); } })),
      h("button", { onclick: load }, "Refresh")),
    h("table", { "data-testid": "runs-table" },
      h("thead", {}, h("tr", {}, ["run", "job", "status", "progress", "labels", "created", "error"].map((c) => h("th", {}, c)))),
      body),
    pager);
  await load();
  es();
  return view;
}

async function runPage(id) {
  const view = h("div", {});
  const actions = h("div", { class: "actions" });
  const summary = h("div", {});
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  const stepsBody = h("tbody", {});
  const logsBody = h("tbody", {});
  const progress = h("div", {});
  let run = null;
  async function load() {
    const [r, steps, logs] = await Promise.all([get("/run" + qs({ runId: id })), get("/steps" + qs({ runId: id })), get("/logs" + qs({ runId: id }))]);
    run = r;
    summary.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "status"), h("dd", { "data-testid": "run-status" }, badge(r.status)),
      h("dt", {}, "job"), h("dd", {}, r.jobName),
      h("dt", {}, "attempt"), h("dd", {}, r.attempt ?? 1),
      h("dt", {}, "labels"), h("dd", {}, JSON.stringify(r.labels)),
      h("dt", {}, "created"), h("dd", {}, when(r.createdAt)),
      h("dt", {}, "started"), h("dd", {}, when(r.startedAt)),
      h("dt", {}, "ended"), h("dd", {}, when(r.completedAt)),
      h("dt", {}, "steps done"), h("dd", {}, r.completedStepCount),
      r.error ? h("dt", {}, "error") : null, r.error ? h("dd", { class: "error", "data-testid": "run-error" }, r.error) : null));
    progress.replaceChildren(progressBar(r.progress));
    const items = [["Created", r.createdAt, "info"]];
    if (r.startedAt) items.push(["Started", r.startedAt, "info"]);
    for (const s of steps) items.push([`Step ${s.index} “${s.name}” ${s.status}`, s.completedAt || s.startedAt, s.status === "completed" ? "ok" : "bad",
      s.completedAt ? `${new Date(s.completedAt) - new Date(s.startedAt)} ms` : ""]);
    if (r.completedAt) items.push([r.status[0].toUpperCase() + r.status.slice(1), r.completedAt, r.status === "completed" ? "ok" : "bad"]);
    timeline.replaceChildren(...items.map(([label, t, cls, extra]) => h("li", { class: cls }, label, h("span", { class: "t" }, when(t), extra ? " · " + extra : ""))));
    stepsBody.replaceChildren(...steps.map((s) => h("tr", {}, h("td", { class: "num" }, s.index), h("td", {}, s.name), h("td", {}, badge(s.status)),
      h("td", {}, s.completedAt ? `${new Date(s.completedAt) - new Date(s.startedAt)} ms` : "–"),
      h("td", { class: "mono" }, s.output === null ? "" : JSON.stringify(s.output)), h("td", { class: "error" }, s.error || ""))));
    if (!steps.length) stepsBody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No steps kept (the engine deletes them when a run ends unless preserve_steps is set).")));
    logsBody.replaceChildren(...logs.map(logRow));
    inputBox.replaceChildren(json(r.input));
    outputBox.replaceChildren(r.status === "completed" ? json(r.output) : h("p", { class: "muted" }, r.error ? "–" : "Not yet."));
    actions.replaceChildren(...[
      r.isActive ? h("button", { class: "danger", "data-testid": "cancel", onclick: () => act("Cancel", () => post("/cancel" + qs({ runId: id })), load) }, "Cancel") : null,
      r.isTerminal ? h("button", { class: "primary", "data-testid": "retrigger", onclick: () => act("Retry", () => post("/retrigger" + qs({ runId: id })), (res) => { location.hash = "#/run/" + res.runId; }) }, "Retry (retrigger)") : null,
      r.isTerminal ? h("button", { "data-testid": "delete", onclick: async () => {
        if (await confirmAction(`Delete run ${id} with its steps and logs?`)) act("Delete", () => api("DELETE", "/run" + qs({ runId: id })), () => { location.hash = "#/runs"; });
      } }, "Delete") : null].filter(Boolean));
  }
  const logRow = (l) => h("tr", {}, h("td", {}, when(l.createdAt || l.timestamp)), h("td", {}, badge(l.level)), h("td", {}, l.stepName || ""), h("td", {}, l.message));
  const inputBox = h("div", {});
  const outputBox = h("div", {});
  view.append(
    h("h1", {}, "Run ", h("span", { class: "mono" }, id)),
    h("div", { class: "card" }, actions),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Summary"), summary, h("h2", {}, "Progress"), progress),
      h("div", { class: "card" }, h("h2", {}, "Timeline"), timeline)),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Input"), inputBox),
      h("div", { class: "card" }, h("h2", {}, "Output"), outputBox)),
    h("h2", {}, "Steps"),
    h("table", { "data-testid": "steps" }, h("thead", {}, h("tr", {}, ["#", "step", "status", "took", "output", "error"].map((c) => h("th", {}, c)))), stepsBody),
    h("h2", {}, "Logs"),
    h("table", { "data-testid": "logs" }, h("thead", {}, h("tr", {}, ["time", "level", "step", "message"].map((c) => h("th", {}, c)))), logsBody));
  await load();
  const reload = debounce(load, 150);
  stream("/subscribe" + qs({ runId: id }), (e) => {
    if (e.runId !== id) return;
    if (e.type === "run:progress") progress.replaceChildren(progressBar(e.progress));
    else if (e.type === "log:write") logsBody.append(logRow(e));
    else reload();
  });
  return view;
}

// ---------------------------------------------------------------------------------------------
// Instances and schedules

const instanceActions = { continuous: ["trigger", "terminate"], debounce: ["flush", "clear"], task: ["trigger", "terminate"] };

async function instancesPage(params) {
  const jobs = (await get("/jobs")).filter((j) => j.kind !== "step");
  const state = { job: params.get("job") || "", status: params.get("status") || "", kind: params.get("kind") || "" };
  const body = h("tbody", {});
  const more = h("div", { class: "pager" });
  let cursor = null;
  async function load(append) {
    const p = new URLSearchParams();
    for (const k of ["kind", "job", "status"]) if (state[k]) p.set(k, state[k]);
    history.replaceState(null, "", "#/instances" + (p.toString() ? "?" + p : ""));
    const page = await get("/instances" + qs({ ...state, limit: 50, cursor: append ? cursor : "" }));
    cursor = page.nextCursor;
    const rows = page.items.map((i) => h("tr", { "data-instance": `${i.job}/${i.id}`, "data-testid": "instance-row" },
      h("td", {}, i.kind), h("td", {}, i.job),
      h("td", {}, h("a", { href: `#/instance/${encodeURIComponent(i.job)}/${encodeURIComponent(i.id)}`, class: "mono" }, i.id)),
      h("td", {}, badge(i.status)), h("td", {}, when(i.nextAlarm)),
      h("td", { class: "num" }, i.retryAttempt || ""), h("td", { class: "error" }, i.lastError || ""),
      h("td", {}, h("div", { class: "actions" }, (instanceActions[i.kind] || []).map((a) => actionButton(i, a, () => load(false)))))));
    if (append) body.append(...rows); else body.replaceChildren(...rows);
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No instances.")));
    more.replaceChildren(cursor ? h("button", { onclick: () => load(true) }, "More") : h("span", { class: "muted" }, "End of list."));
  }
  const select = (name, options) => h("select", { name, "data-testid": "filter-" + name, onchange: (e) => { state[name] = e.target.value; load(false); } },
    options.map(([v, l]) => h("option", { value: v, selected: state[name] === v }, l)));
  const view = h("div", {}, h("h1", {}, "Instances"),
    h("div", { class: "filters" },
      h("label", {}, "Kind", select("kind", [["", "any kind"], ["continuous", "continuous"], ["debounce", "debounce"], ["task", "task"]])),
      h("label", {}, "Job", select("job", [["", "all jobs"], ...jobs.map((j) => [j.name, j.name])])),
      h("label", {}, "State", select("status", [["", "any state"], ["scheduled", "scheduled"], ["retrying", "retrying"], ["idle", "idle"]])),
      h("button", { onclick: () => load(false) }, "Refresh")),
    h("table", { "data-testid": "instances-table" },
      h("thead", {}, h("tr", {}, ["kind", "job", "id", "state", "next alarm", "retry", "last error", "actions"].map((c) => h("th", {}, c)))), body),
    more);
  await load(false);
  stream("/events/subscribe", debounce(() => load(false), 400));
  return view;
}

function actionButton(i, action, after) {
  const danger = action === "terminate" || action === "clear";
  return h("button", { class: danger ? "danger" : "", "data-testid": action, onclick: async () => {
    if (danger && !(await confirmAction(`${action[0].toUpperCase() + action.slice(1)} ${i.kind} instance ${i.job}/${i.id}?`))) return;
    act(`${action} ${i.id}`, () => post(`/instance/${action}` + qs({ job: i.job, id: i.id })), after);
  } }, action);
}

async function instancePage(job, id) {
  const view = h("div", {});
  async function load() {
    let i;
    try { i = await get("/instance" + qs({ job, id })); } catch (e) {
      if (e.status === 404) { view.replaceChildren(h("h1", {}, `${job}/${id}`), h("p", { class: "muted", "data-testid": "gone" }, "This instance no longer exists.")); return; }
      throw e;
    }
    view.replaceChildren(
      h("h1", {}, `${i.kind} `, h("span", { class: "mono" }, `${i.job}/${i.id}`)),
      h("div", { class: "card actions" }, (instanceActions[i.kind] || []).map((a) => actionButton(i, a, load))),
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("dl", { class: "kv" },
          h("dt", {}, "state"), h("dd", {}, badge(i.status)),
          h("dt", {}, "next alarm"), h("dd", { "data-testid": "next-alarm" }, when(i.nextAlarm)),
          h("dt", {}, "created"), h("dd", {}, when(i.createdAt)),
          h("dt", {}, "updated"), h("dd", {}, when(i.updatedAt)),
          h("dt", {}, "runs"), h("dd", {}, i.runCount),
          h("dt", {}, "events"), h("dd", {}, i.eventCount),
          h("dt", {}, "executions"), h("dd", {}, i.executeCount),
          h("dt", {}, "retry attempt"), h("dd", {}, i.retryAttempt || "–"),
          h("dt", {}, "retrying since"), h("dd", {}, when(i.retryStartedAt)),
          h("dt", {}, "last error"), h("dd", { class: "error" }, i.lastError || "–"),
          h("dt", {}, "lease"), h("dd", {}, i.lease ? `${i.lease.owner} until ${when(i.lease.until)}` : "–"))),
        h("div", { class: "card" }, h("h2", {}, "State"), h("div", { "data-testid": "state" }, json(i.state)))));
  }
  await load();
  stream("/events/subscribe" + qs({ job }), (e) => { if (e.id === id) load(); });
  return view;
}

async function schedulesPage() {
  const jobs = (await get("/jobs")).filter((j) => j.kind === "continuous");
  const counts = (await get("/stats")).instances;
  const every = (ms) => ms % 3600000 === 0 ? `every ${ms / 3600000} h` : ms % 60000 === 0 ? `every ${ms / 60000} min` : `every ${ms / 1000} s`;
  return h("div", {}, h("h1", {}, "Schedules"),
    h("table", { "data-testid": "schedules" },
      h("thead", {}, h("tr", {}, ["job", "schedule", "time zone", "on start", "retry", "instances", "retrying", "next run"].map((c) => h("th", {}, c)))),
      h("tbody", {}, jobs.map((j) => {
        const c = counts.find((x) => x.job === j.name) || {};
        return h("tr", {},
          h("td", {}, h("a", { href: "#/instances?job=" + encodeURIComponent(j.name) }, j.name)),
          h("td", { class: "mono" }, j.schedule.cron ? j.schedule.cron : every(j.schedule.every)),
          h("td", {}, j.schedule.timeZone || "–"),
          h("td", {}, j.startImmediately ? "runs at once" : "waits"),
          h("td", {}, j.retry ? `${j.retry.maxAttempts} attempts, ${j.retry.backoff.type}` : "none"),
          h("td", { class: "num" }, c.total || 0), h("td", { class: "num" }, c.retrying || 0),
          h("td", {}, when(c.nextAlarm)));
      }))));
}

// ---------------------------------------------------------------------------------------------
// Bulk actions

async function bulkPage() {
  const jobs = (await get("/jobs")).filter((j) => j.kind === "step");
  const form = h("form", { class: "filters", "data-testid": "bulk-form" },
    h("label", {}, "Action", h("select", { name: "action", "data-testid": "bulk-action" }, ["retrigger", "cancel", "delete"].map((a) => h("option", { value: a }, a)))),
    h("label", {}, "Job", h("select", { name: "job", "data-testid": "bulk-job" }, h("option", { value: "" }, "all jobs"), jobs.map((j) => h("option", { value: j.name }, j.name)))),
    h("label", {}, "Status", h("select", { name: "status", "data-testid": "bulk-status" }, h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)))),
    h("label", {}, "Label", h("input", { name: "label", placeholder: "key=value" })),
    h("button", { type: "submit", class: "primary", "data-testid": "bulk-count" }, "Count matching runs"));
  const result = h("div", { "data-testid": "bulk-result" });
  const request = (dryRun) => {
    const f = new FormData(form);
    const filter = { jobName: f.get("job") ? [f.get("job")] : [], status: f.get("status") ? [f.get("status")] : [], labels: {} };
    const label = String(f.get("label") || "");
    if (label.includes("=")) { const [k, ...v] = label.split("="); filter.labels[k] = v.join("="); }
    return { action: f.get("action"), filter, dryRun };
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const dry = await post("/runs/bulk", request(true));
    const req = request(false);
    result.replaceChildren(h("div", { class: "card" },
      h("p", { "data-testid": "bulk-count-text" }, `${dry.matched} runs match; ${req.action} applies to ${dry.eligible} of them.`),
      dry.eligible ? h("button", { class: "danger", "data-testid": "bulk-apply", onclick: async () => {
        if (!(await confirmAction(`${req.action} ${dry.eligible} runs? This cannot be undone.`))) return;
        const done = await post("/runs/bulk", req);
        result.replaceChildren(h("div", { class: "card", "data-testid": "bulk-done" }, `${req.action}: ${done.done} done, ${done.failed} failed.`));
      } }, `${req.action} ${dry.eligible} runs…`) : null));
  });
  return h("div", {}, h("h1", {}, "Bulk actions"),
    h("p", { class: "muted" }, "Choose what to match; the dashboard counts first, then asks before acting."), form, result);
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// Shows the Nodes link when the API runs on a feed shared by several processes; asked once,
/// after the first page loaded (so signed in).
let nodesAsked = false;
async function showNodesLink() {
  if (nodesAsked) return;
  nodesAsked = true;
  try {
    const nodes = await get("/nodes");
    document.querySelector("[data-nav=nodes]").hidden = !nodes.shared;
  } catch { /* signed out, or an older server: no link */ }
}

async function nodesPage() {
  const view = h("div", {});
  async function load() {
    const n = await get("/nodes");
    if (!n.shared) {
      view.replaceChildren(h("h1", {}, "Nodes"),
        h("p", { class: "muted", "data-testid": "single-process" }, "Single process: this engine runs alone on its store."));
      return;
    }
    const now = new Date(n.now).getTime();
    const since = (iso) => ago(now - new Date(iso).getTime());
    view.replaceChildren(h("h1", {}, "Nodes"),
      h("p", { class: "muted" }, "The processes sharing this store, as their heartbeats last said; refreshed every 5 s."),
      h("table", { "data-testid": "nodes" },
        h("thead", {}, h("tr", {}, ["node", "host", "pid", "joined", "last seen", "leased runs", "leased instances"].map((c) => h("th", {}, c)))),
        h("tbody", {}, n.nodes.map((node) => h("tr", { "data-node": node.id },
          h("td", { class: "mono" }, node.id, node.self ? h("span", { class: "badge ok self" }, "this node") : null),
          h("td", {}, node.host), h("td", { class: "num" }, node.pid),
          h("td", {}, when(node.startedAt)), h("td", {}, since(node.lastSeen) + " ago"),
          h("td", { class: "num" }, node.leasedRuns), h("td", { class: "num" }, node.leasedInstances))))),
      ...(n.otherHolders.length ? [
        h("h2", {}, "Leases held outside the live nodes"),
        h("p", { class: "muted" }, "A process that stopped without leaving holds these until they lapse; then another node takes them over."),
        h("table", { "data-testid": "other-holders" },
          h("thead", {}, h("tr", {}, ["lease owner", "leased runs", "leased instances"].map((c) => h("th", {}, c)))),
          h("tbody", {}, n.otherHolders.map((o) => h("tr", {},
            h("td", { class: "mono" }, o.owner), h("td", { class: "num" }, o.leasedRuns), h("td", { class: "num" }, o.leasedInstances)))))
      ] : []));
  }
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  cleanup.push(() => clearInterval(timer));
  return view;
}

// ---------------------------------------------------------------------------------------------
// Routing

async function route() {
  for (const c of cleanup.splice(0)) c();
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section || (section === "run" && a.dataset.nav === "runs") || (section === "instance" && a.dataset.nav === "instances"));
  }
  app.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    let view;
    if (section === "overview") view = await overview();
    else if (section === "runs") view = await runsPage(params);
    else if (section === "run") view = await runPage(parts[1]);
    else if (section === "instances") view = await instancesPage(params);
    else if (section === "instance") view = await instancePage(parts[1], parts.slice(2).join("/"));
    else if (section === "schedules") view = await schedulesPage();
    else if (section === "bulk") view = await bulkPage();
    else if (section === "nodes") view = await nodesPage();
    else view = h("p", {}, "Nothing here.");
    app.replaceChildren(view);
    app.dataset.ready = section;
    showNodesLink();
    document.getElementById("logout").hidden = !document.cookie.includes("durable_jobs_token=");
    if (section === "overview") stream("/runs/subscribe", debounce(route, 1500));
  } catch (e) {
    if (e.status === 401) return;
    app.replaceChildren(h("p", { class: "error" }, "Could not load this page: " + e.message));
  }
}

window.addEventListener("hashchange", route);
route();
