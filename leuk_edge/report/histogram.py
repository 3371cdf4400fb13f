"""The P(all) histogram as inline SVG (no image file, no script, no external reference): bars per bin, the
threshold as a line, the uncertain band shaded."""

from __future__ import annotations

import numpy as np

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 640, 240, 44, 34, 12, 12


def bin_counts(probabilities: np.ndarray, bins: int = 20) -> np.ndarray:
    """Equal-width bins over [0, 1]; P(all) = 1 falls in the last bin."""
    counts, _ = np.histogram(np.asarray(probabilities, np.float64), bins=bins, range=(0.0, 1.0))
    return counts


def histogram_svg(probabilities: np.ndarray, threshold: float, band: float, bins: int = 20) -> str:
    counts = bin_counts(probabilities, bins)
    top = max(1, int(counts.max()) if counts.size else 1)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    x = lambda v: PAD_L + v * pw  # noqa: E731 - P(all) -> pixels
    y = lambda c: PAD_T + ph - c / top * ph  # noqa: E731 - count -> pixels
    parts = [f'<svg id="histogram-svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="Histogram of P(all)">',
             f'<rect class="band" x="{x(max(0.0, threshold - band)):.1f}" y="{PAD_T}" '
             f'width="{x(min(1.0, threshold + band)) - x(max(0.0, threshold - band)):.1f}" height="{ph}"/>']
    for i, c in enumerate(counts):
        lo, hi = i / bins, (i + 1) / bins
        cls = "bar all" if lo >= threshold else "bar hem"
        parts.append(f'<rect class="{cls}" data-bin="{i}" data-count="{int(c)}" x="{x(lo) + 1:.1f}" '
                     f'y="{y(c):.1f}" width="{x(hi) - x(lo) - 2:.1f}" height="{y(0) - y(c):.1f}">'
                     f'<title>P(all) {lo:.2f}-{hi:.2f}: {int(c)}</title></rect>')
    parts.append(f'<line class="axis" x1="{PAD_L}" y1="{y(0)}" x2="{W - PAD_R}" y2="{y(0)}"/>')
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{x(v):.1f}" y="{H - PAD_B + 16}" text-anchor="middle">{v:.2f}</text>')
    parts.append(f'<text x="{PAD_L - 6}" y="{PAD_T + 10}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{PAD_L - 6}" y="{y(0):.1f}" text-anchor="end">0</text>')
    parts.append(f'<text x="{W / 2:.0f}" y="{H - 2}" text-anchor="middle">P(all)</text>')
    parts.append(f'<line class="threshold" x1="{x(threshold):.1f}" y1="{PAD_T}" x2="{x(threshold):.1f}" '
                 f'y2="{y(0)}"/><text class="threshold-label" x="{x(threshold) + 4:.1f}" y="{PAD_T + 10}">'
                 f'threshold {threshold:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)
