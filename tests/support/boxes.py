"""Box matching for detection tests and benchmarks (IoU, greedy one-to-one matching)."""

from __future__ import annotations


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match_boxes(pred, truth, iou: float = 0.5, ignore=None):
    """Greedy one-to-one matching by IoU. `ignore`: truth flags (e.g. cut by the edge) whose matches and misses
    count neither way. Returns (tp, fp, fn, pairs [(pred_i, truth_i, iou)])."""
    ignore = list(ignore) if ignore is not None else [False] * len(truth)
    cands = sorted(((box_iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, pairs = set(), set(), []
    for v, i, j in cands:
        if v < iou or i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        pairs.append((i, j, v))
    tp = sum(1 for _, j, _ in pairs if not ignore[j])
    ignored_p = sum(1 for _, j, _ in pairs if ignore[j])
    fp = len(pred) - tp - ignored_p
    fn = sum(1 for j in range(len(truth)) if j not in used_t and not ignore[j])
    return tp, fp, fn, pairs
