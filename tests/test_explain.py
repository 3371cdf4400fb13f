"""CAM overlays (edge.explain): signed evidence on one fixed scale -- red = evidence for `all`, blue = for `hem`,
no tint where there is none -- the same scale for every map, so colours mean the same on every cell."""

import numpy as np

from leuk_edge.edge.explain import EVIDENCE_SCALE, blend, draw_overlay

GREY = np.full((64, 64, 3), 128, np.uint8)


def _red(bgr, margin=8):
    """Pixels tinted red: red channel over blue (the grey base has them equal)."""
    return bgr[:, :, 2].astype(int) > bgr[:, :, 0].astype(int) + margin


def test_a_map_with_only_negative_evidence_has_no_red_pixel():
    """Defect 6: each map was scaled to its own min..max, so on a `hem` cell (all evidence negative) the least
    negative spot was drawn red -- "evidence for all" where there is none."""
    cam = -np.array([[3.0, 2.0, 1.0, 0.5]] * 4, np.float32)  # negative everywhere, the least negative at the right
    out = blend(GREY, cam)
    assert not _red(out).any()
    assert (out[:, :, 0] > out[:, :, 2]).mean() > 0.9  # blue: evidence for hem
    assert not _red(draw_overlay(GREY, cam, 0.1, "hem")[:-8]).any()  # the drawn overlay above its legend strip


def test_one_fixed_scale_for_every_map():
    weak, strong = np.full((4, 4), 0.25 * EVIDENCE_SCALE, np.float32), np.full((4, 4), EVIDENCE_SCALE, np.float32)
    a, b = blend(GREY, weak), blend(GREY, strong)
    tint = lambda x: float((x[:, :, 2].astype(int) - x[:, :, 0].astype(int)).mean())  # noqa: E731
    assert 0 < tint(a) < tint(b) / 2  # per-map scaling drew both at full strength
    assert np.array_equal(blend(GREY, np.zeros((4, 4), np.float32)), GREY[:, :, ::-1])  # zero: no tint at all
    assert np.array_equal(blend(GREY, 3 * strong), b)  # beyond the scale: full colour, not brighter
