"""Scoring a stream run against the truth of synthetic fields (synth.truth), on hand-made events and truth whose
answer is worked out by hand below."""

import json

import pytest

from leuk_edge.synth.truth import iou_matrix, match, read_events, score_stream


def test_iou_and_greedy_matching_by_hand():
    # [0,0,10,10] vs [5,0,10,10]: intersection 50, union 150 -> 1/3; disjoint -> 0; identical -> 1.
    m = iou_matrix([[0, 0, 10, 10]], [[5, 0, 10, 10], [50, 50, 4, 4], [0, 0, 10, 10]])
    assert m.shape == (1, 3) and m[0].tolist() == pytest.approx([1 / 3, 0.0, 1.0])
    # One prediction over two cells takes the better one; the other cell stays unmatched.
    assert match([[0, 0, 10, 10]], [[1, 0, 10, 10], [0, 0, 10, 10]]) == [(0, 1, 1.0)]
    assert match([[0, 0, 10, 10]], [[5, 0, 10, 10]], iou=0.5) == []
    assert match([], [[0, 0, 1, 1]]) == [] and match([[0, 0, 1, 1]], []) == []


def _cell(track, kind, label, x, cut=False):
    return {"box": [x, 10, 20, 20], "track": track, "kind": kind, "label": label,
            "in_scope": label != "other", "cut": cut}


# Four cells drift by for three frames: a neutrophil (track 0), a blast (1), a lymphocyte (2), a monocyte (3);
# track 4 is a lymphocyte only ever seen cut by the frame edge.
TRUTH = {"frames": [{"frame": f, "cells": [_cell(0, "neutrophil", "other", 10), _cell(1, "blast", "all", 100),
                                           _cell(2, "lymphocyte", "hem", 200), _cell(3, "monocyte", "other", 300),
                                           _cell(4, "lymphocyte", "hem", 400, cut=True)]} for f in range(3)]}


def _det(x, label, track=None, dx=1):
    d = {"box": [x + dx, 11, 20, 20], "label": label, "probability": 0.5}  # IoU with the truth 361/439 = 0.82
    if track is not None:
        d["track"] = track
    return d


def _events(tracks=False):
    t = (lambda k: k) if tracks else (lambda k: None)
    return [
        {"frame": 0, "cells": [_det(10, "other", t(0)), _det(100, "all", t(1)), _det(200, "other", t(2)),
                               _det(300, "hem", t(3)), _det(500, "other", t(9))]},     # + a detection of nothing
        {"frame": 1, "cells": [_det(10, "other", t(0)), _det(200, "hem", t(2)),          # the blast is missed
                               _det(300, "other", t(3))]},
        {"frame": 2, "cells": [_det(10, "hem", t(0)), _det(100, "all", t(1)), _det(200, "hem", t(2)),
                               _det(300, "other", t(3)), _det(400, "all", t(4))]},     # + the cut cell: ignored
    ]


def test_score_by_hand():
    s = score_stream(_events(), TRUTH, summary={"cells": {"all": 3, "hem": 5, "total": 8}})
    # Sightings of uncut cells: 4 cells x 3 frames = 12, the blast missed once -> 11 found.
    assert s["detection"] == {"cells": 12, "detected": 11, "missed": 1, "recall": round(11 / 12, 4),
                              "unmatched_detections": 1, "unmatched_labels": {"other": 1}}
    # other per sighting: neutrophil other, other, hem (tp 2, fn 1); monocyte hem, other, other (tp 2, fn 1);
    # lymphocyte flagged once (fp 1); blast never. precision 4/5, recall 4/6.
    assert s["other"] == {"tp": 4, "fp": 1, "fn": 2, "precision": 0.8, "recall": round(4 / 6, 4)}
    assert s["kinds"]["neutrophil"]["other_share"] == round(2 / 3, 4)
    assert s["kinds"]["lymphocyte"]["labels"] == {"other": 1, "hem": 2}
    assert s["kinds"]["blast"]["detection_recall"] == round(2 / 3, 4)
    # per cell (majority of its sightings): neutrophil other, monocyte other, lymphocyte hem, blast all.
    assert s["tracks"]["other"] == {"tp": 2, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0}
    # Truth: lymphoid cells wholly seen = the blast and one lymphocyte (track 4 was always cut) -> 1/2.
    bf = s["blast_fraction"]
    assert bf["truth"] == {"all": 1, "lymphoid": 2, "out_of_scope": 2, "fraction": 0.5}
    # The summary's tracked counts: 3 of 8; Wilson 95 % by hand: centre (0.375 + 1.9208/8) / 1.4802 = 0.4155,
    # half-width 1.96 * sqrt(0.375 * 0.625 / 8 + 3.8415 / 256) / 1.4802 = 0.2787 -> [0.1368, 0.6943].
    assert bf["measured"]["fraction"] == 0.375 and bf["measured"]["ci95"] == pytest.approx([0.1368, 0.6943], abs=1e-4)
    assert bf["truth_within_ci95"] is True
    # A run that saw 0 blasts in 10 cells: Wilson [0, 0.2775] does not hold 0.5.
    s0 = score_stream(_events(), TRUTH, summary={"cells": {"all": 0, "hem": 10}})
    assert s0["blast_fraction"]["measured"]["ci95"] == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert s0["blast_fraction"]["truth_within_ci95"] is False


def test_measured_blast_fraction_without_a_summary():
    # Every detection's label counts once: all = f0 blast, f2 blast, f2 cut cell = 3; hem = f0 monocyte,
    # f1 lymphocyte, f2 neutrophil, f2 lymphocyte = 4.
    s = score_stream(_events(), TRUTH)
    m = s["blast_fraction"]["measured"]
    assert (m["all"], m["hem"]) == (3, 4) and m["unit"].startswith("sightings")
    # With track ids on the events: one label per track (majority): 0 other, 1 all, 2 hem, 3 other, 4 all, 9 other.
    s = score_stream(_events(tracks=True), TRUTH)
    m = s["blast_fraction"]["measured"]
    assert (m["all"], m["hem"]) == (2, 1) and m["unit"].startswith("tracks (event")


def test_stills_truth_is_matched_by_position_and_read_from_files(tmp_path):
    truth = {"frames": [{"name": "field_000.png", "cells": [_cell(None, "blast", "all", 10)]},
                        {"name": "field_001.png", "cells": [_cell(None, "eosinophil", "other", 10)]}]}
    for f in truth["frames"]:
        for c in f["cells"]:
            del c["track"]
    events = [{"frame": 0, "cells": [_det(10, "all")]}, {"frame": 1, "cells": [_det(10, "all")]}]
    (tmp_path / "ev.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    s = score_stream(read_events(tmp_path / "ev.jsonl"), truth)
    assert s["other"] == {"tp": 0, "fp": 0, "fn": 1, "precision": None, "recall": 0.0}
    assert "tracks" not in s
    assert s["blast_fraction"]["truth"]["fraction"] == 1.0 and s["kinds"]["eosinophil"]["labels"] == {"all": 1}


def test_truth_written_before_kinds_still_scores():
    """drift.json files from before `kind`/`in_scope`: lymphoid labels are in scope."""
    truth = {"frames": [{"frame": 0, "cells": [{"box": [10, 10, 20, 20], "label": "hem", "cut": False}]}]}
    s = score_stream([{"frame": 0, "cells": [_det(10, "hem")]}], truth)
    assert s["kinds"] == {"lymphocyte": {"cells": 1, "detected": 1, "detection_recall": 1.0, "labels": {"hem": 1},
                                         "other_share": 0.0}}
    assert s["blast_fraction"]["truth"]["fraction"] == 0.0


def test_tracks_take_the_trackers_label_not_a_vote():
    """One counting rule: where the events carry the tracker's `track_label`, a track is what the tracker said,
    even against the majority of its sightings (its mean P(all)/ood decided it, edge.tracking)."""
    events = _events(tracks=True)
    for e in events:  # the tracker called track 0 (2 of 3 sightings 'other') hem, track 3 all, the rest as voted
        for c in e["cells"]:
            c["track_label"] = {0: "hem", 1: "all", 2: "hem", 3: "all", 4: "all", 9: "other"}[c["track"]]
    s = score_stream(events, TRUTH)
    m = s["blast_fraction"]["measured"]
    # run tracks: 0 hem, 1 all, 2 hem, 3 all, 4 all, 9 other -> all 3, hem 2
    assert (m["all"], m["hem"]) == (3, 2) and "track_label" in m["unit"]
    # truth tracks: the neutrophil (run track 0) is now a miss of `other`, the monocyte (run track 3) too
    assert s["tracks"]["other"]["tp"] == 0 and s["tracks"]["other"]["fn"] == 2
