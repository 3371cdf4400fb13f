"""Fields with a normal differential (`data fields --mix normal`): proportions, the truth against what is drawn,
the video's tracks, and the detector finding every kind (a neutrophil's lobes as one cell)."""

import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.edge.detect import DetectorConfig, detect_leukocytes
from leuk_edge.synth.fields import FieldConfig, draw_kind, render_field, render_slide
from leuk_edge.synth.truth import match

NORMAL = FieldConfig(mix="normal", blast_share=0.2)


def test_normal_mix_proportions_over_many_cells():
    # Hand-checked: 20 % blasts; the other 80 % split as 55:30:6:3:1 (of 95). Of 4000 cells: blasts 800,
    # neutrophils 0.8 * 55/95 * 4000 = 1852.6, lymphocytes 1010.5, monocytes 202.1, eosinophils 101.1, basophils 33.7.
    expected = {"blast": 800.0, "neutrophil": 1852.6, "lymphocyte": 1010.5, "monocyte": 202.1, "eosinophil": 101.1,
                "basophil": 33.7}
    rng = np.random.default_rng(0)
    counts = Counter(draw_kind(rng, NORMAL) for _ in range(4000))
    assert set(counts) == set(expected)
    for kind, e in expected.items():
        sd = np.sqrt(e * (1 - e / 4000))
        assert abs(counts[kind] - e) < 4 * sd, (kind, counts[kind], e)
    # Without blasts the differential is the normal one: 55/95 neutrophils.
    shares = FieldConfig(mix="normal").kind_shares()
    assert shares["blast"] == 0 and shares["neutrophil"] == pytest.approx(0.5789, abs=1e-4)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_default_mix_is_lymphoid_only():
    rng = np.random.default_rng(1)
    _, cells, _ = render_field(rng, FieldConfig(width=320, height=240, um_per_px=0.3, leukocytes=4))
    assert cells and all(c["kind"] in ("blast", "lymphocyte") and c["in_scope"] for c in cells)
    assert all(c["label"] == {"blast": "all", "lymphocyte": "hem"}[c["kind"]] for c in cells)


def test_bad_mix_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--mix must be one of"):
        FieldConfig(mix="abnormal").validate()
    with pytest.raises(ValueError, match="--blast-share needs --mix normal"):
        FieldConfig(blast_share=0.3).validate()
    with pytest.raises(ValueError, match="unknown kind 'plasma_cell'"):
        FieldConfig(mix="normal", differential=(("plasma_cell", 1.0),)).validate()
    res = CliRunner().invoke(app, ["data", "fields", str(tmp_path / "f"), "--blast-share", "0.2"])
    assert res.exit_code == 2 and "--blast-share needs --mix normal" in res.output
    res = CliRunner().invoke(app, ["data", "fields", str(tmp_path / "f"), "--mix", "weird"])
    assert res.exit_code == 2 and "--mix must be one of" in res.output


EVERY_KIND = tuple((k, 1.0) for k in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"))


@pytest.fixture(scope="module")
def normal_slides():
    """Fields of the normal mix's kinds in equal shares (the rare kinds get as many cells as the common ones),
    with their pixel truth."""
    rng = np.random.default_rng(4)
    cfg = FieldConfig(width=640, height=360, um_per_px=0.15, leukocytes=6, mix="normal", blast_share=1 / 6,
                      differential=EVERY_KIND).validate()
    out = []
    for _ in range(12):
        label_map = np.zeros((360, 640), np.uint8)
        rgb, cells, _ = render_slide(rng, cfg, 640, 360, 6, margin_px=cfg.px(cfg.edge_margin_um), label_map=label_map)
        out.append((rgb, cells, label_map))
    kinds = Counter(c["kind"] for _, cs, _ in out for c in cs)
    assert len(kinds) == 6 and min(kinds.values()) >= 6, kinds
    return out


def test_truth_matches_what_is_drawn(normal_slides):
    """Each truth box is exactly the extent of a drawn white cell; the kind's colours are there."""
    for rgb, cells, label_map in normal_slides:
        for c in cells:
            x, y, w, h = c["box"]
            inside = label_map[y:y + h, x:x + w] >= 2  # cytoplasm or nucleus
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), c
            assert c["label"] == {"blast": "all", "lymphocyte": "hem"}.get(c["kind"], "other")
            assert c["in_scope"] == (c["kind"] in ("blast", "lymphocyte"))
            px = rgb[y:y + h, x:x + w][inside].astype(int)
            orange = np.mean((px[:, 0] > px[:, 1] + 60) & (px[:, 0] > px[:, 2] + 60))
            dark = np.mean(px.sum(axis=1) < 3 * 70)
            if c["kind"] == "eosinophil":
                assert orange > 0.3, orange
            else:
                assert orange < 0.05, (c["kind"], orange)
            if c["kind"] == "basophil":
                assert dark > 0.15, dark


def test_detector_finds_every_kind_as_one_cell(normal_slides):
    """Recall per kind >= 0.9 at IoU 0.5, and never two detections in one cell (a neutrophil's lobes are one)."""
    found, total, split = Counter(), Counter(), Counter()
    for rgb, cells, _ in normal_slides:
        dets = detect_leukocytes(rgb, DetectorConfig(um_per_px=0.15))
        matched = {j for _, j, _ in match([d.box for d in dets], [c["box"] for c in cells])}
        for j, c in enumerate(cells):
            total[c["kind"]] += 1
            found[c["kind"]] += j in matched
            x, y, w, h = c["box"]
            centres = [(d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2) for d in dets]
            split[c["kind"]] += sum(x <= cx < x + w and y <= cy < y + h for cx, cy in centres) > 1
    for kind in total:
        assert found[kind] / total[kind] >= 0.9, (kind, found[kind], total[kind])
    assert not sum(split.values()), split


def test_eosinophils_are_found_with_their_granules():
    """Eosinophil granules are more orange than red cells: the detector took them for red cells and kept only the
    nucleus (too small for a cell), so it found no eosinophil at all. They are cytoplasm now."""
    rng = np.random.default_rng(7)
    cfg = FieldConfig(width=640, height=360, um_per_px=0.15, leukocytes=5, mix="normal",
                      differential=(("eosinophil", 1.0),))
    fields = [render_field(rng, cfg)[:2] for _ in range(3)]
    n = sum(len(cs) for _, cs in fields)
    assert n >= 12 and all(c["kind"] == "eosinophil" for _, cs in fields for c in cs)
    hits = sum(len(match([d.box for d in detect_leukocytes(rgb, DetectorConfig(um_per_px=0.15))],
                         [c["box"] for c in cs])) for rgb, cs in fields)
    assert hits >= 0.9 * n, (hits, n)


def test_data_fields_normal_mix_writes_kinds_and_tracks(tmp_path):
    out = tmp_path / "f"
    res = CliRunner().invoke(app, ["data", "fields", str(out), "--frames", "3", "--video-frames", "10",
                                   "--width", "320", "--height", "240", "--um-per-px", "0.3", "--leukocytes", "6",
                                   "--mix", "normal", "--blast-share", "0.2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["mix"] == "normal" and truth["config"]["blast_share"] == 0.2
    assert truth["kind_shares"]["blast"] == 0.2
    cells = [c for f in truth["frames"] for c in f["cells"]]
    assert Counter(c["kind"] for c in cells) == Counter(truth["counts"])
    for c in cells:
        assert {"box", "kind", "in_scope", "label", "cut"} <= set(c)
        assert (c["label"] == "other") == (not c["in_scope"])
    drift = json.loads((out / "drift.json").read_text())
    seen = Counter(c["track"] for f in drift["frames"] for c in f["cells"])
    whole = Counter(c["track"] for f in drift["frames"] for c in f["cells"] if not c["cut"])
    assert [t["track"] for t in drift["tracks"]] == sorted(seen)
    for t in drift["tracks"]:
        assert t["frames"] == seen[t["track"]] and t["whole_frames"] == whole[t["track"]]
        kinds = {c["kind"] for f in drift["frames"] for c in f["cells"] if c["track"] == t["track"]}
        assert kinds == {t["kind"]}  # one cell, one kind, in every frame
    assert Counter(t["kind"] for t in drift["tracks"]) == Counter(drift["counts"])
