// NeuralOps console: plain JavaScript over the HTTP/JSON gateway (the same routes curl
// uses), hash routing, no framework and no build step. Fields the contracts add later
// (usage, calls, thread_id) are rendered when present.
"use strict";

const main = document.getElementById("main");
const state = { routes: null, signals: new Map() };

// ---------- small helpers ----------
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    n.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return n;
}
// replaceChildren without the null/false placeholders of optional parts.
function fill(node, ...kids) {
  node.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
  return node;
}
const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const n = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}
const enc = encodeURIComponent;
function statusName(s) {
  if (!s) return "unknown";
  return String(s).replace(/^RUN_STATUS_/, "").toLowerCase();
}
function badge(s) { const n = statusName(s); return el("span", { class: `badge ${n}`, text: n }); }
function ms(v) {
  const x = Number(v || 0);
  if (x < 1) return "<1 ms";
  if (x < 1000) return `${Math.round(x)} ms`;
  if (x < 60000) return `${(x / 1000).toFixed(x < 10000 ? 2 : 1)} s`;
  return `${Math.floor(x / 60000)} min ${Math.round((x % 60000) / 1000)} s`;
}
function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  if (isNaN(d)) return ts;
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function ago(ts) {
  if (!ts) return "";
  const s = (Date.now() - new Date(ts).getTime()) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function num(v) { return v === undefined || v === null || v === "" ? null : Number(v); }
// Token totals from whatever usage shape the contract carries.
function tokensOf(obj) {
  if (!obj) return null;
  const u = obj.tokens || obj.usage || obj; // RunUsage keeps its token counts under "tokens"
  if (u && typeof u === "object") {
    const total = num(u.total_tokens);
    if (total) return total;
    const sum = (num(u.input_tokens) || num(u.prompt_tokens) || 0) + (num(u.output_tokens) || num(u.completion_tokens) || 0);
    if (sum) return sum;
  }
  return null;
}
function runTokens(run) {
  const direct = tokensOf(run.usage);
  if (direct) return direct;
  let total = 0;
  for (const n of run.node_logs || []) total += nodeTokens(n) || 0;
  return total || null;
}
function nodeTokens(n) {
  const direct = tokensOf(n.usage);
  if (direct) return direct;
  let total = 0;
  for (const { c } of flatCalls(n.calls, 0, 0)) total += tokensOf(c.usage) || 0;
  return total || null;
}
function callCounts(u) {
  if (!u) return "";
  const parts = [];
  if (num(u.model_calls)) parts.push(`${num(u.model_calls)} model`);
  if (num(u.tool_calls)) parts.push(`${num(u.tool_calls)} tool`);
  if (num(u.retriever_calls)) parts.push(`${num(u.retriever_calls)} retriever`);
  if (num(u.failed_calls)) parts.push(`${num(u.failed_calls)} failed`);
  return parts.join(" · ");
}
function tokenTitle(u) {
  if (!u) return null;
  const bits = [`in ${num(u.input_tokens) || 0}`, `out ${num(u.output_tokens) || 0}`];
  if (num(u.cached_input_tokens)) bits.push(`cached ${num(u.cached_input_tokens)}`);
  if (num(u.reasoning_tokens)) bits.push(`reasoning ${num(u.reasoning_tokens)}`);
  return bits.join(", ");
}
function fmtTokens(t) { return t ? Number(t).toLocaleString() : "—"; }

// ---------- API ----------
class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status; this.body = body || {};
    const info = (this.body.details || []).find((d) => d.reason);
    this.reason = info ? info.reason : this.body.status;
  }
}
async function api(path, opts) {
  const headers = { Accept: "application/json" };
  const token = localStorage.getItem("neuralops-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...(opts || {}), headers: { ...headers, ...((opts || {}).headers || {}) } });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}
async function routes() {
  if (!state.routes) state.routes = await api("/api/routes");
  return state.routes;
}
// The route of an RPC by method name, if this deployment serves it.
async function routeFor(rpc) {
  return (await routes()).find((r) => r.rpc.endsWith(`/${rpc}`)) || null;
}
function showError(where, err) {
  fill(where,
    el("div", { class: "error-box", id: "error" },
      `${err.status ? `HTTP ${err.status} · ` : ""}${err.reason || ""}${err.reason ? ": " : ""}${err.message}`));
}
function page(title, crumbs, ...body) {
  fill(main,
    el("div", { class: "crumbs" }, ...crumbs),
    el("h1", { id: "title", text: title }),
    ...body,
  );
}
function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

// ---------- Workflows ----------
async function viewWorkflows() {
  page("Workflows", [el("span", { text: "All workflows" })], el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  const body = document.getElementById("body");
  let workflows = [];
  try {
    let token = "";
    do {
      const r = await api(`/workflows${qs({ page_size: 200, page_token: token })}`);
      workflows = workflows.concat(r.workflows || []);
      token = r.next_page_token;
    } while (token && workflows.length < 2000);
  } catch (err) { showError(body, err); return; }
  if (!workflows.length) {
    fill(body, el("p", { class: "muted" }, "No workflows yet. Log a run (see the README) or run ", el("code", { text: "neuralops demo" }), "."));
    return;
  }
  const rows = workflows.map((w) => {
    const counts = el("td", { class: "num runs-count", text: "…" });
    const failed = el("td", { class: "num", text: "…" });
    const strip = el("span", { class: "strip" });
    const tr = el("tr", { "data-workflow": w.workflow_id },
      el("td", {}, el("a", { href: `#/workflows/${enc(w.workflow_id)}`, class: "wf-link" }, w.workflow_id),
        w.name && w.name !== w.workflow_id ? el("div", { class: "muted", text: w.name }) : null),
      el("td", {}, w.latest_run_id
        ? el("a", { href: `#/runs/${enc(w.workflow_id)}/${enc(w.latest_run_id)}`, class: "mono" }, w.latest_run_id)
        : el("span", { class: "muted", text: "no runs" })),
      el("td", {}, w.latest_run_id ? badge(w.latest_run_status) : ""),
      el("td", { title: when(w.latest_run_at) }, ago(w.latest_run_at)),
      counts, failed, el("td", {}, strip));
    countRuns(w.workflow_id, counts, failed, strip);
    return tr;
  });
  fill(body, el("table", { id: "workflows" },
    el("thead", {}, el("tr", {}, el("th", { text: "Workflow" }), el("th", { text: "Latest run" }), el("th", { text: "Status" }),
      el("th", { text: "When" }), el("th", { class: "num", text: "Runs" }), el("th", { class: "num", text: "Failed" }),
      el("th", { text: "Recent runs (newest right)" }))),
    el("tbody", {}, rows)));
}
async function countRuns(workflowId, countCell, failedCell, strip) {
  // Counted from the run listing, up to 1,000 (one page), so the page stays fast.
  try {
    const r = await api(`/workflows/${enc(workflowId)}/runs${qs({ page_size: 1000 })}`);
    const runs = r.runs || [];
    const more = r.next_page_token ? "+" : "";
    countCell.textContent = `${runs.length}${more}`;
    failedCell.textContent = `${runs.filter((x) => statusName(x.status) === "failed").length}${more}`;
    for (const run of runs.slice(0, 40).reverse()) {
      strip.append(el("i", { class: statusName(run.status), title: `${run.run_id}: ${statusName(run.status)}, ${ms(run.duration_ms)}` }));
    }
  } catch (err) { countCell.textContent = "?"; failedCell.textContent = "?"; }
}

// ---------- A workflow's runs ----------
const PAGE = 20;
async function viewRuns(workflowId, params) {
  const status = params.get("status") || "";
  const thread = params.get("thread") || "";
  const tokens = (params.get("tokens") || "").split(",").filter(Boolean); // page-token stack
  const token = tokens[tokens.length - 1] || "";
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "Status", el("select", { name: "status", id: "status-filter" },
      ["", "completed", "failed", "interrupted", "cancelled", "running"].map((s) =>
        el("option", { value: s, selected: s === status ? "selected" : null }, s || "any")))),
    el("label", {}, "Thread", el("input", { name: "thread", id: "thread-filter", value: thread, placeholder: "thread id" })),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("change", () => form.requestSubmit());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(form);
    location.hash = `#/workflows/${enc(workflowId)}${qs({ status: f.get("status"), thread: f.get("thread") })}`;
  });
  page(workflowId, [el("a", { href: "#/" }, "Workflows"), " / ", workflowId, " / runs"],
    el("div", { id: "wf-facts", class: "facts" }), form, el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  // The registry knows the workflow (facts); RunHistory's ListRuns lists its runs with the
  // status and thread filters applied server-side. ListRuns answers an empty list for a
  // workflow it has no runs of, so an unknown workflow is told apart by the registry's 404.
  const registered = api(`/workflows/${enc(workflowId)}`).then((r) => {
    const w = r.workflow || {};
    fill(document.getElementById("wf-facts"),
      el("div", {}, el("b", { text: "Latest run" }), w.latest_run_id ? el("a", { href: `#/runs/${enc(workflowId)}/${enc(w.latest_run_id)}`, class: "mono" }, w.latest_run_id) : "none"),
      el("div", {}, el("b", { text: "Latest status" }), w.latest_run_id ? badge(w.latest_run_status) : "—"),
      el("div", {}, el("b", { text: "Registered" }), when(w.created_at)),
      w.description ? el("div", {}, el("b", { text: "Description" }), w.description) : null);
    return null;
  }).catch((err) => err);
  const body = document.getElementById("body");
  let runs = [];
  let next = "";
  try {
    const r = await api(`/runs/${enc(workflowId)}${qs({ page_size: PAGE, page_token: token, status: status || null, thread_id: thread || null })}`);
    runs = r.runs || []; next = r.next_page_token || "";
  } catch (err) { showError(body, err); return; }
  const regErr = await registered;
  if (regErr && !runs.length && !status && !thread && !token) { showError(body, regErr); return; }
  const note = regErr ? `the registry does not list this workflow (${regErr.status || ""} ${regErr.reason || ""})` : null;
  const hasThread = runs.some((r) => r.thread_id);
  const rows = runs.map((r) => el("tr", { class: `run-row ${statusName(r.status)}`, "data-run": r.run_id },
    el("td", {}, el("a", { href: `#/runs/${enc(workflowId)}/${enc(r.run_id)}`, class: "mono run-link" }, r.run_id)),
    el("td", {}, badge(r.status)),
    el("td", { class: "num" }, ms(r.duration_ms)),
    el("td", { class: "num" }, callCounts(r.usage)),
    el("td", { class: "num tokens", title: tokenTitle(r.usage && r.usage.tokens) }, fmtTokens(runTokens(r))),
    hasThread ? el("td", { class: "mono" }, r.thread_id ? el("a", { href: `#/workflows/${enc(workflowId)}${qs({ thread: r.thread_id })}` }, r.thread_id) : "") : null,
    el("td", { title: when(r.created_at) }, when(r.created_at))));
  const back = tokens.slice(0, -1);
  fill(body,
    runs.length ? el("table", { id: "runs" },
      el("thead", {}, el("tr", {}, el("th", { text: "Run" }), el("th", { text: "Status" }), el("th", { class: "num", text: "Duration" }),
        el("th", { class: "num", text: "Calls" }), el("th", { class: "num", text: "Tokens" }), hasThread ? el("th", { text: "Thread" }) : null, el("th", { text: "Time" }))),
      el("tbody", {}, rows)) : el("p", { class: "muted", id: "no-runs", text: "No runs match." }),
    el("div", { class: "pager" },
      el("button", { id: "prev", disabled: tokens.length ? null : "disabled", onclick: () => {
        location.hash = `#/workflows/${enc(workflowId)}${qs({ status, thread, tokens: back.join(",") })}`;
      } }, "← Newer"),
      el("button", { id: "next", disabled: next ? null : "disabled", onclick: () => {
        location.hash = `#/workflows/${enc(workflowId)}${qs({ status, thread, tokens: tokens.concat([next]).join(",") })}`;
      } }, "Older →"),
      el("span", { class: "muted" }, `page ${tokens.length + 1}`, note ? ` · ${note}` : "")));
}

// ---------- One run ----------
function lanes(boxes) {
  // Greedy lanes over what each node occupies on screen (its bar, and its label when the
  // label sits beside a short bar): nodes that overlap in time always get separate lanes,
  // so parallel branches show one above the other, and no two labels overlap.
  const ends = [];
  return boxes.map((b) => {
    let lane = ends.findIndex((e) => e <= b.a);
    if (lane < 0) { lane = ends.length; ends.push(0); }
    ends[lane] = b.b + 0.5;
    return lane;
  });
}
function nodeTimes(run) {
  const logs = run.node_logs || [];
  let cursor = 0;
  const out = logs.map((n, i) => {
    let t0 = n.start_time ? new Date(n.start_time).getTime() : NaN;
    let t1 = n.end_time ? new Date(n.end_time).getTime() : NaN;
    const d = Number(n.duration_ms || 0);
    if (isNaN(t0)) { t0 = cursor; t1 = cursor + d; }
    else if (isNaN(t1)) t1 = t0 + d;
    cursor = t1;
    return { n, i, t0, t1 };
  });
  return out;
}
function renderTimeline(run, onPick) {
  const items = nodeTimes(run);
  if (!items.length) return el("p", { class: "muted", text: "This run has no node logs." });
  const t0 = Math.min(...items.map((x) => x.t0));
  const t1 = Math.max(...items.map((x) => x.t1), t0 + 1);
  const span = t1 - t0;
  const axis = el("div", { class: "tl-axis" });
  for (let k = 0; k <= 4; k++) {
    const shift = k === 0 ? "0" : k === 4 ? "-100%" : "-50%";
    axis.append(el("span", { style: `left:${k * 25}%;transform:translateX(${shift})` }, k === 0 ? "0" : ms(Math.round((span * k) / 4))));
  }
  const groups = new Map();
  for (const it of items) {
    const path = it.n.path || "";
    if (!groups.has(path)) groups.set(path, []);
    groups.get(path).push(it);
  }
  const box = el("div", { class: "timeline", id: "timeline" }, axis);
  for (const [path, group] of groups) {
    group.sort((a, b) => a.t0 - b.t0 || a.i - b.i);
    const trackPx = Math.max(300, main.clientWidth - 220);
    const geo = group.map((it) => {
      const n = it.n;
      const st = statusName(n.status);
      const calls = (n.calls || []).length;
      const tok = nodeTokens(n);
      const width = Math.max(((it.t1 - it.t0) / span) * 100, 0.6);
      const left = Math.min(((it.t0 - t0) / span) * 100, 100 - width);
      // The longest label that fits in the bar; a bar too short for even the shortest
      // one gets the shortest beside it.
      const head = `${st === "failed" ? "✕ " : ""}${n.name}${n.attempt > 1 ? ` (attempt ${n.attempt})` : ""} · ${ms(n.duration_ms)}`;
      const pct = (text) => ((text.length * 6.4 + 12) / trackPx) * 100;
      const full = `${head}${calls ? ` · ${calls} call${calls > 1 ? "s" : ""}` : ""}${tok ? ` · ${tok} tok` : ""}`;
      const label = [full, `${head}${tok ? ` · ${tok} tok` : ""}`, head].find((t) => pct(t) <= width) || head;
      const labelPct = pct(label);
      const narrow = labelPct > width;
      const outLeft = left + width + labelPct <= 100;
      const a = narrow && !outLeft ? left - labelPct : left;
      const b = narrow && outLeft ? left + width + labelPct : left + width;
      return { it, n, st, width, left, label, narrow, outLeft, a, b };
    });
    const laneOf = lanes(geo);
    const nLanes = Math.max(...laneOf) + 1;
    const overlapsBelow = (k) => geo.some((o, j) => laneOf[j] < laneOf[k] && o.it.t0 < geo[k].it.t1 && geo[k].it.t0 < o.it.t1);
    const g = el("div", { class: "tl-group", "data-path": path },
      el("div", { class: "tl-group-name" }, path ? `subgraph ${path}` : "graph"));
    for (let lane = 0; lane < nLanes; lane++) {
      const track = el("div", { class: "tl-track" });
      let parallel = false;
      geo.forEach((x, k) => {
        if (laneOf[k] !== lane) return;
        if (lane > 0 && overlapsBelow(k)) parallel = true;
        const bar = el("div", {
          class: `tl-bar ${x.st}`, style: `left:${x.left}%;width:${x.width}%`, "data-node": x.n.name, "data-index": x.it.i,
          title: `${x.n.name} (step ${x.n.step || 0}${path ? `, ${path}` : ""}): ${x.st}, ${ms(x.n.duration_ms)}${x.n.error ? `\n${x.n.error}` : ""}`,
          onclick: () => onPick(x.it.i),
        }, x.narrow ? "" : x.label);
        track.append(bar);
        if (x.narrow) {
          // Too short to hold its label: the label sits beside the bar, where there is room.
          const side = x.outLeft ? `left:${x.left + x.width + 0.3}%` : `right:${100 - x.left + 0.3}%`;
          track.append(el("div", { class: `tl-out ${x.st}`, style: side, onclick: () => onPick(x.it.i) }, x.label));
        }
      });
      g.append(el("div", { class: "tl-row" }, el("div", { class: "tl-label" }, parallel ? "∥ parallel" : ""), track));
      // The calls each node of this lane made, right under it: one sub-row per nesting
      // depth (a model call inside a tool call sits one row lower).
      const callRows = [];
      geo.forEach((x, k) => {
        if (laneOf[k] !== lane) return;
        for (const c of flatCalls(x.n.calls, x.it.t0, x.it.t1)) {
          (callRows[c.depth] = callRows[c.depth] || []).push({ ...c, node: x.n, index: x.it.i });
        }
      });
      callRows.forEach((row, depth) => {
        const ctrack = el("div", { class: "tl-track tl-calls" });
        for (const c of row) {
          const width = Math.max(((c.t1 - c.t0) / span) * 100, 0.4);
          const left = Math.min(Math.max(((c.t0 - t0) / span) * 100, 0), 100 - width);
          const st = statusName(c.c.status);
          ctrack.append(el("div", {
            class: `tl-call ${callKind(c.c)} ${st}`, style: `left:${left}%;width:${width}%`,
            "data-call": c.c.name || "", "data-node": c.node.name, title: callTitle(c.c),
            onclick: () => onPick(c.index),
          }, callLabel(c.c)));
        }
        g.append(el("div", { class: "tl-call-row" }, el("div", { class: "tl-label" }, depth ? "  ↳ nested calls" : "↳ calls"), ctrack));
      });
    }
    box.append(g);
  }
  return box;
}
function callKind(c) { return String(c.kind || "").replace(/^CALL_KIND_/, "").toLowerCase() || "call"; }
// A node's calls, nested ones included, with their times (from the call's own start and
// end, else spread over the node's time) and depth.
function flatCalls(calls, n0, n1, depth = 0, out = []) {
  const list = calls || [];
  list.forEach((c, k) => {
    let a = c.start_time ? new Date(c.start_time).getTime() : NaN;
    let b = c.end_time ? new Date(c.end_time).getTime() : NaN;
    if (isNaN(a)) a = n0 + ((n1 - n0) * k) / Math.max(list.length, 1);
    if (isNaN(b)) b = c.duration_ms !== undefined ? a + Number(c.duration_ms) : a + (n1 - n0) / Math.max(list.length, 1);
    out.push({ c, depth, t0: a, t1: Math.max(b, a) });
    flatCalls(c.calls, a, Math.max(b, a), depth + 1, out);
  });
  return out;
}
function callLabel(c) {
  const tok = tokensOf(c.usage);
  return `${statusName(c.status) === "failed" ? "✕ " : ""}${c.model || c.name || callKind(c)}${tok ? ` · ${tok} tok` : ""}`;
}
function callTitle(c) {
  const ttft = c.time_to_first_token_ms;
  return [`${callKind(c)} ${c.name || ""}${c.model ? ` (${c.model}${c.provider ? `, ${c.provider}` : ""})` : ""}`,
    `${statusName(c.status)}, ${ms(c.duration_ms)}`,
    tokensOf(c.usage) ? `tokens ${tokensOf(c.usage)} (${tokenTitle(c.usage)})` : null,
    ttft !== undefined && ttft !== null ? `first token after ${ms(ttft)}` : null,
    c.error || null].filter(Boolean).join("\n");
}
function callsTable(calls) {
  if (!calls || !calls.length) return el("p", { class: "muted", text: "No model or tool calls recorded in this node." });
  const rows = flatCalls(calls, 0, 0).map(({ c, depth }) => {
    const ttft = c.time_to_first_token_ms;
    return el("tr", { class: `call-row ${statusName(c.status)}`, "data-kind": callKind(c), "data-call": c.name || "" },
      el("td", { style: `padding-left:${10 + depth * 18}px` }, depth ? "↳ " : "", el("span", { class: `kind ${callKind(c)}`, text: callKind(c) })),
      el("td", { class: "mono" }, c.name || ""),
      el("td", { class: "mono" }, c.model ? `${c.model}${c.provider ? ` (${c.provider})` : ""}` : ""),
      el("td", {}, c.status ? badge(c.status) : ""),
      el("td", { class: "num" }, c.duration_ms !== undefined ? ms(c.duration_ms) : ""),
      el("td", { class: "num" }, ttft !== undefined && ttft !== null ? ms(ttft) : ""),
      el("td", { class: "num", title: tokenTitle(c.usage) }, c.usage ? `${num(c.usage.input_tokens) || 0} / ${num(c.usage.output_tokens) || 0}` : ""),
      el("td", { class: "num call-tokens" }, fmtTokens(tokensOf(c.usage))),
      el("td", { class: "call-error" }, c.error || ""));
  });
  return el("table", { class: "calls", id: "calls" },
    el("thead", {}, el("tr", {}, el("th", { text: "Kind" }), el("th", { text: "Name" }), el("th", { text: "Model" }), el("th", { text: "Status" }),
      el("th", { class: "num", text: "Duration" }), el("th", { class: "num", text: "First token" }), el("th", { class: "num", text: "In / out" }),
      el("th", { class: "num", text: "Tokens" }), el("th", { text: "Error" }))),
    el("tbody", {}, rows));
}
function jsonBlock(title, v) {
  if (v === undefined || v === null || (typeof v === "object" && !Object.keys(v).length)) return null;
  return el("div", {}, el("b", { text: title }), el("pre", { class: "json" }, JSON.stringify(v, null, 2)));
}
async function viewRun(wpk, runId) {
  page(`Run ${runId}`, [el("a", { href: "#/" }, "Workflows"), " / ", el("a", { href: `#/workflows/${enc(wpk)}` }, wpk), " / ", runId],
    el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  const body = document.getElementById("body");
  let run;
  try { run = (await api(`/runs/${enc(wpk)}/${enc(runId)}`)).run; } catch (err) { showError(body, err); return; }
  const nodes = run.node_logs || [];
  const failedNodes = nodes.filter((n) => statusName(n.status) === "failed");
  const detail = el("div", { class: "node-detail", id: "node-detail" });
  const pick = (i) => {
    const n = nodes[i];
    for (const b of document.querySelectorAll(".tl-bar")) b.classList.toggle("selected", Number(b.dataset.index) === i);
    fill(detail,
      el("h2", { text: `Node ${n.name}${n.path ? ` (in ${n.path})` : ""}${n.attempt > 1 ? ` · attempt ${n.attempt}` : ""}` }),
      n.error ? el("div", { class: "error-box", text: n.error }) : null,
      el("h2", { text: "Model and tool calls" }), callsTable(n.calls),
      jsonBlock("Input", n.input), jsonBlock("Output", n.output));
  };
  const totalTok = runTokens(run);
  fill(body,
    el("div", { class: "facts", id: "run-facts" },
      el("div", {}, el("b", { text: "Status" }), badge(run.status)),
      el("div", {}, el("b", { text: "Duration" }), ms(run.duration_ms)),
      el("div", {}, el("b", { text: "Tokens" }), fmtTokens(totalTok)),
      el("div", {}, el("b", { text: "Nodes" }), `${nodes.length}${failedNodes.length ? ` (${failedNodes.length} failed)` : ""}`),
      el("div", {}, el("b", { text: "Calls" }), callCounts(run.usage) || "none"),
      run.thread_id ? el("div", { id: "run-thread" }, el("b", { text: "Thread" }), el("a", { class: "mono", href: `#/workflows/${enc(wpk)}${qs({ thread: run.thread_id })}` }, run.thread_id)) : null,
      run.checkpoint_id ? el("div", {}, el("b", { text: "Checkpoint" }), el("span", { class: "mono", text: run.checkpoint_id })) : null,
      el("div", {}, el("b", { text: "Stored" }), when(run.created_at))),
    run.error ? el("div", { class: "error-box", id: "run-error", text: run.error }) : null,
    (run.interrupts || []).length ? el("div", { id: "interrupts", class: "panel interrupts" },
      el("b", { text: `Paused on ${run.interrupts.length} interrupt${run.interrupts.length > 1 ? "s" : ""}` }),
      run.interrupts.map((it) => el("div", { class: "interrupt" },
        (it.next_nodes || []).length ? el("span", {}, "resumes at ", el("span", { class: "mono", text: it.next_nodes.join(", ") }), " ") : null,
        it.id ? el("span", { class: "muted mono", text: `id ${it.id}` }) : null,
        el("pre", { class: "json" }, JSON.stringify(it.value, null, 2))))) : null,
    el("h2", { text: "Timeline" }),
    renderTimeline(run, pick),
    detail,
    el("h2", { text: "Nodes" }),
    el("table", { id: "nodes" },
      el("thead", {}, el("tr", {}, el("th", { text: "Step" }), el("th", { text: "Node" }), el("th", { class: "num", text: "Attempt" }), el("th", { text: "Path" }), el("th", { text: "Status" }),
        el("th", { class: "num", text: "Duration" }), el("th", { class: "num", text: "Calls" }), el("th", { class: "num", text: "Tokens" }), el("th", { text: "Error" }))),
      el("tbody", {}, nodes.map((n, i) => el("tr", { class: statusName(n.status), onclick: () => pick(i) },
        el("td", { class: "num" }, n.step || 0), el("td", {}, n.name), el("td", { class: "num attempt" }, n.attempt || ""), el("td", { class: "mono" }, n.path || ""),
        el("td", {}, badge(n.status)), el("td", { class: "num" }, ms(n.duration_ms)),
        el("td", { class: "num" }, (n.calls || []).length || ""), el("td", { class: "num" }, fmtTokens(nodeTokens(n))),
        el("td", {}, n.error || ""))))),
    jsonBlock("Inputs", run.inputs), jsonBlock("Outputs", run.outputs));
  if (failedNodes.length) pick(nodes.indexOf(failedNodes[0]));
}

// ---------- Signals ----------
function labelText(labels) {
  return Object.entries(labels || {}).filter(([k]) => k !== "__name__").map(([k, v]) => `${k}="${v}"`).join(", ");
}
async function viewSignals(params) {
  const metric = params.get("metric") || "";
  const tokens = (params.get("tokens") || "").split(",").filter(Boolean);
  const form = el("form", { class: "filters" },
    el("label", {}, "Metric", el("input", { name: "metric", value: metric, placeholder: "any metric" })),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/signals${qs({ metric: new FormData(form).get("metric") })}`; });
  page("Signals", [el("span", { text: "Anomaly signals, newest first" })], form, el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  const body = document.getElementById("body");
  let r;
  try { r = await api(`/signals${qs({ metric, page_size: 50, page_token: tokens[tokens.length - 1] || "" })}`); } catch (err) { showError(body, err); return; }
  const signals = r.signals || [];
  for (const s of signals) state.signals.set(s.id, s);
  fill(body,
    signals.length ? el("table", { id: "signals" },
      el("thead", {}, el("tr", {}, el("th", { text: "Metric" }), el("th", { text: "Series" }), el("th", { class: "num", text: "Value" }),
        el("th", { class: "num", text: "Baseline" }), el("th", { class: "num", text: "Score" }), el("th", { text: "Method" }), el("th", { text: "Sample time" }))),
      el("tbody", {}, signals.map((s) => el("tr", { "data-signal": s.id },
        el("td", {}, el("a", { href: `#/signals/${enc(s.id)}`, class: "signal-link" }, s.metric)),
        el("td", { class: "mono" }, labelText(s.labels)),
        el("td", { class: "num" }, Number(s.value).toPrecision(4)),
        el("td", { class: "num" }, Number(s.baseline || 0).toPrecision(4)),
        el("td", { class: "num" }, Number(s.score).toFixed(1)),
        el("td", {}, String(s.method || "").replace(/^METHOD_/, "").toLowerCase()),
        el("td", { title: s.sample_time }, when(s.sample_time)))))) : el("p", { class: "muted", text: "No signals." }),
    el("div", { class: "pager" },
      el("button", { disabled: tokens.length ? null : "disabled", onclick: () => { location.hash = `#/signals${qs({ metric, tokens: tokens.slice(0, -1).join(",") })}`; } }, "← Newer"),
      el("button", { disabled: r.next_page_token ? null : "disabled", onclick: () => { location.hash = `#/signals${qs({ metric, tokens: tokens.concat([r.next_page_token]).join(",") })}`; } }, "Older →")));
}
async function findSignal(id) {
  if (state.signals.has(id)) return state.signals.get(id);
  let token = "";
  for (let i = 0; i < 20; i++) {
    const r = await api(`/signals${qs({ page_size: 1000, page_token: token })}`);
    for (const s of r.signals || []) state.signals.set(s.id, s);
    if (state.signals.has(id)) return state.signals.get(id);
    token = r.next_page_token;
    if (!token) break;
  }
  return null;
}
function sameSeries(metricLabels, labels) {
  return Object.entries(labels || {}).every(([k, v]) => k === "__name__" || metricLabels[k] === v);
}
function plot(series, others, signal, episodes) {
  const W = 1000, H = 320, L = 60, R = 16, T = 14, B = 30;
  const pts = series.values.map(([t, v]) => [Number(t), Number(v)]).filter(([, v]) => isFinite(v));
  const all = pts.concat(...others.map((o) => o.values.map(([t, v]) => [Number(t), Number(v)]).filter(([, v]) => isFinite(v))));
  const st = new Date(signal.sample_time).getTime() / 1000;
  const ys = all.map((p) => p[1]).concat([Number(signal.value), Number(signal.baseline || 0)]);
  const xs = all.map((p) => p[0]).concat([st]);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-12) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", id: "signal-plot" });
  s.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let k = 0; k <= 4; k++) {
    const v = y0 + ((y1 - y0) * k) / 4;
    s.append(svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, Number(v).toPrecision(3)));
    const t = x0 + ((x1 - x0) * k) / 4;
    const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
    s.append(svg("text", { x: X(t), y: H - 10, "text-anchor": anchor }, new Date(t * 1000).toLocaleTimeString()));
  }
  for (const o of others) {
    const p = o.values.filter(([, v]) => isFinite(Number(v))).map(([t, v]) => `${X(Number(t)).toFixed(1)},${Y(Number(v)).toFixed(1)}`).join(" ");
    if (p) s.append(svg("polyline", { class: "other", points: p }));
  }
  s.append(svg("line", { class: "baseline", x1: L, x2: W - R, y1: Y(Number(signal.baseline || 0)), y2: Y(Number(signal.baseline || 0)) }));
  if (pts.length) s.append(svg("polyline", { class: "series", points: pts.map(([t, v]) => `${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join(" ") }));
  for (const e of episodes) {
    const et = new Date(e.sample_time).getTime() / 1000;
    if (et < x0 || et > x1 || e.id === signal.id) continue;
    s.append(svg("circle", { cx: X(et), cy: Y(Number(e.value)), r: 4, fill: "none", stroke: "#e03131", "stroke-width": 1.5 }));
  }
  s.append(svg("line", { x1: X(st), x2: X(st), y1: T, y2: H - B, stroke: "#ffa8a8", "stroke-dasharray": "3 3" }));
  s.append(svg("circle", { class: "anomaly", cx: X(st), cy: Y(Number(signal.value)), r: 6, id: "anomaly-point" }));
  return s;
}
async function viewSignal(id) {
  page("Signal", [el("a", { href: "#/signals" }, "Signals"), " / ", id], el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  const body = document.getElementById("body");
  let signal;
  try { signal = await findSignal(id); } catch (err) { showError(body, err); return; }
  if (!signal) { showError(body, { status: 404, reason: "SIGNAL_NOT_FOUND", message: `no signal ${id}` }); return; }
  document.getElementById("title").textContent = `Signal: ${signal.metric}`;
  const plotBox = el("div", { class: "plot", id: "plot" }, el("p", { class: "muted", text: "Loading the series from Prometheus…" }));
  fill(body,
    el("div", { class: "facts", id: "signal-facts" },
      el("div", {}, el("b", { text: "Value" }), Number(signal.value).toPrecision(5)),
      el("div", {}, el("b", { text: "Baseline" }), Number(signal.baseline || 0).toPrecision(5)),
      el("div", {}, el("b", { text: "Score" }), `${Number(signal.score).toFixed(2)} (threshold ${signal.threshold})`),
      el("div", {}, el("b", { text: "Method" }), String(signal.method || "").replace(/^METHOD_/, "").toLowerCase()),
      el("div", {}, el("b", { text: "Sample time" }), when(signal.sample_time)),
      el("div", {}, el("b", { text: "Series" }), el("span", { class: "mono", text: labelText(signal.labels) || "—" }))),
    signal.hint ? el("p", { id: "hint", text: signal.hint }) : null,
    el("p", {}, "Query: ", el("code", { text: signal.query })),
    plotBox);
  const st = new Date(signal.sample_time).getTime() / 1000;
  const end = Math.min(Date.now() / 1000, st + 300);
  const start = st - 900;
  const step = Math.max(1, Math.round((end - start) / 300));
  try {
    const r = await api(`/api/series${qs({ query: signal.query, start: start.toFixed(3), end: end.toFixed(3), step })}`);
    const result = (r.data && r.data.result) || [];
    const mine = result.find((x) => sameSeries(x.metric, signal.labels));
    if (!mine) { fill(plotBox, el("p", { class: "muted", text: "Prometheus has no data for this series in the window any more." })); return; }
    const others = result.filter((x) => x !== mine).slice(0, 20);
    const episodes = [...state.signals.values()].filter((e) => e.metric === signal.metric && sameSeries(mine.metric, e.labels));
    fill(plotBox, plot(mine, others, signal, episodes),
      el("div", { class: "legend" }, el("i", { style: "background:#3b5bdb" }), "this series", el("i", { style: "background:#bac8ff" }), "other series of the query",
        el("i", { style: "background:#2f9e44" }), "baseline", el("i", { style: "background:#e03131;height:8px;width:8px;border-radius:4px" }), "the anomaly"));
  } catch (err) { showError(plotBox, err); }
}

// ---------- Watches ----------
function dur(d) { return d ? String(d) : "60s"; }
async function viewWatches() {
  page("Watches", [el("span", { text: "Queries Insight evaluates on a schedule, with their open episodes" })],
    el("div", { id: "body" }, el("p", { class: "muted", text: "Loading…" })));
  const body = document.getElementById("body");
  let watches = [];
  try {
    let token = "";
    do {
      const r = await api(`/watches${qs({ page_size: 200, page_token: token })}`);
      watches = watches.concat(r.watches || []);
      token = r.next_page_token;
    } while (token && watches.length < 1000);
  } catch (err) { showError(body, err); return; }
  if (!watches.length) {
    fill(body, el("p", { class: "muted" }, "No watches. Create one with ", el("code", { text: "POST /watches" }), " (see the README)."));
    return;
  }
  const rows = watches.map((w) => {
    const open = el("td", { class: "episodes" }, "…");
    api(`/signals${qs({ watch_id: w.id, state: "EPISODE_STATE_OPEN", page_size: 50 })}`).then((r) => {
      const eps = r.signals || [];
      for (const e of eps) state.signals.set(e.id, e);
      fill(open, eps.length ? eps.map((e) => el("div", {},
        el("a", { href: `#/signals/${enc(e.id)}`, class: "signal-link" }, labelText(e.labels) || e.metric),
        el("span", { class: "muted" }, ` · score ${Number(e.score).toFixed(1)} · since ${ago(e.start_time || e.sample_time)}`))) : el("span", { class: "muted", text: "none open" }));
    }).catch((err) => { open.textContent = `? (${err.message})`; });
    return el("tr", { "data-watch": w.id, class: w.last_error ? "failed" : "" },
      el("td", {}, el("b", { text: w.name || "(unnamed)" }), el("div", { class: "muted mono", text: w.id })),
      el("td", {}, el("code", { text: w.query })),
      el("td", {}, dur(w.interval)),
      el("td", { title: when(w.last_evaluated_time) }, w.last_evaluated_time ? ago(w.last_evaluated_time) : "not yet",
        w.last_error ? el("div", { class: "call-error", text: w.last_error }) : null),
      open);
  });
  fill(body, el("table", { id: "watches" },
    el("thead", {}, el("tr", {}, el("th", { text: "Watch" }), el("th", { text: "Query" }), el("th", { text: "Interval" }),
      el("th", { text: "Last evaluated" }), el("th", { text: "Open episodes" }))),
    el("tbody", {}, rows)));
}

// ---------- router ----------
async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === (["signals", "watches"].includes(parts[0]) ? parts[0] : "workflows"));
  try {
    if (parts[0] === "workflows" && parts[1]) await viewRuns(parts[1], params);
    else if (parts[0] === "runs" && parts.length >= 3) await viewRun(parts[1], parts.slice(2).join("/"));
    else if (parts[0] === "signals" && parts[1]) await viewSignal(parts[1]);
    else if (parts[0] === "signals") await viewSignals(params);
    else if (parts[0] === "watches") await viewWatches();
    else await viewWorkflows();
  } catch (err) { showError(main, err); }
  document.body.dataset.ready = location.hash;
}
const tokenInput = document.getElementById("token");
tokenInput.value = localStorage.getItem("neuralops-token") || "";
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (tokenInput.value) localStorage.setItem("neuralops-token", tokenInput.value);
  else localStorage.removeItem("neuralops-token");
  route();
});
window.addEventListener("hashchange", route);
route();
