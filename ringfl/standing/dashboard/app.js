// ringfl node dashboard: plain JavaScript, no libraries, nothing loaded from elsewhere.
// Reads the node's JSON API with the bearer token kept in sessionStorage.
"use strict";

const TOKEN_KEY = "ringfl-node-token";
let timer = null;
let logCursor = { task: null, after: "0.0" };

function esc(s) {
  return String(s === null || s === undefined ? "" : s)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function showLogin() {
  document.getElementById("login").hidden = false;
  const view = document.getElementById("view");
  view.innerHTML = "";
  view.dataset.html = "";
}

// Replace a view's HTML only when it changed: the page refreshes every second, and an
// unchanged view keeps its scroll position, selection and elements.
function setHTML(el, html) {
  if (el.dataset.html === html) return false;
  el.innerHTML = html;
  el.dataset.html = html;
  return true;
}

function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function badge(s) { return `<span class="status ${esc(s)}">${esc(s)}</span>`; }
function progress(p) {
  if (!p) return '<span class="muted">-</span>';
  const pct = Math.min(100, Math.round(100 * p.round / Math.max(1, p.rounds)));
  return `<span class="bar"><span style="width:${pct}%"></span></span> <span class="progress-text">${p.round}/${p.rounds}${p.run > 1 ? " (run " + p.run + ")" : ""}</span>`;
}

async function viewTasks(el) {
  const data = await api("/api/tasks");
  const rows = data.tasks.map(t => `
    <tr class="task-row" data-id="${esc(t.id)}" data-status="${esc(t.status)}">
      <td><a href="#/task/${esc(t.id)}">${esc(t.name)}</a><br><code class="muted">${esc(t.id)}</code></td>
      <td>${badge(t.status)}${t.reason ? `<div class="reason">${esc(t.reason)}</div>` : ""}</td>
      <td>${progress(t.progress)}</td>
      <td>${esc(t.proposer)}</td>
      <td>${esc(t.participants.join(", "))}</td>
      <td>${esc(t.schedule || "")}</td>
      <td class="muted">${fmtTime(t.created)}</td>
    </tr>`).join("");
  const changed = setHTML(el, `<div class="card"><h2>Tasks</h2>
    <table id="task-list"><thead><tr><th>task</th><th>status</th><th>progress</th><th>proposer</th>
    <th>participants</th><th>schedule</th><th>created</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="7" class="muted">no tasks yet</td></tr>'}</tbody></table></div>`);
  if (changed) el.querySelectorAll("tr.task-row").forEach(tr =>
    tr.addEventListener("click", () => { location.hash = "#/task/" + tr.dataset.id; }));
}

// A line plot as inline SVG: series = [{name, color, points: [[x, y], ...]}].
function plot(id, title, series, yRange) {
  const W = 420, H = 220, L = 44, R = 12, T = 24, B = 30;
  const all = series.flatMap(s => s.points);
  if (!all.length) return `<svg id="${id}" class="plot" width="${W}" height="${H}"><text x="${L}" y="${H / 2}">no ${esc(title)} yet</text></svg>`;
  const xs = all.map(p => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(Math.max(...xs), x0 + 1);
  let y0 = yRange ? yRange[0] : Math.min(...all.map(p => p[1]));
  let y1 = yRange ? yRange[1] : Math.max(...all.map(p => p[1]));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  let g = `<text x="${L}" y="15" font-weight="600">${esc(title)}</text>`;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    g += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eef1f5"/>`;
    g += `<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${y.toFixed(y1 - y0 < 2 ? 2 : 1)}</text>`;
  }
  const ticks = Math.min(10, x1 - x0);
  for (let i = 0; i <= ticks; i++) {
    const x = Math.round(x0 + (x1 - x0) * i / ticks);
    g += `<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>`;
  }
  g += `<text x="${W - R}" y="${H - 4}" text-anchor="end">round</text>`;
  for (const s of series) {
    if (!s.points.length) continue;
    const pts = s.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    g += `<polyline class="series" data-name="${esc(s.name)}" fill="none" stroke="${s.color}" stroke-width="2" points="${pts}"/>`;
    g += s.points.map(p => `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.5" fill="${s.color}"/>`).join("");
  }
  const legend = series.filter(s => s.points.length).map(s => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
  return `<div><svg id="${id}" class="plot" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${g}</svg><div class="legend">${legend}</div></div>`;
}

function metricSeries(rows, key, name, color) {
  return { name, color, points: rows.filter(r => typeof r[key] === "number").map(r => [r.round + 1, r[key]]) };
}

async function download(task, run, what) {
  const r = await fetch(`/api/tasks/${task}/runs/${run}/${what}`, { headers: { Authorization: "Bearer " + token() } });
  if (!r.ok) { alert(what + ": HTTP " + r.status); return; }
  const blob = await r.blob();
  const a = document.createElement("a");
  const cd = r.headers.get("content-disposition") || "";
  const m = /filename="?([^";]+)"?/.exec(cd);
  a.href = URL.createObjectURL(blob);
  a.download = m ? m[1] : `${task}-run${run}-${what}`;
  document.body.appendChild(a); a.click(); a.remove();
}

async function viewTask(el, id) {
  const d = await api("/api/tasks/" + id);
  const runs = Object.keys(d.local).map(Number).sort((a, b) => a - b);
  const run = runs.length ? runs[runs.length - 1] : null;
  const local = run !== null ? d.local[String(run)] : null;
  const rows = local ? local.metrics : [];
  const votes = d.participants.map(p => {
    const v = d.votes[p];
    const state = !v ? '<span class="muted">no answer yet</span>' : v.accept ? badge("accepted").replace("accepted\"", "succeeded\"") : badge("rejected").replace("rejected\"", "failed\"");
    const fields = v && v.fields && Object.keys(v.fields).length ? `<code>${esc(JSON.stringify(v.fields))}</code>` : "";
    return `<tr><td>${esc(p)}</td><td>${state}</td><td>${esc(v && v.reason || "")}</td><td>${fields}</td></tr>`;
  }).join("");
  const runRows = d.runs.map(r => `<tr><td>${r.run}</td><td>${badge(r.status)}</td><td><code>${esc((r.hash || "").slice(0, 16))}</code></td><td>${esc(r.reason)}</td></tr>`).join("");
  const contrib = rows.map(r => `<tr><td>${r.round + 1}</td><td class="contributors">${esc((r.members || []).join(", "))}</td><td class="dropped">${esc((r.dropped || []).join(", ") || "-")}</td><td>${typeof r.accuracy === "number" ? (100 * r.accuracy).toFixed(2) + "%" : "-"}</td></tr>`).join("");
  const acc = [metricSeries(rows, "accuracy", "accuracy", "#2f6fdb"), metricSeries(rows, "auc", "AUC", "#9b4dca")];
  const loss = [metricSeries(rows, "loss", "test loss", "#d64545"), metricSeries(rows, "train_loss", "train loss", "#c98a00")];
  const res = d.result ? `<p>Result: run ${d.result.run}, model <code>${esc(d.result.hash.slice(0, 16))}</code>, accuracy ${d.result.accuracy !== null ? (100 * d.result.accuracy).toFixed(2) + "%" : "-"}</p>` : "";
  const dl = local ? ["model", "metrics", "predictions", "log"].filter(w => w === "metrics" || w === "log" || local[w])
    .map(w => `<button class="download" data-what="${w}">${w}</button>`).join(" ") : "";
  const changed = setHTML(el, `
    <div class="card" id="task-detail" data-id="${esc(d.id)}" data-status="${esc(d.status)}">
      <h2>${esc(d.name)} ${badge(d.status)} <code class="muted">${esc(d.id)}</code></h2>
      ${d.reason ? `<div class="reason">${esc(d.reason)}</div>` : ""}
      <p class="muted">${esc(d.kind)} · proposed by ${esc(d.proposer)} · ${fmtTime(d.created)}${d.schedule ? " · " + esc(d.schedule) : ""} · progress ${progress(d.progress)}</p>
      ${res}
      <h3>Approvals</h3><table id="votes"><tr><th>party</th><th>vote</th><th>reason</th><th>readable fields</th></tr>${votes}</table>
      <h3>Runs</h3><table id="runs"><tr><th>run</th><th>status</th><th>model hash</th><th>reason</th></tr>${runRows || '<tr><td colspan="4" class="muted">not started</td></tr>'}</table>
      ${run !== null ? `<h3>Downloads (run ${run}, this party)</h3><div id="downloads">${dl}</div>` : ""}
    </div>
    <div class="card"><h2>Metrics per round${run !== null ? " (run " + run + ")" : ""}</h2>
      <div class="plots">${plot("metrics-plot", "accuracy", acc, [0, 1])}${plot("loss-plot", "loss", loss, null)}</div>
    </div>
    <div class="card"><h2>Contributors per round</h2>
      <table id="contributors"><tr><th>round</th><th>contributors</th><th>dropped</th><th>accuracy</th></tr>${contrib || '<tr><td colspan="4" class="muted">no rounds yet</td></tr>'}</table>
    </div>
    <div class="card"><h2>Log</h2><pre id="log"></pre></div>`);
  if (changed) el.querySelectorAll("button.download").forEach(b => b.addEventListener("click", () => download(d.id, run, b.dataset.what)));
  await tailLog(id, changed);
}

async function tailLog(id, redraw) {
  if (logCursor.task !== id) logCursor = { task: id, after: "0.0", lines: [] };
  const r = await api(`/api/tasks/${id}/logs?after=${logCursor.after}`);
  logCursor.lines = (logCursor.lines || []).concat(r.lines).slice(-400);
  logCursor.after = r.next;
  const pre = document.getElementById("log");
  if (pre && (redraw || r.lines.length)) {
    pre.textContent = logCursor.lines.join("\n");
    pre.scrollTop = pre.scrollHeight;
  }
}

async function viewTopology(el) {
  const d = await api("/api/node");
  const n = d.parties.length, R = 110, C = 150;
  const pos = d.parties.map((p, i) => [C + R * Math.cos(2 * Math.PI * i / n - Math.PI / 2), C + R * Math.sin(2 * Math.PI * i / n - Math.PI / 2)]);
  let g = "";
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++)
    g += `<line x1="${pos[i][0]}" y1="${pos[i][1]}" x2="${pos[j][0]}" y2="${pos[j][1]}" stroke="#dde2ea"/>`;
  d.parties.forEach((p, i) => {
    g += `<circle cx="${pos[i][0]}" cy="${pos[i][1]}" r="22" fill="${p.live ? "#1f9d55" : "#d64545"}" stroke="${p.me ? "#1d2430" : "none"}" stroke-width="3"/>`;
    g += `<text x="${pos[i][0]}" y="${pos[i][1] + 5}" text-anchor="middle" fill="#fff" font-weight="700">${esc(p.name)}</text>`;
  });
  const rows = d.parties.map(p => `<tr class="party" data-live="${p.live}"><td><span class="dot ${p.live ? "live" : "down"}"></span>${esc(p.name)}${p.me ? " (this node)" : ""}</td><td>${p.live ? "live" : "not heard"}</td><td class="muted">${p.last_heard_s === null ? (p.me ? "-" : "never") : p.last_heard_s + " s ago"}</td><td><code>${esc(p.address)}</code></td></tr>`).join("");
  setHTML(el, `<div class="card"><h2>Topology</h2><div class="plots"><svg width="300" height="300" id="topology-graph">${g}</svg>
    <table id="parties" style="flex:1"><tr><th>party</th><th>liveness</th><th>last heard</th><th>node address</th></tr>${rows}</table></div></div>`);
}

async function viewData(el) {
  const d = await api("/api/datasets");
  let html = '<div class="card"><h2>Data catalog</h2><p class="muted">Names and schemas only: no party sees another\'s paths or rows.</p>';
  for (const [party, sets] of Object.entries(d.datasets)) {
    const rows = Object.entries(sets).map(([name, e]) => `<tr class="dataset"><td><b>${esc(name)}</b><div class="muted">${esc(e.description)}</div></td>
      <td>${esc(e.schema.label)} (${e.schema.classes} classes)</td><td>${esc(JSON.stringify(e.schema.shape))}</td>
      <td class="cols">${esc(e.schema.columns.slice(0, 24).join(", "))}${e.schema.columns.length > 24 ? ", … (" + e.schema.columns.length + " columns)" : ""}</td></tr>`).join("");
    html += `<h3>${esc(party)}</h3><table><tr><th>dataset</th><th>label</th><th>sample shape</th><th>columns</th></tr>${rows || '<tr><td colspan="4" class="muted">none</td></tr>'}</table>`;
  }
  setHTML(el, html + "</div>");
}

async function route() {
  if (timer) { clearTimeout(timer); timer = null; }
  const el = document.getElementById("view");
  const h = location.hash || "#/tasks";
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", h.startsWith(a.getAttribute("href"))));
  try {
    if (!token()) { showLogin(); return; }
    document.getElementById("login").hidden = true;
    const m = /^#\/task\/([0-9a-f]+)$/.exec(h);
    if (m) await viewTask(el, m[1]);
    else if (h === "#/topology") await viewTopology(el);
    else if (h === "#/data") await viewData(el);
    else await viewTasks(el);
  } catch (e) {
    if (e.message !== "unauthorized") setHTML(el, `<div class="card reason">${esc(e.message)}</div>`);
    return;
  }
  timer = setTimeout(route, 1000);  // live: tasks, progress, plots and the log tail
}

async function start() {
  const m = /token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/tasks");
  }
  document.getElementById("login-form").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    route();
  });
  try { document.getElementById("node-name").textContent = "node " + (await (await fetch("/api/health")).json()).node; } catch (e) { /* offline */ }
  window.addEventListener("hashchange", route);
  route();
}

start();
