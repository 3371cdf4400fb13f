"""The report as one self-contained HTML page: inline CSS, inline SVG, images as `data:` URIs, no script and a
Content-Security-Policy that forbids any fetch, so it opens offline and never touches the network.

Numbers a program may read back carry stable ids / data attributes: #cells-count, #all-count, #hem-count,
#other-count, #error-count, #blast-fraction, #ci-low, #ci-high (data-value), #uncertain-count (data-value, data-band,
data-threshold), tr.sample rows in #samples (data-name, data-cells, data-all, data-hem, data-other, data-errors),
figures in #gallery-flagged / #gallery-uncertain / #gallery-other (data-path, data-probability, data-ood, data-cam).
"""

from __future__ import annotations

import datetime as _dt
import html
import json

import numpy as np

from .. import DISCLAIMER, __version__
from ..edge.run_metrics import split_metrics
from . import markdown
from .histogram import histogram_svg
from .provenance import ModelFacts, RunFacts
from .samples import Sample

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#1d2330}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;border-bottom:1px solid #ccd;padding-bottom:4px;margin-top:28px}
.disclaimer{background:#fff4d6;border:1px solid #e0b84a;padding:8px 12px;font-weight:600}
.headline{display:flex;flex-wrap:wrap;gap:12px}.stat{border:1px solid #ccd;border-radius:6px;padding:8px 14px}
.stat .v{font-size:22px;font-weight:700;display:block}.stat .k{color:#556;font-size:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.gallery{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:136px;font-size:11px;word-break:break-all}
figure img{display:inline-block;margin-right:4px;width:128px;height:128px;object-fit:contain;background:#000;
border:1px solid #ccd}
figure.all figcaption b{color:#b22}figure.hem figcaption b{color:#272}figure.other figcaption b{color:#5a6f96}
svg text{font-size:11px;fill:#334}svg .bar.all{fill:#c94040}svg .bar.hem{fill:#3c8c3c}
svg .band{fill:#f3d27a;opacity:.45}svg .threshold{stroke:#222;stroke-width:2;stroke-dasharray:5 3}
svg .axis{stroke:#334}pre{background:#f4f5f8;padding:8px;overflow-x:auto}.muted{color:#667}
.card{border-left:3px solid #99a;padding-left:12px}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _stat(id_: str, value, label: str, shown: str | None = None) -> str:
    return (f'<div class="stat"><span class="v" id="{id_}" data-value="{esc(value)}">{esc(shown or value)}</span>'
            f'<span class="k">{esc(label)}</span></div>')


def headline(t: Sample, uncertain: int, threshold: float, band: float) -> str:
    lo, hi = t.interval
    frac = t.blast_fraction
    return ('<section id="headline"><h2>Result</h2><div class="headline">'
            + _stat("cells-count", t.cells, f"{t.unit} (all + hem + other)")
            + _stat("all-count", t.all, "all (blast)")
            + _stat("hem-count", t.hem, "hem (normal)")
            + _stat("other-count", t.other, "other (out of scope, not counted)")
            + _stat("blast-fraction", "" if frac is None else f"{frac:.6f}", "blast fraction (all / (all + hem))",
                    pct(frac))
            + _stat("ci-low", f"{lo:.6f}", "95 % Wilson CI, low", pct(lo))
            + _stat("ci-high", f"{hi:.6f}", "95 % Wilson CI, high", pct(hi))
            + _stat("error-count", t.errors, "unreadable files")
            + f'<div class="stat"><span class="v" id="uncertain-count" data-value="{uncertain}" '
              f'data-band="{band}" data-threshold="{threshold}">{uncertain}</span><span class="k">uncertain '
              f'(|P(all) - {threshold:.3f}| &le; {band:g})</span></div>'
            + "</div></section>")


def samples_table(samples: list[Sample], group_by: str) -> str:
    rows = []
    for s in samples:
        lo, hi = s.interval
        frac = s.blast_fraction
        frac_attr = "" if frac is None else f"{frac:.6f}"
        rows.append(
            f'<tr class="sample" data-name="{esc(s.name)}" data-cells="{s.cells}" data-all="{s.all}" '
            f'data-hem="{s.hem}" data-other="{s.other}" data-errors="{s.errors}" data-blast-fraction="{frac_attr}" '
            f'data-ci-low="{lo:.6f}" data-ci-high="{hi:.6f}"><td>{esc(s.name)}</td><td>{esc(s.unit)}</td>'
            f'<td class="n">{s.cells}</td><td class="n">{s.all}</td><td class="n">{s.hem}</td>'
            f'<td class="n">{s.other}</td><td class="n">{s.errors}</td><td class="n">{pct(frac)}</td><td class="n">{pct(lo)} – {pct(hi)}</td>'
            + (f'<td class="n">{s.frames}</td>' if any(x.frames is not None for x in samples) else "") + "</tr>")
    frames_th = "<th>frames</th>" if any(x.frames is not None for x in samples) else ""
    return (f'<section id="samples-section"><h2>Per sample ({len(samples)}, grouped by {esc(group_by)})</h2>'
            f'<table id="samples"><thead><tr><th>sample</th><th>counted</th><th>cells</th><th>all</th>'
            f'<th>hem</th><th>other</th><th>errors</th><th>blast fraction</th><th>95 % Wilson CI</th>{frames_th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def histogram_section(probs: np.ndarray, threshold: float, band: float, threshold_note: str) -> str:
    return ('<section id="histogram"><h2>P(all) distribution</h2>'
            f'<p>P(all) of {len(probs)} classed cells (a tracked cell: its mean over its sightings; other cells '
            f'left out); threshold {threshold:.3f} ({esc(threshold_note)}); the shaded band (P(all) within {band:g} '
            f'of the threshold, edges included) holds the uncertain cells.</p>'
            + histogram_svg(probs, threshold, band) + "</section>")


def _figure(row, thumbs: dict, cams: dict) -> str:
    imgs = [f'<img alt="{alt}" src="{uri}">' for alt, uri in (("cell", thumbs.get(row.path)),
                                                                ("class-activation map", cams.get(row.path))) if uri]
    img = "".join(imgs) or '<div class="muted">(image not readable here)</div>'
    wide = ' style="width:270px"' if len(imgs) > 1 else ""
    ood = "" if row.ood is None else f"{row.ood:.6f}"
    return (f'<figure{wide} class="{esc(row.label)}" data-path="{esc(row.path)}" '
            f'data-probability="{row.probability:.6f}" data-ood="{ood}" '
            f'data-cam="{1 if row.path in cams else 0}">{img}<figcaption><b>{esc(row.label)}</b> '
            f'P(all) {row.probability:.3f}' + (f' ood {row.ood:.2f}' if row.ood is not None else "")
            + f'<br>{esc(row.path)}</figcaption></figure>')


def gallery_section(flagged: list, uncertain: list, other: list, thumbs: dict, cams: dict, cam_note: str) -> str:
    def block(id_, title, rows):
        body = "".join(_figure(r, thumbs, cams) for r in rows) or '<p class="muted">none</p>'
        return f'<h3>{esc(title)}</h3><div class="gallery" id="{id_}">{body}</div>'

    return ('<section id="gallery"><h2>Cells to review</h2>'
            f'<p class="muted">{esc(cam_note)}</p>'
            + block("gallery-flagged", f"Flagged as all (highest P(all) first, {len(flagged)} shown)", flagged)
            + block("gallery-uncertain", f"Most uncertain (closest to the threshold, {len(uncertain)} shown)",
                    uncertain)
            + block("gallery-other", f"Out of scope: other, not counted in all, hem or the blast fraction (farthest "
                                     f"from the training cells first, {len(other)} shown)", other)
            + "</section>")


def _kv_table(id_: str, d: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v) if isinstance(v, (dict, list)) else v)}</td></tr>"
                   for k, v in d.items())
    return f'<table id="{id_}">{rows}</table>'


def model_section(m: ModelFacts | None) -> str:
    if m is None:
        return ('<section id="model"><h2>Model</h2><p class="muted">No model given (<code>--model M.onnx</code> '
                'adds its card, metadata, calibration and CAM overlays).</p></section>')
    cal = m.metadata.get("calibration")
    cal_html = (_kv_table("calibration", cal) if isinstance(cal, dict)
                else '<p id="calibration" class="muted">The model records no calibration (uncalibrated P(all)).</p>')
    parity = _kv_table("parity", {k: v for k, v in m.parity.items() if not isinstance(v, (list, dict))}) \
        if m.parity else '<p class="muted">No parity report beside the model.</p>'
    card = (f'<div class="card" id="model-card" data-file="{esc(m.card_file)}">{markdown.render(m.card)}</div>'
            if m.card else f'<p id="model-card" class="muted">No model card (MODEL.card.md) beside {esc(m.path)}.</p>')
    meta = {k: v for k, v in m.metadata.items() if k != "calibration"}
    return (f'<section id="model"><h2>Model: {esc(m.path)}</h2>'
            f'<h3>Calibration</h3>{cal_html}<h3>Metadata</h3>{_kv_table("model-info", meta)}'
            f'<h3>Parity report</h3>{parity}<h3>Model card</h3>{card}</section>')


METRIC_KEYS = ("n", "accuracy", "balanced_accuracy", "weighted_f1", "roc_auc", "threshold", "ece", "brier", "nll")


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else esc("n/a" if v is None else v)


def run_section(r: RunFacts | None) -> str:
    if r is None:
        return ""
    splits = list(split_metrics(r.metrics))  # `health`, `scope`, ... describe the run, they are not splits
    keys = [k for k in METRIC_KEYS if any(k in r.metrics[s] for s in splits)]
    unc = any(isinstance(r.metrics[s].get("uncalibrated"), dict) for s in splits)
    head = "".join(f"<th>{esc(k)}</th>" for k in keys) + (
        "<th>ece before</th><th>brier before</th><th>nll before</th>" if unc else "")
    rows = []
    for s in splits:
        m = r.metrics[s]
        u = m.get("uncalibrated") or {}
        cells = "".join(f'<td class="n">{_num(m.get(k))}</td>' for k in keys)
        cells += "".join(f'<td class="n">{_num(u.get(k))}</td>' for k in ("ece", "brier", "nll")) if unc else ""
        rows.append(f'<tr data-split="{esc(s)}"><th>{esc(s)}</th>{cells}</tr>')
    cal = _kv_table("run-calibration", r.calibration) if isinstance(r.calibration, dict) else ""
    rel = f'<img id="reliability" alt="reliability diagram" src="{r.reliability_uri}">' if r.reliability_uri else ""
    return (f'<section id="run"><h2>Training run: {esc(r.path)}</h2>'
            f'<table id="run-metrics"><thead><tr><th>split</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table>{cal}{rel}</section>')


def inputs_section(files: list[tuple[str, str]], notes: list[str]) -> str:
    items = "".join(f"<li>{esc(kind)}: <code>{esc(f)}</code></li>" for f, kind in files)
    note = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f'<section id="inputs"><h2>Inputs</h2><ul>{items}</ul>' + (f"<ul>{note}</ul>" if note else "") + \
        "</section>"


def page(title: str, sections: list[str]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"disclaimer\" id=\"disclaimer\">{esc(DISCLAIMER)}</p>"
            + "\n".join(s for s in sections if s)
            + f'<footer><p class="muted">leuk-edge {esc(__version__)}, written {now}. {esc(DISCLAIMER)}</p>'
              "</footer></body></html>\n")
