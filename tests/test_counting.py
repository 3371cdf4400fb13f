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
