"""Score a stream run against the truth of synthetic fields: is what the model cannot know flagged `other`, and is
the blast fraction right? numpy + the standard library (and edge's labels and Wilson interval) only; used by
benchmarks/bench_stream.py and the tests.

Inputs: the stream's events (the JSONL contract: per frame `frame` and `cells` [{box, label, probability, and
perhaps track}]), the fields' truth (`ground_truth.json` of the stills or `drift.json` of the video, written by
synth.fields: per frame the cells' `box`, `label` all/hem/other, `kind`, `in_scope`, `cut`, and in the video
`track`) and, when there is one, the stream summary (its tracked counts and interval are what the stream reports).

Per frame, detections are matched one-to-one to the truth's cells by IoU (greedy, highest first; cells cut by the
frame edge count neither way, as the stream drops them). Over the matched sightings:
  `other`: tp = out-of-scope cell labelled other, fp = lymphoid cell labelled other, fn = out-of-scope cell given
      all/hem; precision, recall (None when undefined); per kind the share labelled each way. A cell never detected
      is a detection miss (`detection`), not an `other` miss.
  `tracks` (video truth): the same per cell, each labelled as the run's tracker labelled it (the `track_label` the
      events carry, the last one seen: the one counting rule, edge.tracking); events without it: the majority of
      the cell's matched sightings.
  `blast_fraction`: the truth's, over lymphoid cells (tracks) that were wholly in view at least once, against the
      measured one: the summary's tracked counts and 95 % interval, else per event track (its last `track_label`;
      older events without it: the majority label), else per sighting (correlated sightings: that interval is too
      narrow, and the unit says so).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..edge.labels import OTHER
from ..edge.summary import wilson_interval

LYMPHOID = ("all", "hem")


def read_events(path: str | Path) -> list[dict]:
    """A stream JSONL file -> its events (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in `a` with every box in `b` (boxes [x, y, w, h]) -> float array (len a, len b)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0],
                                                                                              b[None, :, 0])
    iy = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1],
                                                                                              b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(pred, truth, iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, highest IoU first -> [(pred index, truth index, IoU)] with IoU >= `iou`."""
    m = iou_matrix(pred, truth)
    pairs, used_p, used_t = [], set(), set()
    for flat in np.argsort(-m, axis=None, kind="stable"):
        i, j = divmod(int(flat), m.shape[1])
        if m[i, j] < iou:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            pairs.append((i, j, float(m[i, j])))
    return pairs


def _in_scope(cell: dict) -> bool:
    return bool(cell.get("in_scope", cell.get("label") in LYMPHOID))  # truth written before `in_scope`: lymphoid


def _kind(cell: dict) -> str:
    return cell.get("kind", {"all": "blast", "hem": "lymphocyte"}.get(cell.get("label"), "unknown"))


def _truth_frames(truth: dict) -> dict[int, list[dict]]:
    """Frame index -> its truth cells. Video truth numbers its frames; stills are in the order the stream reads
    them (the sorted file names), 0, 1, ..."""
    return {int(f.get("frame", i)): f["cells"] for i, f in enumerate(truth["frames"])}


def sightings(events: list[dict], truth: dict, iou: float = 0.5) -> tuple[list[dict], Counter]:
    """Every uncut truth cell in a processed frame, with the label of its matched detection (None: missed) ->
    (rows {frame, track, kind, label, in_scope, predicted}, labels of the detections that matched no cell)."""
    frames = _truth_frames(truth)
    rows, extra = [], Counter()
    for e in events:
        cells = frames.get(int(e["frame"]), [])
        pred = [c["box"] for c in e.get("cells", [])]
        pairs = match(pred, [c["box"] for c in cells], iou)
        by_truth = {j: i for i, j, _ in pairs}
        for i in set(range(len(pred))) - {i for i, _, _ in pairs}:
            extra[e["cells"][i].get("label")] += 1
        for j, c in enumerate(cells):
            if c.get("cut"):  # the stream drops cells cut by the edge: finding one is neither right nor wrong
                continue
            det = e["cells"][by_truth[j]] if j in by_truth else {}
            rows.append({"frame": int(e["frame"]), "track": c.get("track"), "kind": _kind(c), "label": c["label"],
                         "in_scope": _in_scope(c), "predicted": det.get("label"),
                         "track_label": det.get("track_label")})
    return rows, extra


def other_scores(rows: list[dict]) -> dict:
    """tp/fp/fn, precision and recall of `other` over the detected rows."""
    seen = [r for r in rows if r["predicted"] is not None]
    tp = sum(1 for r in seen if not r["in_scope"] and r["predicted"] == OTHER)
    fp = sum(1 for r in seen if r["in_scope"] and r["predicted"] == OTHER)
    fn = sum(1 for r in seen if not r["in_scope"] and r["predicted"] != OTHER)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None}


def by_kind(rows: list[dict]) -> dict:
    """Per kind: cells, detected, detection recall, the labels they got, the share labelled other."""
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        got = [r["predicted"] for r in mine if r["predicted"] is not None]
        out[kind] = {"cells": len(mine), "detected": len(got), "detection_recall": round(len(got) / len(mine), 4),
                     "labels": dict(Counter(got)),
                     "other_share": round(got.count(OTHER) / len(got), 4) if got else None}
    return out


def track_rows(rows: list[dict]) -> list[dict]:
    """One row per truth track: its kind and the label the run's tracker gave it (the last matched sighting's
    `track_label`), else the majority label of its matched sightings (None: never detected)."""
    tracks = defaultdict(list)
    for r in rows:
        tracks[r["track"]].append(r)
    out = []
    for mine in tracks.values():
        decided = [r["track_label"] for r in mine if r.get("track_label") is not None]
        labels = Counter(r["predicted"] for r in mine if r["predicted"] is not None)
        label = decided[-1] if decided else (labels.most_common(1)[0][0] if labels else None)
        out.append({**mine[0], "frame": None, "predicted": label, "sightings": len(mine)})
    return out


def _run_track_labels(cells: list[dict]) -> tuple[list[str], str]:
    """One label per run track: the tracker's (the last `track_label` of the track), else the majority."""
    if all(c.get("track_label") is not None for c in cells):
        last = {c["track"]: c["track_label"] for c in cells}  # events in frame order: the last one wins
        return list(last.values()), "tracks (event track ids, the tracker's track_label)"
    votes = defaultdict(Counter)
    for c in cells:
        votes[c["track"]][c.get("label")] += 1
    return [v.most_common(1)[0][0] for v in votes.values()], "tracks (event track ids, majority label)"


def truth_blast_fraction(truth: dict) -> dict:
    """The truth's blast fraction over lymphoid cells: tracks wholly in view at least once (video), else the uncut
    cells of the stills."""
    if "tracks" in truth:
        cells = [t for t in truth["tracks"] if t.get("whole_frames", 1) > 0]
    elif any("track" in c for f in truth["frames"] for c in f["cells"]):
        whole = {c["track"]: c for f in truth["frames"] for c in f["cells"] if not c.get("cut")}
        cells = list(whole.values())
    else:
        cells = [c for f in truth["frames"] for c in f["cells"] if not c.get("cut")]
    lymphoid = [c for c in cells if _in_scope(c)]
    n_all = sum(1 for c in lymphoid if c["label"] == "all")
    return {"all": n_all, "lymphoid": len(lymphoid), "out_of_scope": len(cells) - len(lymphoid),
            "fraction": round(n_all / len(lymphoid), 4) if lymphoid else None}


def measured_blast_fraction(events: list[dict], summary: dict | None = None) -> dict:
    """The run's blast fraction and 95 % interval: the summary's tracked counts, else per event track, else per
    sighting."""
    if summary is not None and summary.get("cells"):
        n_all, n_hem = int(summary["cells"].get("all", 0)), int(summary["cells"].get("hem", 0))
        unit = "tracks (stream summary)"
    else:
        cells = [c for e in events for c in e.get("cells", [])]
        if cells and all(c.get("track") is not None for c in cells):
            labels, unit = _run_track_labels(cells)
        else:
            labels = [c.get("label") for c in cells]
            unit = "sightings (correlated across frames: the interval is too narrow)"
        n_all, n_hem = labels.count("all"), labels.count("hem")
    n = n_all + n_hem
    lo, hi = wilson_interval(n_all, n)
    return {"all": n_all, "hem": n_hem, "fraction": round(n_all / n, 4) if n else None,
            "ci95": [round(lo, 4), round(hi, 4)] if n else None, "unit": unit}


def score_stream(events: list[dict], truth: dict, summary: dict | None = None, iou: float = 0.5) -> dict:
    """The whole score (see the module docstring): detection, `other` per sighting (and per track for a video),
    per kind, and the blast fraction of truth vs run with whether the run's 95 % interval holds the truth."""
    rows, extra = sightings(events, truth, iou)
    found = sum(r["predicted"] is not None for r in rows)
    result = {"iou": iou, "frames_scored": len(events),
              "detection": {"cells": len(rows), "detected": found, "missed": len(rows) - found,
                            "recall": round(found / len(rows), 4) if rows else None,
                            "unmatched_detections": sum(extra.values()), "unmatched_labels": dict(extra)},
              "other": other_scores(rows), "kinds": by_kind(rows)}
    if any(r["track"] is not None for r in rows):
        tracks = track_rows(rows)
        result["tracks"] = {"other": other_scores(tracks), "kinds": by_kind(tracks)}
    true_bf, run_bf = truth_blast_fraction(truth), measured_blast_fraction(events, summary)
    inside = (run_bf["ci95"] is not None and true_bf["fraction"] is not None
              and run_bf["ci95"][0] <= true_bf["fraction"] <= run_bf["ci95"][1])
    result["blast_fraction"] = {"truth": true_bf, "measured": run_bf, "truth_within_ci95": bool(inside)}
    return result
