/* airflow-neo "Compilation jobs" page: the jobs list, one job's page, a task instance's jobs.
 *
 * Invariants:
 * - data reaches the DOM only through textContent / attributes (el(), svg()); never innerHTML;
 * - links taken from the API pass safeHref(): relative paths, or http(s) URLs only;
 * - every URL is relative to the page (API base: ../api/), requests send same-origin credentials;
 * - the list's filters live in the query string (history.replaceState), so a reload keeps them;
 * - one refresh timer at a time: each load cancels the pending one, and a response older than the
 *   latest request is dropped (refresher.seq);
 * - body[data-state] is "loading" until a view has rendered, then "ready" (a hook for tests).
 */
"use strict";

const API_BASE = new URL("../api/", location.href);
const REFRESH_MS = 5000;
const STATUSES = ["STARTING", "INPROGRESS", "COMPLETED", "FAILED", "STOPPING", "STOPPED"];
const RUNNING = new Set(["STARTING", "INPROGRESS", "STOPPING"]);
const PAGE_SIZES = ["10", "20", "50", "100"];
const LIST_FILTERS = ["status", "name_contains", "created_after", "created_before", "max_results"];

/* ------------------------------------------------------------------ API client */

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

function apiUrl(path, params = {}) {
  const url = new URL(path, API_BASE);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url;
}

async function api(path, { params = {}, method = "GET" } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, params), {
      method, credentials: "same-origin", headers: { Accept: "application/json" },
    });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the Airflow API server (${err.message}); check the connection and reload the page`);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, detailOf(body, response));
  return body;
}

function detailOf(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI's validation errors
    return detail.map((item) => `${(item.loc || []).slice(1).join(".")}: ${item.msg}`).join("; ");
  }
  return `HTTP ${response.status} ${response.statusText || ""}`.trim();
}

const jobPath = (backend, name) => `jobs/${encodeURIComponent(backend)}/${encodeURIComponent(name)}`;

/* ------------------------------------------------------------------ DOM helpers */

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return append(node, children);
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return append(node, children);
}

function safeHref(url) {
  if (typeof url !== "string" || !url) return null;
  if (url.startsWith("/") && !url.startsWith("//")) return url;
  if (url.startsWith("?")) return url;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch { return null; }
}

function errorBox(err) {
  const text = err instanceof ApiError
    ? (err.status === 401 ? "Sign in to Airflow to see compilation jobs" : err.detail)
    : `Something went wrong on this page: ${err && err.message ? err.message : err}`;
  return el("div", { class: "error", "data-testid": "error", role: "alert" }, text);
}

function notice(text, kind = "info") {
  return el("div", { class: `notice ${kind}`, "data-testid": "notice", role: "status" }, text);
}

function badge(status, testid) {
  const tone = { COMPLETED: "ok", FAILED: "bad", STOPPED: "off" }[status] || (RUNNING.has(status) ? "run" : "off");
  return el("span", { class: `badge ${tone}`, "data-testid": testid }, status || "UNKNOWN");
}

function facts(rows) {
  const list = el("dl", { class: "facts" });
  for (const [label, value, testid] of rows) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("dt", {}, label), el("dd", { "data-testid": testid }, value));
  }
  return list;
}

function section(title, testid, ...children) {
  return el("section", { class: "card", "data-testid": testid }, el("h2", {}, title), ...children);
}

function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function ready() { document.body.dataset.state = "ready"; }

/* ------------------------------------------------------------------ formatting */

const NON_FINITE = { inf: "∞", "-inf": "−∞", nan: "NaN" };

function finite(value) { return typeof value === "number" && Number.isFinite(value) ? value : null; }

function fmtNum(value, digits = 3) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return NON_FINITE[value] || value;
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(digits)));
}

function fmtFixed(value, decimals) {
  return finite(value) === null ? fmtNum(value) : value.toFixed(decimals);
}

function fmtMs(value) {
  const ms = finite(value);
  if (ms === null) return fmtNum(value);
  return `${ms.toFixed(ms < 10 ? 3 : ms < 100 ? 2 : 1)} ms`;
}

function fmtDuration(seconds) {
  const s = finite(seconds);
  if (s === null) return seconds === null || seconds === undefined ? "—" : fmtNum(seconds);
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

function jobDuration(job) {
  if (job.duration_seconds !== null && job.duration_seconds !== undefined) return fmtDuration(job.duration_seconds);
  const started = Date.parse(job.created);
  if (RUNNING.has(job.status) && !Number.isNaN(started)) {
    return `${fmtDuration(Math.max(0, (Date.now() - started) / 1000))} so far`;
  }
  return "—";
}

function fmtTime(iso, seconds = true) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}${seconds ? `:${pad(date.getSeconds())}` : ""}`;
  return el("time", { datetime: iso, title: iso }, text);
}

function truncate(text, length) {
  const value = String(text);
  return value.length > length ? `${value.slice(0, length - 1)}…` : value;
}

/* datetime-local value (local time) <-> ISO 8601 UTC for the API and the query string */
function toIsoUtc(localValue) {
  if (!localValue) return "";
  const date = new Date(localValue);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function toLocalInput(iso) {
  const date = new Date(iso || "");
  if (!iso || Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

/* ------------------------------------------------------------------ query string and refresh */

function query() { return new URLSearchParams(location.search); }

function setQuery(updates) {
  const params = query();
  for (const [key, value] of Object.entries(updates)) {
    if (value === null || value === undefined || value === "") params.delete(key);
    else params.set(key, value);
  }
  history.replaceState(null, "", `?${params.toString()}`);
}

function viewHref(params) { return `?${new URLSearchParams(params).toString()}`; }
const jobHref = (job) => viewHref({ view: "job", backend: job.backend, name: job.name });
const listHref = (backend) => viewHref(backend ? { view: "list", backend } : { view: "list" });

const refresher = {
  timer: null,
  seq: 0,
  next() { this.cancel(); this.seq += 1; return this.seq; },
  current(seq) { return seq === this.seq; },
  cancel() { clearTimeout(this.timer); this.timer = null; },
  schedule(load) { this.cancel(); this.timer = setTimeout(load, REFRESH_MS); },
};

/* ------------------------------------------------------------------ shared job pieces */

function createdBy(job) {
  const by = job.created_by;
  if (!by) return el("span", { class: "muted", "data-testid": "created-by" }, "outside Airflow");
  let text = `${by.dag_id} / ${by.task_id}`;
  if (by.map_index !== undefined && by.map_index !== null && Number(by.map_index) >= 0) text += ` [${by.map_index}]`;
  const href = safeHref(by.url);
  if (!href) return el("span", { "data-testid": "created-by", title: by.run_id || "" }, text);
  return el("a", { href, target: "_top", "data-testid": "created-by", title: `run ${by.run_id || "?"}`,
    onclick: (event) => openInAirflow(event, href) }, text);
}

/* Airflow shows this page in a sandboxed iframe (no top navigation): a link into Airflow's own UI
   pushes the path onto Airflow's history and tells its router, as a back/forward step would. */
function openInAirflow(event, href) {
  if (window.top === window || !href.startsWith("/")) return;
  try {
    const top = window.top;
    const idx = ((top.history.state && top.history.state.idx) || 0) + 1;
    top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx }, "", href);
    top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
    event.preventDefault();
  } catch (err) {
    /* another origin: leave the link to the browser */
  }
}

function stopButton(job, onStopped) {
  return el("button", {
    type: "button", class: "danger", "data-testid": "stop-button", "data-job-name": job.name,
    onclick: () => stopJob(job, onStopped),
  }, "Stop");
}

async function stopJob(job, onStopped) {
  if (!window.confirm(`Stop compilation job ${job.name}?`)) return;
  let message;
  try {
    const result = await api(`${jobPath(job.backend, job.name)}/stop`, { method: "POST" });
    message = notice(`Stop requested: ${result.name || job.name} is ${result.status || "STOPPING"}`, "ok");
  } catch (err) {
    message = errorBox(err);
  }
  onStopped(message);
}

/* ------------------------------------------------------------------ view: jobs list */

async function listView(root) {
  const q = query();
  let backends;
  try {
    backends = await api("backends");
  } catch (err) {
    root.replaceChildren(el("h1", {}, "Compilation jobs"), errorBox(err));
    return ready();
  }
  const names = (backends.backends || []).map((b) => b.name);
  const wanted = q.get("backend");
  const ctx = {
    backend: names.includes(wanted) ? wanted : backends.default || names[0] || "",
    filters: Object.fromEntries(LIST_FILTERS.map((key) => [key, q.get(key) || ""])),
    token: null, tokens: [], notices: el("div", { class: "notices" }), results: el("div", { class: "results" }),
  };
  setQuery({ view: "list", backend: ctx.backend });
  const form = filterForm(backends.backends || [], ctx);
  root.replaceChildren(el("h1", {}, "Compilation jobs"), form, ctx.notices, ctx.results);
  await loadJobs(ctx);
}

function filterForm(backends, ctx) {
  const field = (label, control) => el("label", { class: "field" }, el("span", {}, label), control);
  const backend = el("select", { "data-testid": "backend-select", name: "backend" },
    backends.map((b) => el("option", { value: b.name, selected: b.name === ctx.backend }, b.label || b.name)));
  const status = el("select", { "data-testid": "status-filter", name: "status" },
    el("option", { value: "" }, "any"),
    STATUSES.map((s) => el("option", { value: s, selected: s === ctx.filters.status }, s)));
  const name = el("input", {
    type: "search", "data-testid": "name-filter", name: "name_contains", placeholder: "name contains",
    value: ctx.filters.name_contains,
  });
  const after = el("input", { type: "datetime-local", "data-testid": "created-after", value: toLocalInput(ctx.filters.created_after) });
  const before = el("input", { type: "datetime-local", "data-testid": "created-before", value: toLocalInput(ctx.filters.created_before) });
  const size = el("select", { "data-testid": "page-size", name: "max_results" },
    PAGE_SIZES.map((n) => el("option", { value: n, selected: n === (ctx.filters.max_results || "20") }, n)));
  const apply = () => {
    ctx.backend = backend.value;
    ctx.filters = {
      status: status.value, name_contains: name.value.trim(), created_after: toIsoUtc(after.value),
      created_before: toIsoUtc(before.value), max_results: size.value === "20" ? "" : size.value,
    };
    ctx.token = null;
    ctx.tokens = [];
    ctx.notices.replaceChildren();
    setQuery({ view: "list", backend: ctx.backend, ...ctx.filters });
    loadJobs(ctx);
  };
  backend.addEventListener("change", apply);
  const form = el("form", { class: "filters", role: "search", onsubmit: (event) => { event.preventDefault(); apply(); } },
    field("Backend", backend), field("Status", status), field("Name", name),
    field("Created after", after), field("Created before", before), field("Page size", size),
    el("button", { type: "submit", class: "primary", "data-testid": "apply-filters" }, "Apply"));
  return form;
}

async function loadJobs(ctx) {
  const seq = refresher.next();
  ctx.results.setAttribute("aria-busy", "true");
  let data;
  try {
    data = await api("jobs", { params: { backend: ctx.backend, ...ctx.filters, next_token: ctx.token } });
  } catch (err) {
    if (!refresher.current(seq)) return;
    ctx.results.replaceChildren(errorBox(err));
    ctx.results.removeAttribute("aria-busy");
    return ready();
  }
  if (!refresher.current(seq)) return;
  fill(ctx.results, jobsResults(data, ctx));
  ctx.results.removeAttribute("aria-busy");
  if (data.running > 0) refresher.schedule(() => loadJobs(ctx));
  ready();
}

function jobsResults(data, ctx) {
  const jobs = data.jobs || [];
  const notes = el("div", { class: "notes" });
  if (data.hidden > 0) {
    notes.append(el("span", { class: "note", "data-testid": "hidden-note" },
      `${data.hidden} job${data.hidden === 1 ? "" : "s"} hidden: you may not read them`));
  }
  if (data.running > 0) {
    notes.append(el("span", { class: "note live", "data-testid": "refresh-note" }, "refreshing every 5 s while jobs run"));
  }
  const body = jobs.length
    ? jobsTable(jobs, ctx)
    : el("p", { class: "empty", "data-testid": "empty" }, "No compilation jobs match these filters");
  return [notes, body, pager(data, ctx)];
}

function jobsTable(jobs, ctx) {
  const head = ["Name", "Status", "Framework", "Target", "Created", "Ended", "Duration", "Created by", ""];
  return el("div", { class: "table-wrap" }, el("table", { class: "jobs", "data-testid": "jobs-table" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, jobs.map((job) => jobRow(job, ctx)))));
}

function jobRow(job, ctx) {
  const name = el("td", { class: "name" }, el("a", { href: jobHref(job) }, job.name));
  if (job.failure_reason) {
    name.append(el("div", { class: "failure-line", title: job.failure_reason, "data-testid": "row-failure-reason" },
      truncate(job.failure_reason, 140)));
  }
  const onStopped = (message) => { ctx.notices.replaceChildren(message); loadJobs(ctx); };
  return el("tr", { "data-testid": "job-row", "data-job-name": job.name, "data-status": job.status },
    name, el("td", {}, badge(job.status)), el("td", {}, job.framework || "—"), el("td", {}, job.target || "—"),
    el("td", { class: "nowrap" }, fmtTime(job.created, false)), el("td", { class: "nowrap" }, fmtTime(job.ended, false)),
    el("td", {}, jobDuration(job)), el("td", { class: "by" }, createdBy(job)),
    el("td", { class: "actions" }, job.can_stop ? stopButton(job, onStopped) : null));
}

function pager(data, ctx) {
  const go = (token, tokens) => { ctx.token = token; ctx.tokens = tokens; loadJobs(ctx); };
  const prev = el("button", {
    type: "button", "data-testid": "prev-page", disabled: ctx.tokens.length === 0,
    onclick: () => go(ctx.tokens[ctx.tokens.length - 1], ctx.tokens.slice(0, -1)),
  }, "‹ Previous page");
  const next = el("button", {
    type: "button", "data-testid": "next-page", disabled: !data.next_token,
    onclick: () => go(data.next_token, [...ctx.tokens, ctx.token]),
  }, "Next page ›");
  return el("nav", { class: "pager", "aria-label": "pages" }, prev, el("span", { class: "muted" }, `page ${ctx.tokens.length + 1}`), next);
}

/* ------------------------------------------------------------------ view: one job */

async function jobView(root, backend, name) {
  if (!backend || !name) {
    root.replaceChildren(el("a", { href: listHref(backend) }, "Back to the list"),
      errorBox(new ApiError(400, `backend and name: got backend=${JSON.stringify(backend)}, name=${JSON.stringify(name)}; both are required`)));
    return ready();
  }
  const ctx = { root, backend, name, notices: el("div", { class: "notices" }) };
  await loadJob(ctx);
}

async function loadJob(ctx) {
  const seq = refresher.next();
  let data;
  try {
    data = await api(jobPath(ctx.backend, ctx.name));
  } catch (err) {
    if (!refresher.current(seq)) return;
    ctx.root.replaceChildren(el("p", {}, el("a", { href: listHref(ctx.backend) }, "‹ Back to the list")), errorBox(err));
    return ready();
  }
  if (!refresher.current(seq)) return;
  const opened = [...ctx.root.querySelectorAll("details[data-key]")].filter((d) => d.open).map((d) => d.dataset.key);
  fill(ctx.root, jobPage(data, ctx));
  for (const key of opened) {
    const details = ctx.root.querySelector(`details[data-key="${key}"]`);
    if (details) details.open = true;
  }
  if (RUNNING.has(data.job.status)) refresher.schedule(() => loadJob(ctx));
  ready();
}

function jobPage(data, ctx) {
  const job = data.job;
  const payload = data.payload || {};
  const running = RUNNING.has(job.status);
  const onStopped = (message) => { ctx.notices.replaceChildren(message); loadJob(ctx); };
  const header = el("header", { class: "job-header" },
    el("p", { class: "crumbs" }, el("a", { href: listHref(job.backend), "data-testid": "back-link" }, "‹ Back to the list")),
    el("div", { class: "title-row" },
      el("h1", { "data-testid": "job-title" }, job.name), badge(job.status, "job-status"),
      job.can_stop ? stopButton(job, onStopped) : null,
      running ? el("span", { class: "note live", "data-testid": "refresh-note" }, "refreshing every 5 s while the job runs") : null));
  const failure = job.failure_reason
    ? el("div", { class: "failure", "data-testid": "failure-reason", role: "alert" },
      el("strong", {}, "Failure reason"), el("pre", {}, job.failure_reason))
    : null;
  return [header, ctx.notices, failure, jobFacts(data, payload), artifactSection(payload, data.report),
    reportSections(data.report, running), logSection(data.log_tail), payloadSection(payload)];
}

function jobFacts(data, payload) {
  const job = data.job;
  const consoleHref = safeHref(data.console_url);
  return section("Job", "job-facts", facts([
    ["Backend", job.backend], ["Framework", job.framework || "—"], ["Target", job.target || "—"],
    ["Created", fmtTime(job.created)], ["Started", payload.CompilationStartTime ? fmtTime(payload.CompilationStartTime) : null],
    ["Ended", fmtTime(job.ended || payload.CompilationEndTime)], ["Duration", jobDuration(job)],
    ["Created by", createdBy(job)],
    ["Model", (payload.InputConfig || {}).S3Uri], ["Output location", (payload.OutputConfig || {}).S3OutputLocation],
    ["Console", consoleHref ? el("span", {},
      el("a", { href: consoleHref, target: "_blank", rel: "noopener", "data-testid": "console-link" },
        "Open in the SageMaker console ↗"),
      /* Airflow's iframe blocks new windows: the address, to copy */
      el("code", { class: "wrap muted" }, " ", consoleHref)) : null],
  ]));
}

function artifactSection(payload, report) {
  if (payload.CompilationJobStatus !== "COMPLETED") return null; /* only a completed job published one */
  const uri = (payload.ModelArtifacts || {}).S3ModelArtifacts || (report && report.artifact);
  const digest = (payload.ModelDigests || {}).ArtifactDigest || (report && report.digest);
  if (!uri && !digest) return null;
  return section("Artifact", "artifact", facts([
    ["URI", uri ? el("code", { class: "wrap" }, uri) : null, "artifact-uri"],
    ["Digest", digest ? el("code", { class: "wrap" }, digest) : null, "artifact-digest"],
  ]));
}

function reportSections(report, running) {
  if (!report) {
    return section("Report", "report", el("p", { class: "muted" },
      running ? "The report appears when the job has finished." : "This job has no report."));
  }
  if (!report.available) {
    return section("Report", "report", el("p", { class: "muted", "data-testid": "report-reason" }, `No report: ${report.reason || "unknown reason"}`));
  }
  return [verificationSection(report.verification), profileSection(report.profile), deviceCodeSection(report.device_code)];
}

/* ------------------------------------------------------------------ report sections */

function verificationSection(v) {
  if (!v) return section("Verification", "verification", el("p", { class: "muted" }, "No verification"));
  if (v.not_verified && v.passed !== true && v.passed !== false) {
    return section("Verification", "verification", el("p", {}, badge("NOT VERIFIED"), " ", v.not_verified));
  }
  const verdict = { true: ["passed", "ok"], false: ["FAILED", "bad"] }[String(v.passed)] || ["no verdict", "off"];
  const head = el("p", { class: "verdict" }, el("span", { class: `badge ${verdict[1]}`, "data-testid": "verdict" }, verdict[0]),
    v.emulated ? el("span", { class: "muted" }, ` under emulation (${v.emulated})`) : null);
  const worst = v.worst;
  const worstText = worst ? `${worst.name}: ${worst.problem || `max abs diff ${fmtNum(worst.max_abs_diff)} vs tolerance ${fmtNum(worst.tolerance)}`}`
    + (worst.passed === false ? " (failed)" : "") : null;
  return section("Verification", "verification", head, facts([
    ["Mode", v.mode], ["Reference", v.reference], ["Inputs", v.inputs],
    ["Input sizes", v.input_sizes], ["Outputs", v.outputs],
    ["Worst output", worstText, "worst-output"],
    ["Max rel diff", worst && worst.max_rel_diff !== null && worst.max_rel_diff !== undefined ? fmtNum(worst.max_rel_diff) : null],
    ["Time", v.seconds !== null && v.seconds !== undefined ? `${fmtNum(v.seconds)} s` : null],
    ["Not verified", v.not_verified],
  ]));
}

function speedupText(p) {
  const name = (p.baseline && p.baseline.name) || "the baseline";
  if (p.speedup === null || p.speedup === undefined) return null;
  if (p.speedup === "inf") return [`∞x faster than ${name}`, "ok"];
  const s = finite(p.speedup);
  if (s === null) return [`${fmtNum(p.speedup)}x against ${name}`, "off"];
  if (s >= 1) return [`${fmtNum(s)}x faster than ${name}`, "ok"];
  return [`${fmtNum(s)}x: slower than ${name} (${fmtNum(p.slowdown)}x its latency)`, "bad"];
}

function profileSection(p) {
  if (!p) return section("Profile", "profile", el("p", { class: "muted" }, "No profile"));
  if (p.skipped) return section("Profile", "profile", el("p", { class: "muted" }, `Profile skipped: ${p.skipped}`));
  const base = p.baseline || {};
  const baseText = base.skipped ? `skipped: ${base.skipped}`
    : `${base.name} p50 ${fmtMs(base.p50_ms)}` + (base.runs ? ` over ${base.runs} run(s)` : "");
  const speed = speedupText(p);
  return section("Profile", "profile",
    speed ? el("p", { class: `speedup ${speed[1]}`, "data-testid": "speedup" }, speed[0]) : null,
    facts([
      ["Latency", `p50 ${fmtMs(p.p50_ms)} · p90 ${fmtMs(p.p90_ms)} · p99 ${fmtMs(p.p99_ms)}`],
      ["Runs", p.runs], ["Threads", p.threads],
      ["Load time", p.load_seconds !== null && p.load_seconds !== undefined ? `${fmtNum(p.load_seconds)} s` : null],
      ["Peak RSS", p.peak_rss_mb !== null && p.peak_rss_mb !== undefined ? `${fmtFixed(p.peak_rss_mb, 0)} MB` : null],
      ["Baseline", baseText],
    ]),
    (p.top_kernels || []).length ? kernelChart(p.top_kernels) : null);
}

function kernelChart(kernels) {
  const rowH = 24, labelW = 230, barW = 300, width = labelW + barW + 170;
  const max = Math.max(1e-12, ...kernels.map((k) => finite(k.total_ms) || 0));
  const value = (k) => `${fmtMs(k.total_ms)} · ${fmtFixed(k.percent, 1)}%`;
  const label = "Time per kernel: " + kernels.map((k) => `${k.name} ${value(k)}`).join("; ");
  const chart = svg("svg", {
    role: "img", "aria-label": label, viewBox: `0 0 ${width} ${kernels.length * rowH + 4}`,
    width: "100%", class: "kernel-chart", "data-testid": "kernel-chart", preserveAspectRatio: "xMinYMin meet",
  });
  kernels.forEach((k, i) => {
    const y = i * rowH + 2;
    const len = Math.max(1, (barW * (finite(k.total_ms) || 0)) / max);
    chart.append(svg("g", { class: "kernel" },
      svg("title", {}, `${k.name}: ${value(k)}, ${k.calls ?? "?"} call(s)`),
      svg("text", { x: labelW - 8, y: y + rowH / 2, "text-anchor": "end", "dominant-baseline": "middle", class: "label" }, truncate(k.name || "?", 32)),
      svg("rect", { x: labelW, y: y + 3, width: len.toFixed(1), height: rowH - 8, rx: 2, class: "bar" }),
      svg("text", { x: labelW + len + 6, y: y + rowH / 2, "dominant-baseline": "middle", class: "value" }, value(k))));
  });
  return el("figure", { class: "chart" }, el("figcaption", {}, "Time per kernel (top kernels)"), chart);
}

function deviceCodeSection(code) {
  if (!code) return null;
  let rows;
  if (code.kind === "cuda") {
    rows = [["Kind", "CUDA cubin"], ["Architecture", code.arch], ["Kernels", code.kernels],
      ["Half-precision kernels", code.float16_kernels], ["NVRTC", code.nvrtc], ["Driver note", code.driver_note]];
  } else if (code.kind === "coreml") {
    rows = [["Kind", "Core ML"], ["Model type", code.model_type], ["Precision", code.precision], ["Labels", code.labels]];
  } else {
    rows = Object.entries(code).map(([key, val]) => [key, typeof val === "object" ? JSON.stringify(val) : val]);
  }
  return section("Device code", "device-code", facts(rows));
}

function logSection(logTail) {
  if (!logTail) return null;
  return section("Log (last lines)", "log-section", el("pre", { class: "log", "data-testid": "log-tail" }, logTail));
}

function payloadSection(payload) {
  return el("details", { class: "card", "data-testid": "payload", "data-key": "payload" },
    el("summary", {}, "Describe payload (JSON)"), el("pre", { class: "json" }, JSON.stringify(payload, null, 2)));
}

/* ------------------------------------------------------------------ view: task instance */

async function taskInstanceView(root) {
  const q = query();
  const params = Object.fromEntries(["dag_id", "run_id", "task_id", "map_index"].map((key) => [key, q.get(key) || ""]));
  /* Airflow leaves {MAP_INDEX} unfilled on the tab of an unmapped task */
  if (!/^-?\d+$/.test(params.map_index)) params.map_index = "-1";
  let data;
  try {
    data = await api("task-instance", { params });
  } catch (err) {
    root.replaceChildren(errorBox(err));
    return ready();
  }
  const jobs = data.jobs || [];
  if (jobs.length === 1) return jobView(root, jobs[0].backend, jobs[0].name);
  if (!jobs.length) {
    root.replaceChildren(el("p", { class: "empty", "data-testid": "empty" }, "This task instance created no compilation job"));
    return ready();
  }
  root.replaceChildren(el("h1", {}, `Compilation jobs of ${params.task_id}`),
    el("ul", { class: "ti-jobs", "data-testid": "ti-jobs" }, jobs.map((job) => el("li", { "data-testid": "job-row", "data-job-name": job.name, "data-status": job.status },
      el("a", { href: jobHref(job) }, job.name), " ", badge(job.status), " ", el("span", { class: "muted" }, fmtTime(job.created))))));
  return ready();
}

/* ------------------------------------------------------------------ entry point */

async function main() {
  const root = document.getElementById("app");
  const q = query();
  const view = q.get("view") || "list";
  try {
    if (view === "job") await jobView(root, q.get("backend"), q.get("name"));
    else if (view === "task_instance") await taskInstanceView(root);
    else if (view === "list") await listView(root);
    else {
      root.replaceChildren(errorBox(new ApiError(400, `view: got ${JSON.stringify(view)}; must be list, job or task_instance`)));
      ready();
    }
  } catch (err) {
    root.replaceChildren(errorBox(err));
    ready();
  }
}

document.addEventListener("DOMContentLoaded", main);
