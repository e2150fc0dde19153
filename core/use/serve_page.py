"""The one page `stylezoo serve` shows: HTML with its CSS and JavaScript inline, nothing fetched from elsewhere.

It asks the server for its models (GET /api/models), sends a photo with the model's conditions to
POST /api/stylize (multipart: model, image, style, alpha, labels) and shows the PNG it gets back beside the
input, with a download link; an error's JSON message is shown on the page. `<body data-state>` says where
it is (loading, ready, working, done, error), for people and for the headless-browser test.
"""

from __future__ import annotations

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stylezoo serve</title>
<link rel="icon" href="data:,">
<style>
:root{--ink:#1d1d1f;--muted:#666;--line:#d8d8d4;--bg:#f6f6f4;--accent:#2a6fb0;--bad:#b3261e}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:var(--bg);color:var(--ink)}
header{display:flex;gap:18px;align-items:baseline;flex-wrap:wrap;padding:14px 24px;border-bottom:1px solid var(--line);
  background:#fff}
header h1{font-size:21px;margin:0}header .model{color:var(--muted)}
main{display:grid;grid-template-columns:320px 1fr;gap:24px;padding:20px 24px;max-width:1400px;margin:0 auto}
@media (max-width:800px){main{grid-template-columns:1fr}}
section.panel{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px}
h2{font-size:15px;margin:14px 0 6px}h2:first-child{margin-top:0}
#drop{border:2px dashed #b8b8b2;border-radius:8px;padding:18px;text-align:center;background:#fbfbfa}
#drop.over{border-color:var(--accent);background:#eef4fa}
label.button,button{display:inline-block;background:var(--accent);color:#fff;border:0;border-radius:6px;
  padding:7px 14px;font:inherit;cursor:pointer}
button:disabled{background:#9db6cf;cursor:default}
label.button input{display:none}
.hint{color:var(--muted);font-size:12.5px;margin:8px 0 0}
select{font:inherit;padding:3px}
.row{display:flex;gap:8px;align-items:center;margin:6px 0}.row input[type=range]{flex:1}
.row output{width:3.2em;text-align:right;font-variant-numeric:tabular-nums}
#style-preview{max-width:100%;max-height:120px;display:block;margin-top:6px}
#message{color:var(--bad);font-weight:600;white-space:pre-wrap}
#status{color:var(--muted);min-height:1.4em}
.views{display:grid;grid-template-columns:1fr 1fr;gap:16px;align-items:start}
figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
figure img{display:block;width:100%;height:auto;min-height:60px;
  background:repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/16px 16px}
figure img:not([src]){visibility:hidden}
figcaption{color:var(--muted);font-size:13px;margin-top:6px;display:flex;justify-content:space-between}
</style></head>
<body data-state="loading">
<header><h1>stylezoo</h1><span class="model" id="model-one"></span>
<label id="model-pick" hidden>Model <select id="model"></select></label></header>
<main>
<section class="panel" id="controls">
  <h2>Photo</h2>
  <div id="drop"><p>Drop a photo here, or</p>
    <label class="button">Choose a photo<input id="photo" type="file" accept="image/*"></label>
    <p class="hint" id="limits"></p></div>
  <div id="style-box" hidden><h2>Style reference</h2>
    <input id="style" type="file" accept="image/*">
    <img id="style-preview" alt="style reference" hidden>
    <p class="hint" id="style-hint"></p>
    <div class="row"><label for="alpha">Strength</label>
      <input id="alpha" type="range" min="0" max="1" step="0.05" value="1" disabled>
      <output id="alpha-value">1.00</output></div>
  </div>
  <div id="labels-box" hidden><h2>Style mix</h2><div id="labels"></div>
    <p class="hint">The weights are normalised to sum to 1.</p></div>
  <p><button id="go" disabled>Restyle</button></p>
  <p id="message" role="alert" hidden></p>
  <p id="status" aria-live="polite"></p>
</section>
<section class="views">
  <figure><img id="input" alt="your photo">
    <figcaption><span>input</span><span id="input-size"></span></figcaption></figure>
  <figure><img id="result" alt="the restyled photo">
    <figcaption><span>result</span><a id="download" hidden>Download</a></figcaption></figure>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let models = [], limits = {}, photo = null, styleFile = null, resultUrl = null, inputUrl = null, styleUrl = null,
  ticket = 0;

function state(s) { document.body.dataset.state = s; }
function message(text) { $("message").textContent = text || ""; $("message").hidden = !text; if (text) state("error"); }
function current() { return models.find((m) => m.id === $("model").value) || models[0]; }

async function init() {
  try {
    const r = await fetch("/api/models");
    const data = await r.json();
    models = data.models; limits = data.limits;
  } catch (e) { message("Could not reach the stylezoo server: is `stylezoo serve` still running?"); return; }
  for (const m of models) {
    const o = document.createElement("option"); o.value = m.id; o.textContent = m.name; $("model").append(o);
  }
  $("model-pick").hidden = models.length < 2;
  $("limits").textContent = `Up to ${limits.max_upload_mb} MB and ${limits.max_megapixels} megapixels` +
    (limits.size ? `; larger photos are reduced to ${limits.size} px on their shorter side.` : ".");
  showControls();
  state("ready");
}

function showControls() {
  const m = current();
  $("model-one").textContent = `${m.name} · ${m.generator}`;
  $("style-box").hidden = !m.takes_style;
  $("style-hint").textContent = m.has_default_style
    ? "Optional: without one, the model's mean training style."
    : "Choose a style image (without one the photo is only reconstructed).";
  const box = $("labels"); box.textContent = "";
  $("labels-box").hidden = m.labels.length === 0;
  m.labels.forEach((name, i) => {
    const row = document.createElement("div"); row.className = "row";
    const id = `label-${i}`;
    row.innerHTML = `<label for="${id}"></label><input id="${id}" type="range" min="0" max="1" step="0.05">` +
                    `<output></output>`;
    row.querySelector("label").textContent = name;
    const input = row.querySelector("input"), out = row.querySelector("output");
    input.value = i === 0 ? "1" : "0"; input.dataset.label = name;
    out.textContent = Number(input.value).toFixed(2);
    input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(2); });
    box.append(row);
  });
  $("go").disabled = !photo;
}

function tooBig(file) {
  if (file.size > limits.max_upload_mb * 1e6) {
    message(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${limits.max_upload_mb} MB.`);
    return true;
  }
  return false;
}

function setPhoto(file) {
  if (!file) return;
  message("");
  if (tooBig(file)) return;
  photo = file;
  if (inputUrl) URL.revokeObjectURL(inputUrl);
  inputUrl = URL.createObjectURL(file);
  $("input").src = inputUrl;
  $("input").onload = () => {
    $("input-size").textContent = `${$("input").naturalWidth} × ${$("input").naturalHeight}`;
  };
  $("input").onerror = () => { $("input-size").textContent = ""; };
  $("go").disabled = false;
  restyle();
}

function setStyle(file) {
  if (!file) return;
  message("");
  if (tooBig(file)) return;
  styleFile = file;
  if (styleUrl) URL.revokeObjectURL(styleUrl);
  styleUrl = URL.createObjectURL(file);
  $("style-preview").src = styleUrl; $("style-preview").hidden = false;
  $("alpha").disabled = false;
  if (photo) restyle();
}

async function restyle() {
  const m = current();
  if (!photo) { message("Choose a photo first."); return; }
  const mine = ++ticket;
  const form = new FormData();
  form.append("model", m.id);
  form.append("image", photo, photo.name || "photo");
  if (m.takes_style && styleFile) {
    form.append("style", styleFile, styleFile.name || "style");
    form.append("alpha", $("alpha").value);
  }
  if (m.labels.length) {
    const mix = {};
    for (const input of $("labels").querySelectorAll("input")) mix[input.dataset.label] = Number(input.value);
    form.append("labels", JSON.stringify(mix));
  }
  message(""); state("working"); $("status").textContent = "Restyling…"; $("go").disabled = true;
  let r;
  try {
    r = await fetch("/api/stylize", { method: "POST", body: form });
  } catch (e) {
    if (mine === ticket) {
      $("status").textContent = ""; $("go").disabled = false;
      message("The server did not answer: is `stylezoo serve` still running?");
    }
    return;
  }
  if (mine !== ticket) return;  // a newer request is on its way
  $("go").disabled = false;
  if (!r.ok) {
    let text = `${r.status} ${r.statusText}`;
    try { text = (await r.json()).error || text; } catch (e) { /* not JSON: keep the status */ }
    $("status").textContent = ""; message(text); return;
  }
  const blob = await r.blob();
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  const img = $("result");
  img.onload = () => {
    const note = r.headers.get("X-Stylezoo-Note");
    $("status").textContent = `${m.name}: ${img.naturalWidth} × ${img.naturalHeight}` +
      ` in ${r.headers.get("X-Stylezoo-Seconds")} s` + (note ? ` (${note})` : "");
    state("done");
  };
  img.onerror = () => message("The result could not be shown.");
  img.src = resultUrl;
  const a = $("download");
  a.href = resultUrl; a.download = (photo.name || "photo").replace(/\.[^.]*$/, "") + "-stylized.png"; a.hidden = false;
}

$("photo").addEventListener("change", (e) => setPhoto(e.target.files[0]));
$("style").addEventListener("change", (e) => setStyle(e.target.files[0]));
$("alpha").addEventListener("input", () => { $("alpha-value").textContent = Number($("alpha").value).toFixed(2); });
$("model").addEventListener("change", () => { showControls(); if (photo) restyle(); });
$("go").addEventListener("click", restyle);
// a photo dropped anywhere on the page is the photo (the browser would open it in place of the page)
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) {
  window.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
window.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (!file) return;
  if (e.target === $("style") || $("style-box").contains(e.target)) setStyle(file); else setPhoto(file);
});
init();
</script>
</body></html>
"""
