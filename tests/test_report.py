"""`leuk-edge report` and `classify --cam`: a self-contained HTML report whose numbers equal its inputs', and CAM
overlays that are hot where the model's cam output is.

The tiny models score P(all) = sigmoid(1.5 - 10 v) for a uniform gray image of value v in [0, 1], so each test image
below has a hand-known label: black -> 0.818 (all), gray 30 -> 0.580 (all, uncertain), gray 45 -> 0.434 (hem,
uncertain), white -> 0.0002 (hem). The cam model's map is the darkness of each 8x8-pixel block of its 32x32 input.
"""

import csv
import json
import math
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge import DISCLAIMER
from leuk_edge.cli import app
from leuk_edge.report import markdown
from leuk_edge.report.samples import subject_of
from tiny_models import make_tiny_cam_onnx

# (folder, file stem, gray value); "broken" is not an image
CELLS = [("A", "UID_5_1_1_all", 0), ("A", "UID_5_1_2_all", 0), ("A", "UID_5_1_3_all", 0),
         ("A", "UID_H7_1_1_hem", 255), ("A", "UID_H7_1_2_hem", 30),
         ("B", "UID_H7_2_1_hem", 255), ("B", "UID_H7_2_2_hem", 255), ("B", "UID_H7_2_3_hem", 255),
         ("B", "UID_5_2_1_all", 45), ("B", "UID_5_2_2_all", 45), ("B", "UID_5_2_3_all", 0)]
# Hand counts of CELLS under the tiny model (threshold 0.5, band 0.1)
BY_FOLDER = {"A": {"all": 4, "hem": 1, "errors": 0}, "B": {"all": 1, "hem": 5, "errors": 1}}
BY_SUBJECT = {"5": {"all": 4, "hem": 2, "errors": 0}, "H7": {"all": 1, "hem": 4, "errors": 0},
              "(no subject in name)": {"all": 0, "hem": 0, "errors": 1}}
UNCERTAIN = 3  # gray 30 once, gray 45 twice


class Page(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.tags, self.ids = [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids[a["id"]] = a

    def value(self, id_):
        return self.ids[id_]["data-value"]

    def samples(self):
        return {a["data-name"]: {k: int(a[f"data-{k}"]) for k in ("all", "hem", "errors")}
                for t, a in self.tags if t == "tr" and a.get("class") == "sample"}

    def figures(self, gallery_id):
        out, inside = [], False
        for t, a in self.tags:
            if t == "div" and a.get("class") == "gallery":
                inside = a.get("id") == gallery_id
            elif t == "figure" and inside:
                out.append(a)
        return out


def assert_self_contained(text):
    """No URL that a browser could fetch: no http(s) anywhere, every src/href a data: URI, no script."""
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "url(" not in text
    for tag, a in Page(text).tags:
        for k in ("src", "href", "xlink:href", "srcset", "action", "poster", "background"):
            if k in a:
                assert a[k].startswith("data:"), (tag, k, a[k][:60])


def invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    res.all_output = res.output  # click >= 8.2: stdout and stderr interleaved, as a terminal shows them
    return res


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    for folder, stem, v in CELLS:
        (root / folder).mkdir(exist_ok=True)
        cv2.imwrite(str(root / folder / f"{stem}.png"), np.full((48, 48, 3), v, np.uint8))
    (root / "B" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def cam_model(tmp_path_factory):
    cal = {"calibration": {"method": "temperature", "temperature": 1.7, "fitted_on": "val"}}
    return make_tiny_cam_onnx(tmp_path_factory.mktemp("cam") / "tiny_cam.onnx", extra_metadata=cal)


@pytest.fixture(scope="module")
def table(cells, cam_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "results.csv"
    res = invoke("classify", cells, "--model", cam_model, "--out", out)
    assert res.exit_code == 0, res.all_output
    return out


def _table_counts(path):
    rows = list(csv.DictReader(open(path)))
    return rows, {k: sum(r["label"] == k for r in rows) for k in ("all", "hem", "error")}


def test_report_is_self_contained_and_its_counts_equal_the_table(table, tmp_path):
    out = tmp_path / "report.html"
    res = invoke("report", table, "--out", out)
    assert res.exit_code == 0, res.all_output
    text = out.read_text()
    assert_self_contained(text)
    page = Page(text)
    rows, counts = _table_counts(table)
    assert counts == {"all": 5, "hem": 6, "error": 1}  # the hand counts: the table itself is right
    assert int(page.value("all-count")) == counts["all"]
    assert int(page.value("hem-count")) == counts["hem"]
    assert int(page.value("error-count")) == counts["error"]
    assert int(page.value("cells-count")) == counts["all"] + counts["hem"]
    assert float(page.value("blast-fraction")) == pytest.approx(5 / 11, abs=1e-6)
    lo, hi = float(page.value("ci-low")), float(page.value("ci-high"))
    assert lo == pytest.approx(0.2127, abs=1e-3) and hi == pytest.approx(0.7199, abs=1e-3)  # Wilson 5/11, z=1.96
    assert int(page.value("uncertain-count")) == UNCERTAIN
    assert float(page.ids["uncertain-count"]["data-threshold"]) == 0.5
    bars = [int(a["data-count"]) for t, a in page.tags if t == "rect" and "data-count" in a]
    assert sum(bars) == 11 and len(bars) == 20
    assert page.samples() == BY_FOLDER
    assert DISCLAIMER in text
    # the gallery: every flagged cell, with its thumbnail embedded (read from the table's paths)
    flagged = page.figures("gallery-flagged")
    assert len(flagged) == counts["all"]
    assert all(a["data-cam"] == "0" for a in flagged)  # no --model: no overlays
    assert sum(t == "img" for t, a in page.tags) == len(flagged) + len(page.figures("gallery-uncertain"))
    assert len(page.figures("gallery-uncertain")) == UNCERTAIN


def test_group_by_subject(table, tmp_path):
    out = tmp_path / "r.html"
    assert invoke("report", table, "--group-by", "subject", "--out", out).exit_code == 0
    assert Page(out.read_text()).samples() == BY_SUBJECT
    assert subject_of("x/UID_H22_31_5_hem.bmp") == "H22" and subject_of("x/UID_3_1_1_all.bmp") == "3"


def test_json_and_jsonl_tables_give_the_same_counts(cells, cam_model, tmp_path):
    values = []
    for fmt in ("json", "jsonl"):
        t = tmp_path / f"t.{fmt}"
        assert invoke("classify", cells, "--model", cam_model, "--out", t).exit_code == 0
        out = tmp_path / f"{fmt}.html"
        assert invoke("report", t, "--out", out).exit_code == 0
        page = Page(out.read_text())
        values.append((page.value("all-count"), page.value("hem-count"), page.value("error-count"), page.samples()))
    assert values[0] == values[1] == ("5", "6", "1", BY_FOLDER)


def _events(path, frames):
    path.write_text("".join(json.dumps({"frame": i, "time": i / 10, "cells": cells, "latency_ms": 5.0}) + "\n"
                            for i, cells in enumerate(frames)))
    return path


def _cell(track, label, p, track_label):
    return {"box": [1, 2, 30, 30], "label": label, "probability": p, "track": track, "track_label": track_label}


# 7 sightings of 5 tracked cells: track 0 all (mean P 0.92), 1 hem (0.285; one sighting at 0.45 was uncertain),
# 2 all (0.55, uncertain), 3 and 4 hem -> 2 all + 3 hem cells, 1 uncertain at threshold 0.5 and band 0.1
FRAMES = [[_cell(0, "all", 0.93, "all"), _cell(1, "hem", 0.12, "hem")],
          [_cell(0, "all", 0.91, "all"), _cell(1, "hem", 0.45, "hem")], [],
          [_cell(2, "all", 0.55, "all"), _cell(3, "hem", 0.10, "hem"), _cell(4, "hem", 0.05, "hem")]]


def test_stream_events_and_summary(tmp_path):
    events = _events(tmp_path / "session.jsonl", FRAMES)
    # events alone: each tracked cell once, by its track's label; the histogram and uncertain: mean P(all) per cell
    out = tmp_path / "events.html"
    res = invoke("report", events, "--out", out)
    assert res.exit_code == 0, res.all_output
    page = Page(out.read_text())
    assert (page.value("all-count"), page.value("hem-count"), page.value("uncertain-count")) == ("2", "3", "1")
    assert "tracked cells" in out.read_text()
    # with its summary (matched by the summary's jsonl): the run's own counts, its tracked cells in the histogram
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"source": "slide.mp4", "ended": "end of source", "frames": 4,
                                   "cells": {"all": 1, "hem": 2, "total": 3}, "jsonl": str(events)}))
    out = tmp_path / "both.html"
    assert invoke("report", summary, events, "--out", out).exit_code == 0
    text = out.read_text()
    assert_self_contained(text)
    page = Page(text)
    assert (page.value("all-count"), page.value("hem-count")) == ("1", "2")
    assert sum(int(a["data-count"]) for t, a in page.tags if t == "rect" and "data-count" in a) == 5
    assert "tracked cells" in text


def _wilson(k, n, z=1.959963984540054):  # the textbook formula, written out independently of edge.summary
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def _tracked(track, label, p, track_label, ood=None):
    cell = {"box": [10 * track, 2, 30, 30], "label": label, "probability": p}
    return {**cell, **({"ood": ood} if ood is not None else {}), "track": track, "track_label": track_label}


# One blast seen in 10 frames, a normal cell in 2, another in 1, an out-of-scope cell in 3 (its first sighting
# still in scope): 4 cells, 16 sightings. Counted by track: all 1, hem 2, other 1.
SEEN_10 = [[_tracked(0, "all", 0.9, "all")] + ([_tracked(1, "hem", 0.2, "hem")] if i < 2 else [])
           + ([_tracked(2, "hem", 0.1, "hem")] if i == 5 else [])
           + ([_tracked(3, "hem" if i == 6 else "other", 0.3, "hem" if i == 6 else "other", 2.0 if i == 6 else 9.0)]
              if 6 <= i < 9 else []) for i in range(10)]


def test_events_count_tracked_cells_once_with_the_interval_of_n_tracks(tmp_path):
    """Defect 5: events alone counted every sighting (the blast seen 10 times counted 10 times) and the interval
    was over repeated sightings of the same cells. A cell counts once, by its track's label; n = tracks."""
    events = _events(tmp_path / "seen10.jsonl", SEEN_10)
    out = tmp_path / "r.html"
    res = invoke("report", events, "--out", out)
    assert res.exit_code == 0, res.all_output
    page = Page(out.read_text())
    got = {k: page.value(f"{k}-count") for k in ("all", "hem", "other", "cells")}
    assert got == {"all": "1", "hem": "2", "other": "1", "cells": "4"}
    lo, hi = _wilson(1, 3)  # 1 blast of 3 classed cells (the other cell is in neither)
    assert float(page.value("blast-fraction")) == pytest.approx(1 / 3)
    assert (float(page.value("ci-low")), float(page.value("ci-high"))) == (pytest.approx(lo), pytest.approx(hi))
    # the histogram and the uncertain count are per tracked cell too (mean P(all)), `other` left out
    assert sum(int(a["data-count"]) for t, a in page.tags if t == "rect" and "data-count" in a) == 3


def test_total_never_adds_tracks_and_sightings(table, tmp_path):
    """Defect 5: a stream run given with its summary counted tracks, another without counted sightings, and the
    total added both. Every stream sample counts tracked cells; the total adds cells to cells."""
    a = _events(tmp_path / "a.jsonl", SEEN_10)
    summary = tmp_path / "a.json"
    summary.write_text(json.dumps({"source": "a.mp4", "ended": "end of source", "frames": 10, "jsonl": str(a),
                                   "cells": {"all": 1, "hem": 2, "other": 1, "total": 4}}))
    b = _events(tmp_path / "b.jsonl", SEEN_10[:3])  # tracks 0 and 1 only: all 1, hem 1
    out = tmp_path / "r.html"
    assert invoke("report", summary, a, b, table, "--out", out).exit_code == 0
    page = Page(out.read_text())
    assert page.samples()["stream events: b.jsonl"] == {"all": 1, "hem": 1, "errors": 0}
    assert (int(page.value("all-count")), int(page.value("hem-count"))) == (1 + 1 + 5, 2 + 1 + 6)


def test_several_inputs_make_one_report_with_a_sample_each(table, tmp_path):
    events = _events(tmp_path / "session.jsonl", FRAMES)
    out = tmp_path / "r.html"
    assert invoke("report", table, events, "--out", out).exit_code == 0
    page = Page(out.read_text())
    samples = page.samples()
    assert samples["A"] == BY_FOLDER["A"] and samples["stream events: session.jsonl"]["all"] == 2
    assert int(page.value("all-count")) == 5 + 2 and int(page.value("hem-count")) == 6 + 3


def _hot_quadrant(bgr):
    """Quadrant (row, col) with the most red tint (R - B: evidence for all) in an overlay, the caption (top rows)
    and the legend strip (bottom rows) left out."""
    heat = bgr[:, :, 2].astype(float) - bgr[:, :, 0].astype(float)
    heat[:16], heat[-max(4, len(heat) // 20):] = np.nan, np.nan
    h, w = heat.shape
    q = {(r, c): np.nanmean(heat[r * h // 2:(r + 1) * h // 2, c * w // 2:(c + 1) * w // 2])
         for r in (0, 1) for c in (0, 1)}
    return max(q, key=q.get)


def test_classify_cam_writes_overlays_for_flagged_cells_hot_where_the_cam_is(cam_model, tmp_path):
    src = tmp_path / "cells"
    src.mkdir()
    for name, quadrant in (("blob_br", (1, 1)), ("blob_tr", (0, 1)), ("blob_bl", (1, 0))):
        img = np.full((64, 64, 3), 26, np.uint8)  # dark: P(all) 0.68, flagged; the map is flat but for the blob
        r, c = quadrant
        img[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] = 0
        cv2.imwrite(str(src / f"{name}.png"), img)
    cv2.imwrite(str(src / "white.png"), np.full((64, 64, 3), 255, np.uint8))  # hem: no overlay
    cam_dir = tmp_path / "cam"
    table = tmp_path / "t.csv"
    res = invoke("classify", src, "--model", cam_model, "--out", table, "--cam", cam_dir)
    assert res.exit_code == 0, res.all_output
    rows, counts = _table_counts(table)
    assert counts["all"] == 3 and counts["hem"] == 1
    written = sorted(p.name for p in cam_dir.iterdir())
    assert written == ["blob_bl.cam.png", "blob_br.cam.png", "blob_tr.cam.png"]
    for name, quadrant in (("blob_br", (1, 1)), ("blob_tr", (0, 1)), ("blob_bl", (1, 0))):
        overlay = cv2.imread(str(cam_dir / f"{name}.cam.png"))
        assert overlay.shape[:2] == (64, 64)
        assert _hot_quadrant(overlay) == quadrant, name
    # --cam-all: every classified image
    all_dir = tmp_path / "cam_all"
    assert invoke("classify", src, "--model", cam_model, "--out", table, "--cam", all_dir, "--cam-all").exit_code == 0
    assert len(list(all_dir.glob("*.cam.png"))) == 4


def test_report_with_a_cam_model_embeds_overlays_card_and_calibration(table, cam_model, tmp_path):
    card = cam_model.with_name("tiny_cam.card.md")
    card.write_text("# Model card: tiny\n\nIntended use: <script>alert(1)</script> research **only**.\n\n"
                    "See [the paper](https://arxiv.org/abs/2606.24944).\n\n"
                    "| split | ece |\n|---|---|\n| val | 0.024 |\n\n- one\n- two\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val": {"n": 40, "accuracy": 0.9, "ece": 0.024, "brier": 0.08,
                                                          "nll": 0.3, "threshold": 0.45,
                                                          "uncalibrated": {"ece": 0.11, "brier": 0.1, "nll": 0.5}}}))
    (run / "config.json").write_text(json.dumps({"calibration": {"method": "temperature", "temperature": 1.7}}))
    out = tmp_path / "r.html"
    res = invoke("report", table, "--model", cam_model, "--run", run, "--out", out)
    assert res.exit_code == 0, res.all_output
    text = out.read_text()
    assert_self_contained(text)
    page = Page(text)
    assert all(a["data-cam"] == "1" for a in page.figures("gallery-flagged"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<strong>only</strong>" in text
    assert "arxiv.org/abs/2606.24944" in text and "<td>0.024</td>" in text and "<li>two</li>" in text
    assert "1.7" in text and "temperature" in text and page.ids["calibration"]
    assert "0.1100" in text  # ECE before calibration, from the run's metrics.json
    card.unlink()


def test_classify_report_counts_equal_its_table(cells, cam_model, tmp_path):
    table, out = tmp_path / "t.csv", tmp_path / "run.html"
    res = invoke("classify", cells, "--model", cam_model, "--out", table, "--report", out)
    assert res.exit_code == 0, res.all_output
    _, counts = _table_counts(table)
    page = Page(out.read_text())
    assert (int(page.value("all-count")), int(page.value("hem-count")), int(page.value("error-count"))) == \
        (counts["all"], counts["hem"], counts["error"])
    assert all(a["data-cam"] == "1" for a in page.figures("gallery-flagged"))  # the model has a cam output


@pytest.mark.parametrize("content, message", [
    ("hello world\n", "not a classify table"),
    ("path,label,probability,error\nx.png,all,1.7,\n", "outside [0, 1]"),
    ("path,label,probability,error\nx.png,maybe,0.7,\n", "not one of"),
    ('{"frames": 3}', "not a classify row"),
    ("", "is empty"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    out = tmp_path / "r.html"
    res = invoke("report", bad, "--out", out)
    assert res.exit_code == 2 and message in res.all_output, res.all_output
    assert len(res.all_output.strip().splitlines()) == 1 and not out.exists()


def test_usage_errors_exit_2(table, tmp_path, tiny_onnx, cells):
    for args in (["report", tmp_path / "missing.csv"], ["report", table, "--group-by", "colour"],
                 ["report", table, "--model", tmp_path / "nope.onnx"], ["report", table, "--run", tmp_path]):
        res = invoke(*args, "--out", tmp_path / "r.html")
        assert res.exit_code == 2 and len(res.all_output.strip().splitlines()) == 1, (args, res.all_output)
    res = invoke("classify", cells, "--model", tiny_onnx, "--cam", tmp_path / "cam")
    assert res.exit_code == 2 and "no 'cam' output" in res.all_output
    res = invoke("classify", cells, "--model", tiny_onnx, "--cam-all")
    assert res.exit_code == 2 and "--cam-all needs --cam" in res.all_output


def test_markdown_escapes_html_and_drops_url_schemes():
    html = markdown.render("## T <b>\n\nText & `a<b>` http://x.org/y\n\n```\n<i>https://z\n```")
    assert "<b>" not in html and "&lt;b&gt;" in html and "&amp;" in html and "<code>a&lt;b&gt;</code>" in html
    assert "http" not in html and "x.org/y" in html and "&lt;i&gt;z" in html


def test_wilson_reference_value():
    """The CI in the test above (5 of 11) from the textbook formula, written out independently."""
    z, n, p = 1.959963984540054, 11, 5 / 11
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (centre - half) / (1 + z * z / n) == pytest.approx(0.2127, abs=1e-3)
    assert (centre + half) / (1 + z * z / n) == pytest.approx(0.7199, abs=1e-3)


def test_stream_report_counts_equal_its_summary_and_events(tiny_onnx, tmp_path):
    from leuk_edge.synth.fields import FieldConfig, write_fields

    write_fields(tmp_path / "f", frames=2, video_frames=0, cfg=FieldConfig(width=640, height=360, um_per_px=0.3,
                                                                           leukocytes=4), seed=3)
    jsonl, summary, out = tmp_path / "e.jsonl", tmp_path / "s.json", tmp_path / "stream.html"
    res = invoke("stream", "-s", tmp_path / "f" / "frames", "-m", tiny_onnx, "--um-per-px", "0.3", "--jsonl", jsonl,
                 "--summary", summary, "--report", out)
    assert res.exit_code == 0, res.all_output
    s = json.loads(summary.read_text())
    sightings = [c for line in jsonl.read_text().splitlines() for c in json.loads(line)["cells"]]
    assert s["cells"]["total"] > 0 and sightings
    text = out.read_text()
    assert_self_contained(text)
    page = Page(text)
    assert (int(page.value("all-count")), int(page.value("hem-count"))) == (s["cells"]["all"], s["cells"]["hem"])
    assert sum(int(a["data-count"]) for t, a in page.tags if t == "rect" and "data-count" in a) == len(sightings)


def test_report_runs_on_the_edge_install(table, cam_model, tmp_path):
    """No TensorFlow, Keras, tf2onnx or matplotlib is loaded by `report` (nor by the CAM overlays it draws)."""
    import subprocess
    import sys

    out = tmp_path / "r.html"
    code = (f"import sys, json; from leuk_edge.cli import app; "
            f"app(['report', {str(table)!r}, '--model', {str(cam_model)!r}, '--out', {str(out)!r}], "
            f"standalone_mode=False); "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"('tensorflow', 'keras', 'tf2onnx', 'matplotlib'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [] and out.is_file()


def test_summary_finds_its_events_by_name_when_run_elsewhere(tmp_path):
    events = _events(tmp_path / "session.jsonl", FRAMES)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"source": "0", "ended": "interrupted", "frames": 4,
                                   "cells": {"all": 2, "hem": 2, "total": 4}, "jsonl": "elsewhere/session.jsonl"}))
    out = tmp_path / "r.html"
    assert invoke("report", events, summary, "--out", out).exit_code == 0
    page = Page(out.read_text())
    assert (page.value("all-count"), page.value("hem-count")) == ("2", "2") and "samples" not in page.ids


def test_threshold_comes_from_the_labels_without_a_model(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("path,label,probability,error\na.png,all,0.9,\nb.png,all,0.72,\nc.png,hem,0.6,\nd.png,hem,0.2,\n")
    out = tmp_path / "r.html"
    assert invoke("report", t, "--band", "0.15", "--out", out).exit_code == 0
    u = Page(out.read_text()).ids["uncertain-count"]
    assert float(u["data-threshold"]) == 0.72 and u["data-value"] == "2"  # 0.72 and 0.6 lie within 0.15
    assert invoke("report", t, "--threshold", "0.3", "--out", out).exit_code == 0
    u = Page(out.read_text()).ids["uncertain-count"]
    assert float(u["data-threshold"]) == 0.3 and u["data-value"] == "1"  # only 0.2 within 0.1 of 0.3


@pytest.mark.browser
def test_report_opens_offline_in_chromium(table, cam_model, tmp_path, chromium):
    """Chromium renders the page from the file alone: no request but the page itself, every image decodes."""
    from playwright import sync_api

    out = tmp_path / "r.html"
    assert invoke("report", table, "--model", cam_model, "--out", out).exit_code == 0
    requests = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            decoded = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
            shown = page.inner_text("#all-count")
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert decoded and all(decoded) and shown == "5"


def test_interrupted_classify_still_reports_its_finished_rows(cells, cam_model, tmp_path, interrupt_classify_after):
    interrupt_classify_after(7)
    table, out, cam = tmp_path / "t.csv", tmp_path / "r.html", tmp_path / "cam"
    res = invoke("classify", cells, "--model", cam_model, "--out", table, "--report", out, "--cam", cam)
    assert res.exit_code == 130 and "--cam: skipped" in res.all_output
    _, counts = _table_counts(table)
    page = Page(out.read_text())
    assert sum(counts.values()) == 7
    assert (int(page.value("all-count")), int(page.value("hem-count")), int(page.value("error-count"))) == \
        (counts["all"], counts["hem"], counts["error"])


def test_card_is_the_models_own_never_a_stranger(tmp_path):
    from leuk_edge.edge.model_files import card_path

    model = tmp_path / "cnn.onnx"
    (tmp_path / "MODEL.card.md").write_text("some other model's card")
    assert not card_path(model).is_file()  # no literal "MODEL" fallback
    (tmp_path / "cnn.card.md").write_text("cnn card")
    assert card_path(tmp_path / "cnn.int8.onnx") == tmp_path / "cnn.card.md"  # a variant shares its FP32 card
    assert not card_path(tmp_path / "cnn.failed.onnx").is_file()  # a failed candidate is another model


def test_a_bug_while_drawing_overlays_is_not_a_skipped_file(cam_model, tmp_path, monkeypatch):
    """Only an unreadable file is skipped (with its reason); any other failure is a bug and surfaces."""
    from leuk_edge.edge import Classifier, explain
    from leuk_edge.edge.preprocess import ImageReadError

    clf = Classifier(cam_model, device="cpu")
    monkeypatch.setattr(explain, "decode_image", lambda path: (_ for _ in ()).throw(ImageReadError("gone")))
    assert list(explain.iter_overlays(clf, [("a.png", 0.9, "all")])) == [("a.png", "gone")]
    monkeypatch.setattr(explain, "decode_image", lambda path: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError):
        list(explain.iter_overlays(clf, [("a.png", 0.9, "all")]))


def test_run_metrics_show_only_the_evaluated_splits(table, tmp_path):
    """metrics.json also holds entries that describe the run (`health`, `scope`): they are not splits, the report's
    run table lists val and test only (one split rule, edge.run_metrics)."""
    import re

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "val": {"n": 40, "accuracy": 0.9}, "test": {"n": 50, "accuracy": 0.8},
        "health": {"batchnorm": {"gap": 0.03}, "warnings": []},
        "scope": {"method": "mahalanobis", "threshold": 3.2, "accept": 0.95}}))
    (run / "config.json").write_text("{}")
    out = tmp_path / "r.html"
    res = invoke("report", table, "--run", run, "--out", out)
    assert res.exit_code == 0, res.all_output
    body = re.search(r'<table id="run-metrics">.*?<tbody>(.*?)</tbody>', out.read_text(), re.S).group(1)
    assert re.findall(r"<tr data-split=\"([^\"]*)\">", body) == ["val", "test"]
