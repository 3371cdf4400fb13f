"""`leuk-edge report`: one self-contained HTML page a reviewer opens offline. Edge-only (numpy, OpenCV, stdlib).

    write_report(["results.csv", "session.jsonl", "stream_summary.json"], "report.html",
                 ReportOptions(model="models/cnn.onnx", run="runs/cnn", group_by="subject"))

Inputs are classify tables (CSV/JSON/JSONL), stream events (JSONL) and stream summaries (JSON), in any mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..edge.explain import EVIDENCE_SCALE
from ..edge.labels import OTHER, is_uncertain
from .inputs import Inputs, ReportInputError, TableRow, read_inputs
from .samples import GROUP_BY, Sample, stream_samples, table_samples, total

__all__ = ["ReportOptions", "ReportInputError", "build_report", "write_report", "resolve_threshold"]

CAM_NOTE = ("Heat maps: the model's class-activation map, signed evidence on one fixed scale for every map: red = "
            "evidence for all, blue = evidence for hem, no tint = none; full colour at {scale:g} logit units per "
            "map cell (the legend under each map).").format(scale=EVIDENCE_SCALE)


@dataclass
class ReportOptions:
    group_by: str = "folder"          # folder | subject | none (classify tables)
    band: float = 0.1                 # uncertain: edge.labels.is_uncertain, |P(all) - threshold| <= band
    gallery: int = 24                 # cells per gallery (flagged, uncertain)
    threshold: float | None = None    # default: the model's, else inferred from the labels
    model: str | Path | None = None   # adds the card, metadata, calibration and CAM overlays
    run: str | Path | None = None     # adds RUN/metrics.json, calibration, reliability.png
    title: str = "leuk-edge screening report"
    overlays: dict = field(default_factory=dict)  # {row path: overlay PNG} from `classify --cam DIR`

    def validate(self) -> ReportOptions:
        if self.group_by not in GROUP_BY:
            raise ReportInputError(f"unknown --group-by {self.group_by!r}; choose {', '.join(GROUP_BY)}")
        if not 0.0 <= self.band < 0.5:
            raise ReportInputError("--band must be in [0, 0.5)")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ReportInputError("--threshold must be in (0, 1)")
        if self.gallery < 0:
            raise ReportInputError("--gallery must be >= 0")
        return self


def resolve_threshold(rows: list[TableRow], given: float | None, classifier) -> tuple[float, str]:
    """The threshold to draw: given > the model's > 0.5 when the labels agree with it > the lowest P(all) that is
    labelled `all` (the labels were made by p >= threshold, so that is the tightest value they allow)."""
    if given is not None:
        return given, "given"
    if classifier is not None:
        return classifier.threshold, "the model's"
    if not any(r.ok for r in rows):
        return 0.5, "assumed 0.5; pass --model or --threshold to be sure"
    p_all = [r.probability for r in rows if r.ok and r.label == "all"]
    p_hem = [r.probability for r in rows if r.ok and r.label == "hem"]
    if (not p_all or min(p_all) >= 0.5) and (not p_hem or max(p_hem) < 0.5):
        return 0.5, "0.5, consistent with the input labels; pass --model or --threshold to be sure"
    if p_all and (not p_hem or max(p_hem) < min(p_all)):
        return min(p_all), "inferred from the labels (lowest P(all) labelled all); pass --model to be sure"
    return 0.5, "assumed 0.5: the input labels disagree with any single threshold"


def _gallery_rows(rows: list[TableRow], threshold: float, band: float, n: int):
    """(flagged `all`, uncertain, out of scope) rows: highest P(all), closest to the threshold, highest ood first."""
    classed = [r for r in rows if r.ok and r.label != OTHER]
    flagged = sorted((r for r in classed if r.label == "all"), key=lambda r: -r.probability)[:n]
    near = sorted((r for r in classed if is_uncertain(r.probability, threshold, band)),
                  key=lambda r: abs(r.probability - threshold))[:n]
    other = sorted((r for r in rows if r.label == OTHER), key=lambda r: -(r.ood or 0.0))[:n]
    return flagged, near, other


def build_report(inputs: Inputs, options: ReportOptions | None = None, classifier=None, cam_classifier=None) -> str:
    """The HTML text. `classifier`: an edge Classifier (for the model section and CAM overlays), or None;
    `cam_classifier`: the one whose gated maps are drawn when not `classifier` (`edge.precision.overlay_source`)."""
    from . import images, page
    from .provenance import ModelFacts, RunFacts

    opts = (options or ReportOptions()).validate()
    samples: list[Sample] = table_samples(inputs.rows, opts.group_by) + stream_samples(inputs)
    t = total(samples)
    threshold, how = resolve_threshold(inputs.rows, opts.threshold, classifier)
    probs = t.probabilities
    uncertain = int(np.count_nonzero(is_uncertain(probs, threshold, opts.band)))
    flagged, near, other = _gallery_rows(inputs.rows, threshold, opts.band, opts.gallery)
    shown = list({r.path: r for r in flagged + near + other}.values())
    thumbs = images.thumbnails(shown)
    if opts.overlays:
        cams, cam_note = images.overlay_uris(opts.overlays), CAM_NOTE
    elif (cam_classifier or classifier) is not None and (cam_classifier or classifier).has_cam:
        cams, cam_note = images.cam_uris(cam_classifier or classifier, shown), CAM_NOTE
    else:
        cams, cam_note = {}, ("No CAM overlays: " + ("the model has no cam output." if classifier is not None
                                                     else "no --model with a cam output given."))
    notes = []
    if any(s.unit == "tracked cells" for s in samples):
        notes.append("Stream runs count tracked cells: each cell once, however many frames it was seen in, by its "
                     "track's label (mean P(all) and mean out-of-scope score over its sightings); the histogram "
                     "and the uncertain count use each tracked cell's mean P(all).")
    if classifier is not None and classifier.scope_note():
        notes.append(classifier.scope_note())
    sections = [
        page.headline(t, uncertain, threshold, opts.band),
        page.samples_table(samples, opts.group_by) if len(samples) > 1 else "",
        page.histogram_section(probs, threshold, opts.band, how),
        page.gallery_section(flagged, near, other, thumbs, cams, cam_note) if inputs.rows else "",
        page.model_section(ModelFacts.of(classifier) if classifier is not None else None),
        page.run_section(RunFacts.of(opts.run) if opts.run else None),
        page.inputs_section(inputs.files, notes),
    ]
    return page.page(opts.title, sections)


def write_report(paths, out: str | Path, options: ReportOptions | None = None, classifier=None,
                 inputs: Inputs | None = None, cam_classifier=None) -> Path:
    """Read `paths` (or take `inputs` already read), build the page, write it to `out` (parents created)."""
    opts = (options or ReportOptions()).validate()
    if classifier is None and opts.model:
        from ..edge import Classifier
        from ..edge.precision import overlay_classifier

        classifier = Classifier(opts.model)
        cam_classifier = overlay_classifier(classifier)
    text = build_report(inputs if inputs is not None else read_inputs(paths), opts, classifier, cam_classifier)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
