"""An exported model set made the way `export` makes it, without TensorFlow: a tiny FP32 ONNX model, its real
FP16/INT8 variants (export's own `make_fp16`/`make_int8`), each gated by export's own `check_variant` on a folder
of real image files, and export's manifest written last. What `--precision` reads, with nothing written by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_folder(folder: Path, n: int = 100, size: int = 40, seed: int = 0) -> Path:
    """n BMPs, each a random colour with noise: dark/purple ones and light ones, so the tiny model's P(all) spreads
    across its threshold."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        colour = rng.uniform(20, 235, 3)
        img = np.clip(rng.normal(colour, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"cell_{i:03d}.bmp"), img)
    return folder


def gated_set(folder: Path, images: Path | None, variants=("int8", "fp16"), n: int = 100, cam: bool = False,
              manifest: bool = True) -> Path:
    """folder/model.onnx with its variants and their gate reports (and with `manifest`, model.manifest.json)."""
    from tiny_models import make_tiny_cam_onnx, make_tiny_onnx

    from leuk_edge.edge.model_files import report_path, variant_path
    from leuk_edge.export.manifest import write_manifest
    from leuk_edge.export.parity import check_variant, parity_inputs
    from leuk_edge.export.variants import make_fp16, make_int8

    folder.mkdir(parents=True, exist_ok=True)
    base = (make_tiny_cam_onnx if cam else make_tiny_onnx)(folder / "model.onnx", size=32)
    written = [base]
    for precision in variants:
        dst = variant_path(base, precision)
        if precision == "int8":
            make_int8(base, dst, parity_inputs(32, 32, "area", images, 16, seed=1000).x)
        else:
            make_fp16(base, dst)
        rep = check_variant(base, dst, data=images, n=n)
        written += [dst, rep.write(report_path(dst))]
    if manifest:
        write_manifest(base, None, written)
    return base
