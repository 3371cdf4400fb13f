// leuk-edge station page: plain JS over the station API (docs/contracts.md "Station API"). No framework, no CDN.
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
// The anti-CSRF token this page was served with: every POST sends it back (the station refuses POSTs without it).
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const withToken = (url) => TOKEN ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN) : url;
const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(1) + " %";
const num = (x, digits = 3) => (x === null || x === undefined) ? "-" : String(Number(Number(x).toFixed(digits)));
// A fraction with its 95 % interval, kept on one line (a no-break space inside each number and unit).
const withCI = (f, lo, hi) => f === null || f === undefined ? "-" :
  `${pct(f)} (95\u00a0% CI ${pct(lo)}\u2013${pct(hi)})`.replace(/ %/g, "\u00a0%");
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
  if (name === "review") loadSlides().then(loadCells);  // slides.js
  if (name === "model") loadModel();
}

// --- live
let health = null;
async function initLive() {
  health = await api("/api/health");
  $("disclaimer").textContent = health.disclaimer;
  $("band").textContent = `P(all) within ${num(health.band)} of ${num(health.threshold)}`;
  if (!health.source) { $("no-source").hidden = false; $("live").hidden = true; return; }
  $("source-status").textContent = health.source;
  connectLive();
}
// The stream and the events end with the source; a restart of a replay connects them again.
function connectLive() {
  $("live").src = withToken("/api/stream.mjpg?view=" + Date.now());
  const es = new EventSource(withToken("/api/events"));
  es.onmessage = (m) => { const e = JSON.parse(m.data); $("latency").textContent = e.latency_ms.toFixed(0) + " ms"; };
  es.onerror = () => { api("/api/health").then((h) => { if (!h.running) es.close(); }).catch(() => es.close()); };
}
// A source that has ended says so plainly; a replay (video, folder, still image) can be played again.
function showSourceState(s) {
  const ended = Boolean(health && health.source && !s.running);
  $("source-ended").hidden = !ended;
  if (!ended) return;
  $("ended-text").textContent = s.error ? `The source stopped with an error: ${s.error}` :
    `The source has ended (${s.ended || "end of source"}): ${health.source}. Counts and cells are kept.`;
  $("restart-btn").hidden = !health.replayable;
}
$("restart-btn").addEventListener("click", async () => {
  try { await post("/api/source/restart", {}); connectLive(); refreshSummary(); }
  catch (e) { $("ended-text").textContent = "cannot restart: " + e.message; }
});
async function refreshSummary() {
  try {
    const s = await api("/api/summary");
    $("frames-count").textContent = s.frames;
    $("cells-count").textContent = s.cells;
    $("all-count").textContent = s.all;
    $("hem-count").textContent = s.hem;
    $("other-count").textContent = s.other;
    $("blast-fraction").textContent = withCI(s.blast_fraction, s.ci_low, s.ci_high);
    $("fps").textContent = s.fps.toFixed(1);
    $("pause-btn").textContent = s.paused ? "Resume" : "Pause";
    showSourceState(s);
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
const GALLERIES = ["all", "uncertain", "hem", "other"];
async function loadCells() {
  cells = await api(withToken(cellsUrl()));  // the slide in view (slides.js)
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
// The model's pre-class may be confirmed with one key only where it is a label: an `uncertain` or `other` cell
// needs the reviewer's own choice (a, h or n), as Scopio-style review asks every suggestion to be actively confirmed.
const NEEDS_CHOICE = new Set(["uncertain", "other"]);
async function reviewSelected(label) {
  const track = order[sel];
  const body = canReview() ? who() : null;  // a signed slide is read-only; the reviewer is named (slides.js)
  if (track === undefined || !body) return;
  const c = cells.find((x) => x.track === track);
  if (!label) {
    if (NEEDS_CHOICE.has(c.pre_class) || c.label === "other") {
      $("review-progress").textContent = `cell #${c.track} is ${c.pre_class}: choose a label (a, h, n or o)`;
      return;
    }
    label = c.pre_class;
  }
  c.review = label;  // shown at once; the next key already goes to the next cell
  if (sel < order.length - 1) sel += 1;
  selTrack = order[sel];
  renderCells();
  try { await post(`/api/cells/${track}/review`, Object.assign({label}, body)); }
  catch (e) { c.review = null; renderCells(); $("review-progress").textContent = "not saved: " + e.message; }
}
const TYPING = new Set(["INPUT", "SELECT", "TEXTAREA"]);
const PRESSABLE = new Set(["BUTTON", "A", "SUMMARY"]);
document.addEventListener("keydown", (ev) => {
  if (!$("tab-review").classList.contains("on") || TYPING.has(ev.target.tagName) || ev.target.isContentEditable) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;  // Ctrl/Cmd/Alt combinations belong to the browser
  if ((ev.key === "Enter" || ev.key === " ") && PRESSABLE.has(ev.target.tagName)) return;  // a focused button's own
  const keys = {a: "all", h: "hem", n: "not classed", o: "other", c: null, Enter: null};
  if (ev.key in keys) { reviewSelected(keys[ev.key]); ev.preventDefault(); }
  else if (ev.key === "ArrowRight" || ev.key === "ArrowDown" || ev.key === "j") { sel = Math.min(sel + 1, order.length - 1); selTrack = order[sel]; highlight(); ev.preventDefault(); }
  else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp" || ev.key === "k") { sel = Math.max(sel - 1, 0); selTrack = order[sel]; highlight(); ev.preventDefault(); }
});
$("sort").addEventListener("change", renderCells);
$("show-cam").addEventListener("change", renderCells);
// Signing and amendments: slides.js.

// --- classify
let lastRows = [];
function showRows(res) {
  lastRows = res.rows;
  const s = res.summary;
  $("classify-summary").textContent = `${s.images} images: all ${s.all}, hem ${s.hem}, other ${s.other}, errors ${s.errors}; blast fraction ` +
    (s.blast_fraction === null ? "n/a" : withCI(s.blast_fraction, s.blast_fraction_ci95[0], s.blast_fraction_ci95[1]));
  $("classify-results").innerHTML = "<table><thead><tr><th>path</th><th>label</th><th>probability</th><th>ood</th><th>error</th></tr></thead><tbody>" +
    res.rows.map((r) => `<tr><td>${esc(r.path)}</td><td class="${r.label}">${r.label}</td>` +
      `<td>${r.probability === null ? "" : r.probability.toFixed(4)}</td>` +
      `<td>${r.ood === null ? "" : r.ood.toFixed(4)}</td><td>${esc(r.error)}</td></tr>`).join("") + "</tbody></table>";
  $("csv-btn").hidden = false;
  noteBatch(res);  // slides.js
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
// A cell a spreadsheet would run as a formula (= + - @, tab, CR first: OWASP "CSV Injection") is prefixed with '
// and quoted; any cell with a quote, comma or line break is quoted.
const csvCell = (v) => {
  const s = /^[=+\-@\t\r]/.test(v) ? "'" + v : v;
  return s !== v || /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
};
$("csv-btn").addEventListener("click", () => {
  const q = csvCell;
  const fixed6 = (v) => v === null ? "" : v.toFixed(6);
  const text = "path,label,probability,ood,error\n" + lastRows.map((r) =>
    [r.path, r.label, fixed6(r.probability), fixed6(r.ood), r.error].map((v) => q(String(v))).join(",")).join("\n") + "\n";
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
    ["threshold", num(m.threshold, 4)], ["calibration", m.calibration ? JSON.stringify(m.calibration) : "none"],
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
