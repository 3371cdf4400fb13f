"""Drawn out-of-scope cells (synth.others): scale, black background, reproducibility, the features that make each
kind what it is, measured on the drawn pixels (not read back from the renderer's parameters)."""

import csv
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app
from leuk_edge.synth.cells import Stain, render_cnmc_image
from leuk_edge.synth.others import (
    KINDS,
    LEUKOCYTE_KINDS,
    PX_PER_UM,
    draw_other,
    draw_other_tile,
    render_other,
    write_out_of_scope,
)

# Textbook diameters in a dried, stained smear (um): Wintrobe / the haematology atlases.
TEXTBOOK_UM = {"neutrophil": (10, 12), "eosinophil": (12, 17), "monocyte": (15, 20), "basophil": (10, 14),
               "disc": (10, 18)}
TILE_UM = 30.0  # a C-NMC tile spans 30 um over 450 px


def _lit(rgb):
    """The object as the pixels show it: everything not pure black, holes filled."""
    lit = (rgb.max(axis=2) > 0).astype(np.uint8)
    contours, _ = cv2.findContours(lit, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(lit)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled.astype(bool)


def _diameter_um(mask, px_per_um=450 / TILE_UM):
    return 2 * math.sqrt(mask.sum() / math.pi) / px_per_um


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(20)
    return {kind: [draw_other_tile(kind, rng) for _ in range(8)] for kind in KINDS}


@pytest.mark.parametrize("kind", sorted(TEXTBOOK_UM))
def test_each_kind_is_drawn_at_its_textbook_size(tiles, kind):
    lo, hi = TEXTBOOK_UM[kind]
    sizes = [_diameter_um(_lit(rgb)) for rgb, _, _ in tiles[kind]]
    # Equivalent-circle diameter of the drawn object; a slightly wavy outline may add a few per cent.
    assert all(0.95 * lo <= d <= 1.06 * hi for d in sizes), sizes
    assert max(sizes) - min(sizes) > 0.15 * (hi - lo)  # sizes vary within the range


def test_sizes_hold_at_a_fields_scale():
    """At 0.15 um/px (a field), a monocyte is as large in micrometres as in a tile."""
    rng = np.random.default_rng(1)
    for kind in ("neutrophil", "monocyte"):
        lo, hi = TEXTBOOK_UM[kind]
        drawn = render_other(rng, kind, px_per_um=1 / 0.15)
        assert 0.95 * lo <= _diameter_um(_lit(drawn.rgb), 1 / 0.15) <= 1.06 * hi


def test_everything_outside_the_cell_is_black(tiles):
    for kind in KINDS:
        for rgb, cell, _ in tiles[kind]:
            assert rgb.shape == (450, 450, 3) and rgb.dtype == np.uint8
            if kind == "checkerboard":
                assert cell.all() and (rgb.max(axis=2) > 0).all()  # fills the tile: plainly not a cell
                continue
            outside = ~cv2.dilate(cell.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            assert rgb[outside].max() == 0, kind
            assert not rgb[[0, -1]].any() and not rgb[:, [0, -1]].any(), kind  # a black border as C-NMC's
            # ... and nothing black inside it: the object is one lit region, the mask's size
            assert abs(_lit(rgb).sum() - cell.sum()) < 0.03 * cell.sum(), kind


def test_neutrophil_nucleus_has_three_to_five_lobes(tiles):
    counts = []
    for rgb, _, _ in tiles["neutrophil"] + [draw_other_tile("neutrophil", np.random.default_rng(s)) for s in range(8)]:
        counts.append(_lobes_in_pixels(rgb))
    assert all(3 <= c <= 5 for c in counts), counts
    assert len(set(counts)) >= 2, counts  # not always the same number


def test_eosinophil_nucleus_has_two_or_three_lobes(tiles):
    counts = [_lobes_in_pixels(rgb) for rgb, _, _ in tiles["eosinophil"]]
    assert all(2 <= c <= 3 for c in counts) and counts.count(2) >= len(counts) // 2, counts


def _lobes_in_pixels(rgb):
    """Nucleus lobes counted on the pixels: dark purple (green < 100, blue over red), opened with a 1.2 um disc so
    that the thin chromatin strands between lobes fall away, then connected parts of at least 1 um^2."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    nucleus = ((g < 100) & (b > r) & (rgb.max(axis=2) > 0)).astype(np.uint8)
    k = int(1.2 * PX_PER_UM) | 1
    opened = cv2.morphologyEx(nucleus, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    return int(sum(stats[i, cv2.CC_STAT_AREA] >= PX_PER_UM ** 2 for i in range(1, n)))


def _share(rgb, test):
    lit = rgb.max(axis=2) > 0
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return float((test(r, g, b) & lit).sum() / lit.sum())


def test_granules_make_the_granulocytes():
    """Eosinophils: orange-red granules over much of the cell; basophils: purple-black granules; neither in the
    lymphoid cells of synth.cells."""
    rng = np.random.default_rng(4)
    lymphoid = [render_cnmc_image(rng, lab, Stain.random(rng)) for lab in ("all", "hem") * 4]
    orange = lambda r, g, b: (r > g + 60) & (r > b + 80)
    black_purple = lambda r, g, b: (r + g + b) < 3 * 65
    tiles = {k: [draw_other_tile(k, rng)[0] for _ in range(6)] for k in ("eosinophil", "basophil", "neutrophil")}
    assert min(_share(t, orange) for t in tiles["eosinophil"]) > 0.35
    assert min(_share(t, black_purple) for t in tiles["basophil"]) > 0.15
    assert max(_share(t, orange) for t in lymphoid + tiles["neutrophil"]) < 0.02
    assert max(_share(t, black_purple) for t in lymphoid + tiles["neutrophil"]) < 0.03


def test_monocyte_nucleus_is_folded_and_its_colour_is_not_a_giveaway(tiles):
    solidity = []
    for _, _, nucleus in tiles["monocyte"]:
        contours, _ = cv2.findContours(nucleus.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=cv2.contourArea)
        solidity.append(cv2.contourArea(c) / cv2.contourArea(cv2.convexHull(c)))
    assert np.mean(solidity) < 0.93, solidity  # a kidney: clearly less than its convex hull (an ellipse ~0.99)
    # Stain palette: a monocyte's mean colour is within 30 grey levels of the lymphoid cells' range per channel
    # (paler than a blast, as real monocytes are, but not another palette).
    rng = np.random.default_rng(5)
    lymph = np.array([_mean_colour(render_cnmc_image(rng, lab, Stain.random(rng))) for lab in ("all", "hem") * 10])
    mono = np.array([_mean_colour(rgb) for rgb, _, _ in tiles["monocyte"]])
    assert (mono.min(0) > lymph.min(0) - 30).all() and (mono.max(0) < lymph.max(0) + 30).all(), (mono, lymph)


def _mean_colour(rgb):
    return rgb[rgb.max(axis=2) > 0].astype(float).mean(0)


def test_red_cell_clumps_are_pink_and_larger_than_one_red_cell(tiles):
    for rgb, _, nucleus in tiles["rbc_clump"]:
        r, g, b = _mean_colour(rgb)
        assert r > g + 30 and r > b + 20 and not nucleus.any()
        assert 8.0 <= _diameter_um(_lit(rgb)) <= math.sqrt(5) * 8.5  # 2-5 red cells of 6.5-8.5 um, overlapping


def test_test_images_are_plainly_not_cells(tiles):
    for rgb, cell, _ in tiles["disc"]:
        inner = cv2.erode(cell.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert len(np.unique(rgb[inner], axis=0)) == 1  # one flat colour
    for rgb, _, _ in tiles["checkerboard"]:
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) == 2


def test_reproducible_per_seed_and_seeds_differ(tmp_path):
    a = write_out_of_scope(tmp_path / "a", 2, size=96, seed=7)
    b = write_out_of_scope(tmp_path / "b", 2, size=96, seed=7, kinds=("monocyte", "neutrophil"))
    c = write_out_of_scope(tmp_path / "c", 2, size=96, seed=8, kinds=("monocyte",))
    assert len(a) == 2 * len(KINDS) and {k for _, k in a} == set(KINDS)
    by_name = {p.relative_to(tmp_path / "a"): p for p, _ in a}
    for p, _ in b:  # a kind's images do not depend on which other kinds were asked for
        assert p.read_bytes() == by_name[p.relative_to(tmp_path / "b")].read_bytes()
    for p, _ in c:
        assert p.read_bytes() != by_name[p.relative_to(tmp_path / "c")].read_bytes()
    img = cv2.imread(str(a[0][0]))
    assert img.shape == (96, 96, 3)
    with open(tmp_path / "a" / "index.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "kind"] and len(rows) == 1 + len(a) and rows[1][0] == "neutrophil/neutrophil_0000.png"
    assert "ONLY" in (tmp_path / "a" / "SYNTHETIC.txt").read_text()
    # same generator state, same picture; the next draw differs
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(draw_other("eosinophil", rng1, 64), draw_other("eosinophil", rng2, 64))
    assert not np.array_equal(draw_other("eosinophil", rng1, 64), draw_other("eosinophil", np.random.default_rng(4), 64))


def test_bad_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown out-of-scope kind 'lymphocyte'"):
        write_out_of_scope(tmp_path / "x", 1, kinds=("neutrophil", "lymphocyte"))
    assert not (tmp_path / "x").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="per-kind"):
        write_out_of_scope(tmp_path / "x", 0)
    with pytest.raises(ValueError):
        render_other(np.random.default_rng(0), "neutrophil", size_um=-1)


def test_data_others_cli(tmp_path):
    res = CliRunner().invoke(app, ["data", "others", str(tmp_path / "o"), "--per-kind", "2", "--size", "64",
                                   "--kinds", "neutrophil, monocyte"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == ["monocyte", "neutrophil"]
    assert len(list((tmp_path / "o").rglob("*.png"))) == 4 and "ONLY" in res.output
    bad = CliRunner().invoke(app, ["data", "others", str(tmp_path / "p"), "--kinds", "plasma_cell"])
    assert bad.exit_code == 2 and "unknown out-of-scope kind" in bad.output
    assert set(LEUKOCYTE_KINDS) <= set(KINDS)
