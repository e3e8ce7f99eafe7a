// The AgentHalt dashboard: plain ES module, no dependencies, talking only to the server that
// served it. The token lives in sessionStorage and only ever travels in a header or as the event
// feed's first message: never in a URL.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "agenthalt-token";
const THEME_KEY = "agenthalt-theme";
const MAX_FEED = 200;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: null,
  paused: false,
  socket: null,
  retry: 500,
  lastTotal: null,
  lastAt: 0,
  rates: [],
  approvals: new Map(),
  editing: new Set(),
  timers: [],
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(message) {
  const banner = $("error");
  banner.textContent = message;
  banner.hidden = !message;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  } catch (e) {
    throw new HttpError(0, "the server cannot be reached");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    if (response.status === 401) signOut(state.token ? "the token was refused: sign in again" : "");
    throw new HttpError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// ---------------------------------------------------------------------------------------------
// Sign-in, theme

function signOut(message) {
  state.token = "";
  state.role = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopLive();
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signout").hidden = true;
  $("who").textContent = "";
  showError(message || "");
}

async function start() {
  let me;
  try {
    me = await api("/v1/me");
  } catch (e) {
    if (e.status === 401) return;
    showError(`${e.message}; retrying`);
    state.timers.push(setTimeout(start, 2000));
    return;
  }
  if (me.role === "agent") {
    signOut("an agent's token cannot use the dashboard: use a viewer or approver token");
    return;
  }
  showError("");
  state.role = me.role;
  $("who").textContent = `${me.name} (${me.role})`;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = !state.token;
  document.body.dataset.role = me.role;
  connect();
  refresh();
  state.timers.push(setInterval(refresh, 2000));
  state.timers.push(setInterval(tickCountdowns, 1000));
}

function stopLive() {
  for (const t of state.timers) { clearInterval(t); clearTimeout(t); }
  state.timers = [];
  if (state.socket) { state.socket.onclose = null; state.socket.close(); state.socket = null; }
}

function mayDecide() {
  return state.role === "approver" || state.role === "admin";
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("theme").textContent = theme === "dark" ? "Light" : "Dark";
}

// ---------------------------------------------------------------------------------------------
// The live feed

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/events`);
  state.socket = socket;
  setConnection("connecting");
  socket.onopen = () => {
    if (state.token) socket.send(JSON.stringify({ token: state.token }));
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (event.type === "hello") { setConnection("live"); state.retry = 500; showError(""); }
    else if (event.type === "evaluation") addToFeed(event);
    else if (event.type === "approval") loadApprovals();
    else if (event.type === "policy") refresh();
  };
  socket.onclose = (close) => {
    state.socket = null;
    setConnection("down");
    if (close.code === 4401 || close.code === 4403) {
      signOut("the event feed refused the token");
      return;
    }
    showError(`the live feed is disconnected; reconnecting in ${Math.round(state.retry / 1000)} s`);
    state.timers.push(setTimeout(connect, state.retry));
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

function setConnection(s) {
  const pill = $("connection");
  pill.dataset.state = s;
  pill.textContent = s === "live" ? "live" : s === "down" ? "disconnected" : "connecting";
}

function feedMatches(event) {
  const decision = $("filter-decision").value;
  const agent = $("filter-agent").value.trim();
  const guard = $("filter-guard").value.trim();
  if (decision && event.decision !== decision) return false;
  if (agent && !(event.agent_id || "").includes(agent)) return false;
  if (guard && !(event.guards || []).some((g) => g.guard.includes(guard) && g.decision !== "allow")) return false;
  return true;
}

function addToFeed(event) {
  if (state.paused || !feedMatches(event)) return;
  const time = new Date(event.at * 1000).toLocaleTimeString();
  const reasons = (event.guards || [])
    .filter((g) => g.decision === event.decision && event.decision !== "allow")
    .map((g) => `${g.guard}: ${g.reason}`)
    .join(" · ");
  const row = el("li", { "data-call": event.call_id, "data-decision": event.decision },
    el("span", { class: "muted small" }, time),
    el("span", { class: "fn" }, event.function_name, el("span", { class: "muted small" }, event.agent_id ? ` · ${event.agent_id}` : "")),
    el("span", { class: `badge ${event.decision}` }, `${event.decision.replace("_", " ")} ${Number(event.risk_score).toFixed(2)}`),
    el("span", { class: "reasons" }, reasons));
  const feed = $("feed");
  feed.prepend(row);
  while (feed.children.length > MAX_FEED) feed.lastChild.remove();
}

// ---------------------------------------------------------------------------------------------
// Stats, budgets, guards

async function refresh() {
  try {
    const [stats, guards] = await Promise.all([api("/v1/stats"), api("/v1/guards")]);
    renderStats(stats);
    renderGauges(stats.usage || []);
    renderGuards(guards);
    await loadApprovals();
  } catch (e) {
    if (e.status !== 401) showError(`cannot refresh: ${e.message}`);
  }
}

function renderStats(s) {
  $("stat-total").textContent = s.evaluations;
  $("stat-allow").textContent = s.by_decision.allow || 0;
  $("stat-deny").textContent = s.by_decision.deny || 0;
  $("stat-approval").textContent = s.by_decision.require_approval || 0;
  $("stat-modify").textContent = s.by_decision.modify || 0;
  $("stat-risk").textContent = Number(s.average_risk).toFixed(2);
  $("stat-version").textContent = s.policy_version.slice(0, 12);
  const now = Date.now();
  if (state.lastTotal !== null && now > state.lastAt) {
    const rate = Math.max(0, (s.evaluations - state.lastTotal) / ((now - state.lastAt) / 1000));
    state.rates.push(rate);
    if (state.rates.length > 60) state.rates.shift();
    $("stat-rate").textContent = rate.toFixed(1);
    const max = Math.max(1, ...state.rates);
    const points = state.rates.map((r, i) => `${(i * 120) / 59},${24 - (r / max) * 22}`).join(" ");
    document.querySelector("#sparkline polyline").setAttribute("points", points);
  }
  state.lastTotal = s.evaluations;
  state.lastAt = now;
}

function renderGauges(usage) {
  const box = $("gauges");
  if (!usage.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No guard reports a limit."));
    return;
  }
  box.replaceChildren(...usage.map((u) => {
    const ratio = u.limit > 0 ? u.used / u.limit : 1;
    const warnAt = u.warn_at ?? 0.8;
    const level = ratio >= 1 ? "danger" : ratio >= warnAt ? "warn" : "";
    const fmt = (v) => (u.unit === "money" ? Number(v).toFixed(2) : String(v));
    return el("div", { class: `gauge ${level}`, "data-limit": `${u.guard}/${u.limit_name}` },
      el("div", { class: "text" },
        el("span", {}, `${u.guard} · ${u.limit_name.replaceAll("_", " ")} (${u.window})`),
        el("span", {}, `${fmt(u.used)} / ${fmt(u.limit)}`)),
      el("div", { class: "bar" }, fill(ratio)));
  }));
}

// A gauge's fill. Its width is set through the CSSOM: the page's CSP refuses style attributes.
function fill(ratio) {
  const bar = el("div", { class: "fill" });
  bar.style.width = `${Math.min(100, ratio * 100).toFixed(1)}%`;
  return bar;
}

function renderGuards(g) {
  const rows = g.guards.map((x) => el("tr", {},
    el("td", {}, x.name),
    el("td", { class: x.enabled ? "ok" : "muted" }, x.enabled ? "on" : "off"),
    el("td", {}, x.decisions.allow || 0),
    el("td", {}, x.decisions.require_approval || 0),
    el("td", {}, x.decisions.deny || 0)));
  document.querySelector("#guards tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------
// The approval queue

async function loadApprovals() {
  let list;
  try {
    list = await api("/v1/approvals?state=pending");
  } catch (e) {
    if (e.status !== 401) showError(`cannot load approvals: ${e.message}`);
    return;
  }
  const pending = list.approvals;
  $("approval-count").textContent = pending.length;
  const box = $("approvals");
  const ids = new Set(pending.map((a) => a.id));
  for (const card of [...box.querySelectorAll(".approval")]) {
    if (!ids.has(card.dataset.id)) { card.remove(); state.editing.delete(card.dataset.id); }
  }
  for (const a of pending) {
    const existing = box.querySelector(`.approval[data-id="${a.id}"]`);
    if (existing) {
      existing.querySelector(".votes").textContent = votes(a);
      continue;
    }
    box.append(approvalCard(a));
  }
  const empty = box.querySelector(".empty");
  if (!pending.length && !empty) box.append(el("p", { class: "muted empty" }, "Nothing waits for a decision."));
  if (pending.length && empty) empty.remove();
  tickCountdowns();
}

function votes(a) {
  return a.required > 1 ? `${a.votes.length} of ${a.required} approvals` : "";
}

function approvalCard(a) {
  const args = JSON.stringify(a.arguments, null, 2);
  const card = el("article", { class: "approval", "data-id": a.id, "data-expires": a.expires_at },
    el("header", {},
      el("strong", {}, a.function),
      el("span", { class: "muted" }, a.agent_id ? ` · ${a.agent_id}` : ""),
      el("span", { class: "spacer" }),
      el("span", { class: "badge require_approval" }, `risk ${Number(a.risk).toFixed(2)}`),
      el("span", { class: "countdown muted small" }, "")),
    el("div", { class: "small" }, a.reasons.join(" · ")),
    el("pre", { class: "arguments" }, args),
    el("div", { class: "votes muted small" }, votes(a)));
  if (mayDecide()) {
    const reason = el("input", { class: "reason", placeholder: "reason (optional)", "aria-label": "reason" });
    const editor = el("textarea", { class: "editor", hidden: "", "aria-label": "edited arguments" });
    editor.value = args;
    const editError = el("div", { class: "edit-error", role: "alert" });
    const send = async (body, button) => {
      button.disabled = true;
      try {
        await api(`/v1/approvals/${encodeURIComponent(a.id)}/decision`, { method: "POST", body: { ...body, reason: reason.value || undefined } });
        card.remove();
        state.editing.delete(a.id);
        loadApprovals();
      } catch (e) {
        editError.textContent = e.message;
        button.disabled = false;
      }
    };
    const approve = el("button", { class: "approve", type: "button", onclick: () => send({ decision: "approve" }, approve) }, "Approve");
    const deny = el("button", { class: "deny", type: "button", onclick: () => send({ decision: "deny" }, deny) }, "Deny");
    const approveEdited = el("button", { class: "approve-edited", type: "button", hidden: "" }, "Approve edited");
    const edit = el("button", { class: "edit", type: "button" }, "Edit");
    edit.addEventListener("click", () => {
      editor.hidden = !editor.hidden;
      approveEdited.hidden = editor.hidden;
      if (editor.hidden) state.editing.delete(a.id); else state.editing.add(a.id);
    });
    approveEdited.addEventListener("click", () => {
      let parsed;
      try {
        parsed = JSON.parse(editor.value);
      } catch (e) {
        editError.textContent = `invalid JSON: ${e.message}`;
        return;
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        editError.textContent = "the arguments must be a JSON object";
        return;
      }
      editError.textContent = "";
      send({ decision: "edit", arguments: parsed }, approveEdited);
    });
    card.append(editor, editError, el("div", { class: "actions" }, approve, deny, edit, approveEdited, reason));
  }
  return card;
}

function tickCountdowns() {
  const now = Date.now() / 1000;
  for (const card of document.querySelectorAll(".approval")) {
    const left = Math.max(0, Math.round(Number(card.dataset.expires) - now));
    const text = left > 0 ? `expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` : "expired";
    card.querySelector(".countdown").textContent = ` · ${text}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Audit search

async function searchAudit(form) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
  params.set("limit", "50");
  const box = $("audit");
  try {
    const r = await api(`/v1/audit?${params}`);
    if (!r.entries.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No entry matches."));
      return;
    }
    const rows = r.entries.reverse().map((e) => el("tr", {},
      el("td", {}, new Date(e.at * 1000).toLocaleString()),
      el("td", {}, e.function || e.kind || ""),
      el("td", {}, e.agent_id || ""),
      el("td", {}, el("span", { class: `badge ${e.decision || ""}` }, e.decision || e.kind || ""))));
    box.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "time"), el("th", {}, "function"), el("th", {}, "agent"), el("th", {}, "decision"))),
      el("tbody", {}, ...rows)));
  } catch (e) {
    box.replaceChildren(el("p", { class: "bad" }, e.message));
  }
}

// ---------------------------------------------------------------------------------------------

applyTheme(localStorage.getItem(THEME_KEY) || "dark");
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});
$("signout").addEventListener("click", () => signOut(""));
$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});
$("pause").addEventListener("click", () => {
  state.paused = !state.paused;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
});
$("audit-form").addEventListener("submit", (e) => { e.preventDefault(); searchAudit(e.target); });
// A server without tokens lets the page in as it is; otherwise it asks for one.
start();
