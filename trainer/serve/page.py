"""The upload page at ``GET /``: one self-contained HTML file (inline CSS and script, no CDN, no request leaves it).

The page asks ``/health`` for the model's name and classes and posts the chosen image to
``/predict``; everything the server answers is put on the page as text (``textContent``), never
as HTML. The Content-Security-Policy allows only this page's own script and style (by digest),
images from the file picked (``blob:``) and requests to this server.
"""
from __future__ import annotations

import base64
import hashlib

STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:40rem;padding:0 1rem;color:#222}
h1{font-size:1.4rem;margin:0 0 .2rem}
#model{color:#666;margin:0 0 1.2rem}
#drop{border:2px dashed #999;border-radius:8px;padding:1.2rem;text-align:center}
#drop.over{border-color:#2a6;background:#f3fbf6}
#preview{width:8rem;height:auto;max-height:16rem;object-fit:contain;image-rendering:pixelated;margin:1rem auto 0;display:none}
#result{font-size:1.3rem;margin:1rem 0 .4rem;min-height:1.6rem}
#result.error{color:#b00;font-size:1rem}
#notice{color:#8a6d00;font-size:.9rem}
table{border-collapse:collapse;margin-top:.6rem}
td{padding:.15rem .6rem .15rem 0}
.bar{background:#2a6;height:.7rem;border-radius:2px}
"""

SCRIPT = """
const $ = (id) => document.getElementById(id);
fetch('health').then((r) => r.json()).then((h) => {
  $('model').textContent = h.model + ': ' + h.classes + ' classes, ' + h.input_shape.join('x') + ' inputs (' + h.format + ')';
}).catch(() => { $('model').textContent = 'the server does not answer /health'; });
function show(file) {
  if (!file) return;
  const preview = $('preview');
  preview.src = URL.createObjectURL(file);
  preview.style.display = 'block';
  $('result').className = '';
  $('result').textContent = 'classifying ' + file.name + ' ...';
  $('notice').textContent = '';
  $('scores').replaceChildren();
  const body = new FormData();
  body.append('file', file, file.name);
  fetch('predict?top_k=' + $('topk').value, {method: 'POST', body: body})
    .then((r) => r.json().then((answer) => ({ok: r.ok, status: r.status, answer: answer})))
    .then(({ok, status, answer}) => {
      if (!ok) { $('result').className = 'error'; $('result').textContent = 'error ' + status + ': ' + answer.error; return; }
      $('result').textContent = 'prediction: ' + answer.name + ' (' + (100 * answer.probability).toFixed(1) + '%)';
      $('notice').textContent = answer.notice || '';
      for (const entry of answer.top_k) {
        const row = document.createElement('tr');
        const name = document.createElement('td'); name.textContent = entry.name;
        const value = document.createElement('td'); value.textContent = (100 * entry.probability).toFixed(1) + '%';
        const cell = document.createElement('td'); const bar = document.createElement('div');
        bar.className = 'bar'; bar.style.width = Math.max(1, Math.round(160 * entry.probability)) + 'px';
        cell.appendChild(bar); row.append(name, value, cell); $('scores').appendChild(row);
      }
    })
    .catch((e) => { $('result').className = 'error'; $('result').textContent = 'request failed: ' + e; });
}
$('file').addEventListener('change', (e) => show(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); show(e.dataTransfer.files[0]); });
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>trainer serve</title>
<style>{STYLE}</style></head>
<body>
<h1>trainer serve</h1>
<p id="model">loading ...</p>
<div id="drop">
<input type="file" id="file" accept="image/*"> or drop an image here
<label>&nbsp;top <select id="topk"><option>1</option><option selected>3</option><option>5</option></select></label>
<img id="preview" alt="the image sent">
</div>
<p id="result"></p>
<p id="notice"></p>
<table id="scores"></table>
<script>{SCRIPT}</script>
</body></html>
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_digest(SCRIPT)}; style-src {_digest(STYLE)}; img-src blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
