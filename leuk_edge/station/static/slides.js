// leuk-edge station page, the lab's side of the review tab: which slide is reviewed (the slide bar), who reviews
// (a name asked once, or the --users token's), signing with confirmation, amendments of signed slides, upload
// batches. Loaded after station.js, whose api/post/$/esc/pct/loadCells it uses (docs/contracts.md "Station API").
"use strict";
let viewSlide = null;     // the slide the review tab shows; null until the list is read (the station's current one)
let slideList = [];
let reviewerName = null;  // who reviews on this page
let usersMode = false;    // --users: the name is the token's, never typed
let amendChanges = [];    // [{cell, label}] staged for an amendment of the signed slide in view
const REVIEWER_KEY = "leuk-edge-reviewer";

// --- who reviews
async function initReviewer() {
  const me = await api("/api/whoami");
  usersMode = me.users;
  reviewerName = me.users ? me.reviewer : localStorage.getItem(REVIEWER_KEY);
  showReviewer();
}
function showReviewer() {
  $("reviewer").textContent = reviewerName || (usersMode ? "(this token names no reviewer)" : "(no name yet)");
  $("reviewer-change").hidden = usersMode;
}
function askReviewer() {
  const name = (prompt("Your name, recorded with every review and signature on this station:", reviewerName || "") || "").trim();
  if (name) { reviewerName = name; localStorage.setItem(REVIEWER_KEY, name); }
  showReviewer();
  return reviewerName;
}
function who() {  // the request body's reviewer: asked once; with --users the station takes the token's name
  if (usersMode) return {};
  return (reviewerName || askReviewer()) ? {reviewer: reviewerName} : null;
}

// --- the slide bar
const viewed = () => slideList.find((s) => s.id === viewSlide) || null;
const canReview = () => { const s = viewed(); return !s || s.state === "open"; };
const cellsUrl = () => "/api/cells" + (viewSlide ? "?slide=" + encodeURIComponent(viewSlide) : "");
function slideText(s) {
  const kind = s.kind === "live" ? "live" : `${s.kind} batch`;
  const state = s.state === "open" ? "open" : `${s.state} by ${s.signed_by}`;
  return `${s.id} · ${kind} · ${state} · ${s.reviewed}/${s.cells} reviewed${s.current ? " · current" : ""}`;
}
async function loadSlides() {
  slideList = await api("/api/slides");
  if (!viewSlide || !viewed()) viewSlide = (slideList.find((s) => s.current) || slideList[slideList.length - 1] || {}).id || null;
  $("slide-select").innerHTML = slideList.map((s) =>
    `<option value="${esc(s.id)}"${s.id === viewSlide ? " selected" : ""}>${esc(slideText(s))}</option>`).join("");
  showSlideStatus();
}
async function showSlideStatus() {
  const s = viewed();
  const live = health && health.source;
  let text = "";
  if (s && s.state !== "open") text = `Signed by ${s.signed_by} (version ${s.version}): read-only; a correction is an amendment (below).`;
  else if (s && s.kind !== "live") text = `An ${s.kind} batch: its own slide; the live source does not feed it.`;
  else if (s && s.live && live) {
    const paused = (await api("/api/summary")).paused;
    text = paused ? "Live source paused: no new cells join this slide while you review."
                  : "The live source is feeding this slide: new cells keep arriving. Pause it to review a fixed set.";
    $("review-pause").textContent = paused ? "Resume live source" : "Pause live source";
  } else if (s && s.live) text = "No live source: this slide gets no new cells.";
  $("review-pause").hidden = !(s && s.live && live);
  $("slide-status").textContent = text;
  $("sign-btn").hidden = !canReview();
  $("amend").hidden = canReview();
}
$("slide-select").addEventListener("change", async (ev) => {
  viewSlide = ev.target.value;
  amendChanges = [];
  const s = viewed();
  if (s && s.state === "open" && !s.current) await post(`/api/slides/${encodeURIComponent(s.id)}/open`, who() || {});
  await loadSlides();
  loadCells();
});
$("new-slide").addEventListener("click", async () => {
  const s = await post("/api/slides", who() || {});
  viewSlide = s.id;
  await loadSlides();
  loadCells();
});
$("review-pause").addEventListener("click", async () => {
  await post("/api/pause", {on: $("review-pause").textContent.startsWith("Pause")});
  showSlideStatus();
});
$("reviewer-change").addEventListener("click", askReviewer);

// --- signing: asks for confirmation; the signed slide cannot change afterwards
function counts(f) {
  return `<td>${f.cells}</td><td>${f.all}</td><td>${f.hem}</td><td>${f.other}</td>` +
    `<td>${withCI(f.blast_fraction, f.ci_low, f.ci_high)}</td>`;
}
function showSigned(s) {
  const box = $("signed");
  box.hidden = false;
  const amended = s.amends ? `<p>Amendment ${s.version} of version ${s.amends.version} (signed by ${esc(s.amends.signed_by)}), ` +
    `by ${esc(s.signed_by)}${s.reason ? ": " + esc(s.reason) : ""}</p>` : "";
  box.innerHTML = `<h3>Signed ${esc(s.slide)} by ${esc(s.signed_by)} (version ${s.version})</h3>${amended}` +
    `<table><tr><th></th><th>cells</th><th>all</th><th>hem</th><th>other</th><th>blast fraction</th></tr>` +
    `<tr><td>pre-classified (model)</td>${counts(s.pre_classified)}</tr><tr><td>verified (reviewer)</td>${counts(s.verified)}</tr></table>` +
    `<p>other is counted apart, never in all, hem or the blast fraction; not classed ${s.not_classed}; agreement ` +
    `${pct(s.agreement)} (${s.agreed} of ${s.cells}); model sensitivity ${pct(s.sensitivity)}, specificity ${pct(s.specificity)}</p>` +
    `<p class="small">saved ${esc(s.file)} and ${esc(s.fhir_file)} (FHIR R4); ${esc(s.disclaimer)}</p>`;
}
$("sign-btn").addEventListener("click", async () => {
  const body = who();
  const s = viewed();
  if (!body || !s) return;
  const name = usersMode ? reviewerName : body.reviewer;
  if (!confirm(`Sign slide ${s.id} as ${name}?\n${s.reviewed} of ${s.cells} cells reviewed.\n` +
               "A signed slide cannot be changed; a correction is an amendment.")) return;
  try {
    showSigned(await post("/api/sign", Object.assign({slide: s.id}, body)));
    viewSlide = null;
    await loadSlides();
    loadCells();
  } catch (e) { $("signed").hidden = false; $("signed").innerHTML = `<p>Cannot sign: ${esc(e.message)}</p>`; }
});

// --- amendments of a signed slide: stage changes on selected cells, then sign the amendment
function showAmendment() {
  $("amend-list").textContent = amendChanges.length ?
    amendChanges.map((c) => `#${c.cell} -> ${c.label}`).join(", ") : "no change yet";
}
$("amend-add").addEventListener("click", () => {
  const track = order[sel];
  if (track === undefined) return;
  amendChanges = amendChanges.filter((c) => c.cell !== track).concat([{cell: track, label: $("amend-label").value}]);
  showAmendment();
});
$("amend-sign").addEventListener("click", async () => {
  const body = who();
  const s = viewed();
  if (!body || !s || !amendChanges.length) return;
  if (!confirm(`Sign an amendment of ${s.id} (${amendChanges.length} change(s))? Version ${s.version} is kept.`)) return;
  try {
    showSigned(await post(`/api/slides/${encodeURIComponent(s.id)}/amend`,
                          Object.assign({changes: amendChanges, reason: $("amend-reason").value}, body)));
    amendChanges = [];
    showAmendment();
    await loadSlides();
    loadCells();
  } catch (e) { $("amend-list").textContent = "not amended: " + e.message; }
});

// --- uploads and folders: each classification is a batch slide of its own
function noteBatch(res) {
  const box = $("batch-note");
  box.hidden = !res.slide;
  if (!res.slide) return;
  box.innerHTML = `These images are batch <b>${esc(res.slide)}</b>, a slide of their own (not the live slide). ` +
    `<button id="review-batch">Review this batch</button>`;
  $("review-batch").addEventListener("click", async () => {
    await post(`/api/slides/${encodeURIComponent(res.slide)}/open`, who() || {});
    viewSlide = res.slide;
    await loadSlides();
    showTab("review");
  });
}

initReviewer().catch(() => {});
loadSlides().catch(() => {});
setInterval(() => { if ($("tab-review").classList.contains("on")) loadSlides().catch(() => {}); }, 3000);
