"""`other` is never counted in all, hem or the blast fraction -- classify, stream, station hub -- and every total is
the tracker's (one decision per cell). Tiny models with a scope gate: ood = 10 x mean green (tests/tiny_models)."""

import json
from collections import defaultdict

import cv2
import numpy as np
import pytest

from leuk_edge.edge import Classifier
from leuk_edge.edge.classify import classify_paths
from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.sources import open_source
from leuk_edge.edge.stream import StreamOptions, run_stream
from leuk_edge.edge.summary import ClassifySummary, scope_entry, wilson_interval
from leuk_edge.synth.fields import FieldConfig, write_fields
from tiny_models import make_tiny_onnx

P_THRESHOLD, OOD_THRESHOLD = 0.68, 0.95  # on the field below: 6 tracks all, 2 hem, 3 other (none near an edge)
OPTIONS = StreamOptions(detector=DetectorConfig(um_per_px=0.3))


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    out = tmp_path_factory.mktemp("counting")
    write_fields(out / "f", frames=1, video_frames=16, fps=12.0, seed=1,
                 cfg=FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=8))
    model = make_tiny_onnx(out / "scope.onnx", size=32, threshold=P_THRESHOLD, ood_threshold=OOD_THRESHOLD)
    return out / "f" / "drift.mp4", model


def _cell_images(folder):
    """3 purple cells on black (all, in scope), 1 red image (hem, in scope), 2 green images (out of scope)."""
    folder.mkdir()
    purple = np.zeros((32, 32, 3), np.uint8)
    purple[8:24, 8:24] = (160, 40, 120)  # BGR
    images = {"p1": purple, "p2": purple, "p3": purple, "red": np.full((32, 32, 3), (0, 0, 255), np.uint8),
              "g1": np.full((32, 32, 3), (40, 200, 40), np.uint8), "g2": np.full((32, 32, 3), (0, 255, 0), np.uint8)}
    for name, bgr in images.items():
        cv2.imwrite(str(folder / f"{name}.png"), bgr)
    return sorted(folder.glob("*.png"))


def test_classify_counts_other_apart(tmp_path):
    clf = Classifier(make_tiny_onnx(tmp_path / "m.onnx", ood_threshold=3.0))
    rows = list(classify_paths(clf, _cell_images(tmp_path / "cells"), batch_size=4))
    by_name = {r.path.rsplit("/", 1)[-1][:-4]: r for r in rows}
    assert [by_name[k].label for k in ("p1", "p2", "p3", "red", "g1", "g2")] == ["all"] * 3 + ["hem"] + ["other"] * 2
    assert by_name["g1"].ood == pytest.approx(10 * 200 / 255, abs=1e-3) and by_name["g1"].probability is not None
    s = ClassifySummary(scope=scope_entry(clf))
    s.extend(rows)
    d = s.to_dict()
    assert (d["images"], d["all"], d["hem"], d["other"], d["errors"]) == (6, 3, 1, 2, 0)
    assert d["blast_fraction"] == pytest.approx(3 / 4)  # over all + hem: the 2 out-of-scope images are not in it
    assert d["blast_fraction_ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert d["scope"] == {"used": True, "threshold": 3.0, "method": "tiny: 10 x mean green", "note": None}


def _tracks_from_events(path):
    """Per track: (mean P(all), mean ood) from the events -- the track rule written out again, independently."""
    seen = defaultdict(list)
    sightings = []
    for line in path.read_text().splitlines():
        for c in json.loads(line)["cells"]:
            seen[c["track"]].append((c["probability"], c["ood"]))
            sightings.append(c)
    labels = []
    for values in seen.values():
        p, ood = np.mean(values, axis=0)
        labels.append("other" if ood > OOD_THRESHOLD else "all" if p >= P_THRESHOLD else "hem")
    return labels, sightings


def test_stream_counts_each_cell_once_and_other_apart(field, tmp_path):
    video, model = field
    jsonl = tmp_path / "e.jsonl"
    s = run_stream(open_source(str(video)), Classifier(model), OPTIONS, jsonl=jsonl)
    labels, sightings = _tracks_from_events(jsonl)
    counts = {k: labels.count(k) for k in ("all", "hem", "other")}
    assert min(counts.values()) >= 2, counts  # every label present: the checks below are not vacuous
    assert s["cells"] == {**counts, "total": len(labels)}
    assert s["blast_fraction"] == pytest.approx(counts["all"] / (counts["all"] + counts["hem"]), abs=1e-4)
    assert s["blast_fraction_ci95"] == pytest.approx(list(wilson_interval(counts["all"], counts["all"] + counts["hem"])),
                                                     abs=1e-4)
    assert s["observations"]["other"] == sum(c["ood"] > OOD_THRESHOLD for c in sightings) > 0
    assert all(c["label"] == "other" for c in sightings if c["ood"] > OOD_THRESHOLD)
    last = {c["track"]: c["track_label"] for c in sightings}  # the events carry the tracker's final decision
    assert sorted(last.values()) == sorted(labels)
    assert s["scope"]["used"] and s["warnings"] == []


def test_station_hub_totals_are_the_trackers(field, tmp_path):
    from leuk_edge.station.hub import Hub

    video, model = field
    ended = []
    hub = Hub(open_source(str(video)), Classifier(model), OPTIONS, tmp_path / "rec", on_track_ended=ended.append)
    hub.start()._thread.join(60)
    assert not hub.running and hub.error is None
    events = [e for _, e in hub.events_after(-1, timeout=0)]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    labels, _ = _tracks_from_events(tmp_path / "e.jsonl")
    live, final, tracked = hub.live_summary(), hub.summary["cells"], hub.tracker.counts()
    assert {k: live[k] for k in ("all", "hem", "other")} == tracked == {k: final[k] for k in tracked}
    assert tracked == {k: labels.count(k) for k in ("all", "hem", "other")} and live["cells"] == len(labels)
    assert live["blast_fraction"] == pytest.approx(tracked["all"] / (tracked["all"] + tracked["hem"]), abs=1e-4)
    # every track was filed once when it ended (the run's end included), with the label counted for it
    assert sorted(t.id for t in ended) == sorted({c["track"] for e in events for c in e["cells"]})
    assert sorted(t.label for t in ended) == sorted(labels)


def test_a_model_without_the_gate_warns_once_and_runs(field, tmp_path):
    video, _ = field
    old = Classifier(make_tiny_onnx(tmp_path / "old.onnx", size=32, threshold=P_THRESHOLD))
    heard = []
    s = run_stream(open_source(str(video)), old, OPTIONS, jsonl=tmp_path / "e.jsonl", on_warning=heard.append)
    assert len([h for h in heard if "no scope gate" in h]) == 1 and s["frames"] == 16
    assert s["cells"]["other"] == 0 and s["cells"]["total"] > 0 and s["scope"]["used"] is False
    assert all("ood" not in c for line in (tmp_path / "e.jsonl").read_text().splitlines()
               for c in json.loads(line)["cells"])


def test_report_counts_other_apart_and_shows_it(tmp_path):
    from leuk_edge.edge.writers import open_writer
    from typer.testing import CliRunner

    from leuk_edge.cli import app
    from test_report import Page

    model = make_tiny_onnx(tmp_path / "m.onnx", ood_threshold=3.0)
    rows = list(classify_paths(Classifier(model), _cell_images(tmp_path / "cells")))
    table = tmp_path / "t.csv"
    with open_writer(table) as w:
        for r in rows:
            w.write(r)
    assert table.read_text().splitlines()[0] == "path,label,probability,ood,error"
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(table), "--model", str(model), "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = Page(out.read_text())
    assert {k: page.value(f"{k}-count") for k in ("cells", "all", "hem", "other", "error")} == \
        {"cells": "6", "all": "3", "hem": "1", "other": "2", "error": "0"}
    assert float(page.value("blast-fraction")) == pytest.approx(0.75)
    assert float(page.value("ci-low")) == pytest.approx(wilson_interval(3, 4)[0], abs=1e-6)
    assert [a["data-path"].rsplit("/", 1)[-1] for a in page.figures("gallery-other")] == ["g2.png", "g1.png"]
    assert sum(int(a["data-count"]) for t, a in page.tags if t == "rect" and "data-count" in a) == 4  # no other


def test_ray_engine_rows_follow_the_same_rule(tmp_path):
    """The Ray engine's per-batch step and its Arrow round trip (no cluster needed): the local engine's rows, ood
    and `other` included."""
    from leuk_edge.cluster.ray_engine import classify_batch, rows_table, table_rows

    clf = Classifier(make_tiny_onnx(tmp_path / "m.onnx", ood_threshold=3.0))
    paths = [str(p) for p in _cell_images(tmp_path / "cells")]
    rows, _, _ = classify_batch(clf, paths)
    local = list(classify_paths(clf, paths))
    assert [(r.label, r.ood) for r in rows] == [(r.label, pytest.approx(r.ood)) for r in local]
    assert [r.label for r in table_rows(rows_table(rows))].count("other") == 2
    assert table_rows(rows_table(rows))[0].ood == pytest.approx(rows[0].ood)


def _cli(*args):
    from typer.testing import CliRunner

    from leuk_edge.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    return res, res.output  # click >= 8.2: stdout and stderr interleaved, as a terminal shows them


def test_classify_cli_scope_switch_and_a_model_without_the_gate(tmp_path):
    import csv

    images = _cell_images(tmp_path / "cells")
    gated = make_tiny_onnx(tmp_path / "m.onnx", ood_threshold=3.0)
    for flag, other in (("--scope", 2), ("--no-scope", 0)):
        out, summary = tmp_path / f"{flag}.csv", tmp_path / f"{flag}.json"
        res, text = _cli("classify", tmp_path / "cells", "-m", gated, "-o", out, "--summary", summary, flag)
        assert res.exit_code == 0, text
        rows = list(csv.DictReader(out.open()))
        assert [r["label"] for r in rows].count("other") == other and len(rows) == len(images)
        assert all((r["ood"] != "") == (flag == "--scope") for r in rows)
        s = json.loads(summary.read_text())
        assert s["other"] == other and s["scope"]["used"] == (flag == "--scope")
        assert s["all"] + s["hem"] + s["other"] + s["errors"] == s["images"] == 6
        assert ("--no-scope" in text) == (flag == "--no-scope")  # the one-line warning when the gate is off
    old = make_tiny_onnx(tmp_path / "old.onnx")
    res, text = _cli("classify", tmp_path / "cells", "-m", old, "-o", tmp_path / "old.csv")
    assert res.exit_code == 0 and " ".join(text.split()).count("has no scope gate") == 1
    rows = list(csv.DictReader((tmp_path / "old.csv").open()))
    assert len(rows) == 6 and {r["label"] for r in rows} <= {"all", "hem"} and all(r["ood"] == "" for r in rows)


def test_stream_cli_warns_once_for_a_model_without_the_gate(field, tmp_path):
    video, _ = field
    old = make_tiny_onnx(tmp_path / "old.onnx", size=32, threshold=P_THRESHOLD)
    res, text = _cli("stream", "-s", video, "-m", old, "--um-per-px", "0.3", "--summary", tmp_path / "s.json")
    assert res.exit_code == 0, text
    assert " ".join(text.split()).count("has no scope gate") == 1
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["cells"]["other"] == 0 and s["scope"]["used"] is False and s["frames"] == 16
