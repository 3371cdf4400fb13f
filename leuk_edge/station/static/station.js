// leuk-edge station page: plain JS over the station API (docs/contracts.md "Station API"). No framework, no CDN.
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
// The anti-CSRF token this page was served with: every POST sends it back (the station refuses POSTs without it).
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const withToken = (url) => TOKEN ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN) : url;
const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(1) + " %";
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(path, opts = {}) {
  opts.headers = Object.assign({}, opts.headers || {}, TOKEN ? {Authorization: "Bearer " + TOKEN} : {},
                               opts.method && opts.method !== "GET" ? {"X-CSRF-Token": CSRF} : {});
  const r = await fetch(path, opts);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw Object.assign(new Error(body.detail || r.statusText), {status: r.status, body});
  return body;
}
const post = (path, data) => api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});

// --- tabs
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("on", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("on", t.id === "tab-" + name));
  if (name === "review") loadCells();
  if (name === "model") loadModel();
}

// --- live
let health = null;
async function initLive() {
  health = await api("/api/health");
  $("disclaimer").textContent = health.disclaimer;
  $("band").textContent = `P(all) within ${health.band} of ${health.threshold}`;
  if (!health.source) { $("no-source").hidden = false; $("live").hidden = true; return; }
  $("live").src = withToken("/api/stream.mjpg");
  $("source-status").textContent = health.source;
  const es = new EventSource(withToken("/api/events"));
  es.onmessage = (m) => { const e = JSON.parse(m.data); $("latency").textContent = e.latency_ms.toFixed(0) + " ms"; };
  es.onerror = () => { api("/api/health").then((h) => { if (!h.running) es.close(); }).catch(() => es.close()); };
}
async function refreshSummary() {
  try {
    const s = await api("/api/summary");
    $("frames-count").textContent = s.frames;
    $("cells-count").textContent = s.cells;
    $("all-count").textContent = s.all;
    $("hem-count").textContent = s.hem;
    $("other-count").textContent = s.other;
    $("blast-fraction").textContent = s.blast_fraction === null ? "-" :
      `${pct(s.blast_fraction)}\n95 % CI ${pct(s.ci_low)} - ${pct(s.ci_high)}`;
    $("fps").textContent = s.fps.toFixed(1);
    $("pause-btn").textContent = s.paused ? "Resume" : "Pause";
    if (s.error) $("source-status").textContent = "pipeline error: " + s.error;
    else if (health && health.source && !s.running) $("source-status").textContent = health.source + " (ended)";
  } catch (e) { /* the next poll tries again */ }
}
let recording = false;
$("record-btn").addEventListener("click", async () => {
  const r = await post("/api/record", {on: !recording});
  recording = r.recording;
  $("record-btn").textContent = recording ? "Stop recording" : "Start recording";
  $("record-status").textContent = r.path ? (recording ? "recording to " : "saved ") + r.path : "";
});
$("pause-btn").addEventListener("click", async () => {
  const r = await post("/api/pause", {on: $("pause-btn").textContent === "Pause"});
  $("pause-btn").textContent = r.paused ? "Resume" : "Pause";
});

// --- review
let cells = [], order = [], sel = 0, selTrack = null;
const GALLERIES = ["all", "uncertain", "hem"];
async function loadCells() {
  cells = await api(withToken("/api/cells"));
  renderCells();
}
function sorted(list) {
  const k = $("sort").value;
  const f = {"p-desc": (a, b) => b.probability - a.probability, "p-asc": (a, b) => a.probability - b.probability,
             "track": (a, b) => a.track - b.track, "frames": (a, b) => b.frames - a.frames}[k];
  return list.slice().sort(f);
}
function renderCells() {
  order = [];
  const cam = $("show-cam").checked;
  for (const g of GALLERIES) {
    const list = sorted(cells.filter((c) => c.pre_class === g));
    $("n-" + g).textContent = `(${list.length})`;
    $("gallery-" + g).innerHTML = list.map((c) => {
      order.push(c.track);
      const src = cam && c.cam ? c.cam : c.crop;
      return `<div class="card${c.review ? " done" : ""}" data-track="${c.track}" tabindex="-1">` +
        (src ? `<img src="${esc(src)}" alt="cell ${c.track}">` : "<div>(no crop)</div>") +
        `<div>#${c.track} P(all) ${c.probability.toFixed(2)}</div><div>${c.frames} frame(s)</div>` +
        `<div class="rev">${c.review ? "&#10003; " + esc(c.review) : "unreviewed"}</div></div>`;
    }).join("");
  }
  // The selection follows its cell when the gallery refreshes (new cells, updated P(all)).
  sel = selTrack !== null && order.includes(selTrack) ? order.indexOf(selTrack) : Math.min(sel, Math.max(order.length - 1, 0));
  document.querySelectorAll(".card").forEach((el) => el.addEventListener("click", () => { sel = order.indexOf(+el.dataset.track); selTrack = order[sel]; highlight(); }));
  const done = cells.filter((c) => c.review).length;
  $("review-progress").textContent = `${done} / ${cells.length} reviewed`;
  highlight();
}
function highlight() {
  document.querySelectorAll(".card").forEach((el) => el.classList.toggle("sel", +el.dataset.track === order[sel]));
  document.querySelector(".card.sel")?.scrollIntoView({block: "nearest"});
}
async function reviewSelected(label) {
  const track = order[sel];
  if (track === undefined) return;
  const c = cells.find((x) => x.track === track);
  label = label || (c.pre_class === "uncertain" ? c.label : c.pre_class);
  c.review = label;  // shown at once; the next key already goes to the next cell
  if (sel < order.length - 1) sel += 1;
  selTrack = order[sel];
  renderCells();
  try { await post(`/api/cells/${track}/review`, {label}); }
  catch (e) { c.review = null; renderCells(); $("review-progress").textContent = "not saved: " + e.message; }
}
document.addEventListener("keydown", (ev) => {
  if (!$("tab-review").classList.contains("on") || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  const keys = {a: "all", h: "hem", n: "not classed", c: null, Enter: null};
  if (ev.key in keys) { reviewSelected(keys[ev.key]); ev.preventDefault(); }
  else if (ev.key === "ArrowRight" || ev.key === "ArrowDown" || ev.key === "j") { sel = Math.min(sel + 1, order.length - 1); selTrack = order[sel]; highlight(); ev.preventDefault(); }
  else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp" || ev.key === "k") { sel = Math.max(sel - 1, 0); selTrack = order[sel]; highlight(); ev.preventDefault(); }
});
$("sort").addEventListener("change", renderCells);
$("show-cam").addEventListener("change", renderCells);
$("sign-btn").addEventListener("click", async () => {
  const box = $("signed");
  box.hidden = false;
  try {
    const s = await api("/api/sign", {method: "POST"});
    const row = (name, f) => `<tr><td>${name}</td><td>${f.cells}</td><td>${f.all}</td><td>${f.hem}</td>` +
      `<td>${pct(f.blast_fraction)} (95 % CI ${pct(f.ci_low)} - ${pct(f.ci_high)})</td></tr>`;
    box.innerHTML = `<h3>Signed ${esc(s.slide)}</h3><table><tr><th></th><th>cells</th><th>all</th><th>hem</th><th>blast fraction</th></tr>` +
      row("pre-classified (model)", s.pre_classified) + row("verified (reviewer)", s.verified) + `</table>` +
      `<p>agreement ${pct(s.agreement)} (${s.agreed} of ${s.cells}); not classed ${s.not_classed}; uncertain band ` +
      `&plusmn;${s.uncertain_band}; model sensitivity ${pct(s.sensitivity)}, specificity ${pct(s.specificity)}</p>` +
      `<p class="small">saved ${esc(s.file)}; ${esc(s.disclaimer)}</p>`;
    loadCells();
  } catch (e) { box.innerHTML = `<p>Cannot sign: ${esc(e.message)}</p>`; }
});

// --- classify
let lastRows = [];
function showRows(res) {
  lastRows = res.rows;
  const s = res.summary;
  $("classify-summary").textContent = `${s.images} images: all ${s.all}, hem ${s.hem}, other ${s.other}, errors ${s.errors}; blast fraction ` +
    (s.blast_fraction === null ? "n/a" : `${pct(s.blast_fraction)} (95 % CI ${pct(s.blast_fraction_ci95[0])} - ${pct(s.blast_fraction_ci95[1])})`);
  $("classify-results").innerHTML = "<table><thead><tr><th>path</th><th>label</th><th>probability</th><th>ood</th><th>error</th></tr></thead><tbody>" +
    res.rows.map((r) => `<tr><td>${esc(r.path)}</td><td class="${r.label}">${r.label}</td>` +
      `<td>${r.probability === null ? "" : r.probability.toFixed(4)}</td>` +
      `<td>${r.ood === null ? "" : r.ood.toFixed(4)}</td><td>${esc(r.error)}</td></tr>`).join("") + "</tbody></table>";
  $("csv-btn").hidden = false;
}
async function upload(fileList) {
  const fd = new FormData();
  for (const f of fileList) fd.append("files", f, f.name);
  $("classify-summary").textContent = `classifying ${fileList.length} file(s)...`;
  try { showRows(await api("/api/classify", {method: "POST", body: fd})); }
  catch (e) { $("classify-summary").textContent = "refused: " + e.message; }
}
$("files").addEventListener("change", (ev) => upload(ev.target.files));
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); upload(ev.dataTransfer.files); });
$("csv-btn").addEventListener("click", () => {
  const q = (v) => /[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  const num = (v) => v === null ? "" : v.toFixed(6);
  const text = "path,label,probability,ood,error\n" + lastRows.map((r) =>
    [r.path, r.label, num(r.probability), num(r.ood), r.error].map((v) => q(String(v))).join(",")).join("\n") + "\n";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
  a.download = "classify.csv";
  a.click();
});
let folder = "";
async function browse(path) {
  const l = await api(withToken("/api/folders?path=" + encodeURIComponent(path)));
  folder = l.path;
  $("folder-path").textContent = "/" + folder;
  $("folder-images").textContent = l.images;
  $("folder-list").innerHTML = l.folders.map((f) => `<li data-name="${esc(f)}">${esc(f)}/</li>`).join("");
  document.querySelectorAll("#folder-list li").forEach((li) => li.addEventListener("click", () => browse((folder ? folder + "/" : "") + li.dataset.name)));
}
$("folder-up").addEventListener("click", () => browse(folder.split("/").slice(0, -1).join("/")));
$("folder-classify").addEventListener("click", async () => {
  const fd = new FormData();
  fd.append("folder", folder);
  $("classify-summary").textContent = "classifying /" + folder + " ...";
  try { showRows(await api("/api/classify", {method: "POST", body: fd})); }
  catch (e) { $("classify-summary").textContent = "refused: " + e.message; }
});

// --- model
async function loadModel() {
  const m = await api("/api/model");
  const rows = [["file", m.file], ["sha256", m.sha256], ["architecture", m.architecture],
    ["input", `${m.input.width}x${m.input.height} ${m.input.color} ${m.input.layout}, resize ${m.input.resize}`],
    ["threshold", m.threshold], ["calibration", m.calibration ? JSON.stringify(m.calibration) : "none"],
    ["explanations (cam)", m.explanations ? "yes" : "no"], ["providers (running)", m.providers.join(", ")],
    ["source .keras sha256", m.source_sha256 || "-"], ["exported by leuk-edge", m.model_version || "-"],
    ["created", m.created || "-"], ["runner version", m.runner_version]];
  $("model-table").innerHTML = rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("");
  $("parity").innerHTML = m.parity.length ? m.parity.map((p) => p.report ?
    `<p><b>${esc(p.file)}</b>: ${p.report.passed ? "passed" : "FAILED"}, max |diff| ${p.report.max_abs_diff}, ` +
    `decision agreement ${p.report.decision_agreement}, n ${p.report.n}</p>` : `<p>${esc(p.file)}: ${esc(p.error)}</p>`).join("")
    : "<p>no parity report beside the model</p>";
  if (m.card) $("card").textContent = m.card.text;
}

initLive().then(() => {
  if (health.data_root) { $("browser").hidden = false; browse(""); }
}).catch((e) => { $("source-status").textContent = "cannot reach the station: " + e.message; });
refreshSummary();
setInterval(refreshSummary, 1000);
setInterval(() => { if ($("tab-review").classList.contains("on")) loadCells(); }, 3000);
