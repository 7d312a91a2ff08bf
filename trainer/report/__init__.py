"""Pages that show runs: ``report.html`` of one run and a comparison of several (stdlib, NumPy for predictions).

Everything shown comes from a run directory, which is untrusted: it is read through the readers of
``docs/security.md`` (``trainer.report.run_view``), every string put into a page is escaped
(``html.escape``), and each page carries a Content-Security-Policy that allows no request and no
script, so even a string that escaped escaping could neither run nor reach a host. Figures are
inline SVG (curves) and ``data:`` PNGs (images); a page needs no file beside it and no network.

- ``run_view``: what a run directory holds, read bounded and typed, with what is missing said.
- ``svg``: line charts as inline SVG.
- ``images``: small PNGs as ``data:`` URIs (no Pillow).
- ``predictions``: the test split's predictions, the confusion matrix and the worst-misclassified examples.
- ``page``: ``report.html``; ``compare``: several runs side by side (page and terminal rows).
"""
