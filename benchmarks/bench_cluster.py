"""Ray engine vs local engine on one node (same cores, same folder), and a paper projection for N nodes.

    python benchmarks/bench_cluster.py [--n 800] [--size 256] [--batch 16] [--repeats 3] [--model M.onnx]

Measures, alternating rounds so other load hits both alike:
  local   `classify --engine local`: expand_paths + classify_paths (decode threads + one ORT session, all cores)
  ray     `classify --engine ray`:   Ray Data, one actor per core (1 ORT thread each), local Ray with the same cores
  noop    the same Ray Data pipeline over --noop-n fake paths with actors that return the rows without reading
          anything: the engine's own cost per batch (scheduling, object transfer, driver), the ceiling of one driver
The Ray run is timed end to end (actor pool start included: Ray Data starts a pool per run) and in steady state:
the slope between runs over all n images and over n/2 (the fixed start cost cancels); the no-op rate likewise. The projection multiplies the measured per-actor steady rate by actors per node and caps it
by (a) storage bandwidth / bytes per image and (b) the measured no-op batch rate x batch size.
Without --model it exports the from-scratch CNN with random weights (needs the [train] extra; speed only).
Writes benchmarks/results/bench_cluster.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, export_onnx, interleave, log, logical_cores, machine_info, markdown_table,  # noqa: E402
                    save_random_model, summarize, write_cells, write_results)


def local_runner(model: Path, folder: Path, batch: int, stages: list):
    from leuk_edge.edge import Classifier, StageTimes, classify_paths, expand_paths

    clf = Classifier(model, spinning=False)  # what `classify --engine local` opens

    def run():
        times = StageTimes()
        rows = list(classify_paths(clf, expand_paths([folder]).images, batch_size=batch, times=times))
        assert times.errors == 0
        stages.append(times.to_dict())
        return len(rows), []

    return run


def ray_runner(model: Path, files: list[str], batch: int, actors: int, stages: list, actor_cls=None):
    from leuk_edge.edge.classify import StageTimes
    from leuk_edge.cluster.ray_engine import ClassifyActor, RayOptions, classify_ray

    def run():
        times = StageTimes()
        t0 = time.perf_counter()
        first = None
        n = 0
        for _ in classify_ray(files, model, RayOptions(actors=actors, batch_size=batch), times,
                              actor_cls=actor_cls or ClassifyActor):
            first = first if first is not None else time.perf_counter() - t0
            n += 1
        assert n == len(files)
        stages.append({**times.to_dict(), "first_row_s": first})
        return n, []

    return run


def noop_actor():
    from leuk_edge.edge.classify import Row
    from leuk_edge.cluster.ray_engine import ClassifyActor, rows_table

    class NoopActor(ClassifyActor):
        """No model, no decode: the rows come straight back (the pipeline's own cost per batch)."""

        def __init__(self, **kwargs):
            pass

        def __call__(self, batch):
            return rows_table([Row(p, "hem", 0.0) for p in batch.column("path").to_pylist()])

    return NoopActor


def projection(per_actor: float, actors_per_node: int, bytes_per_image: float, noop_batches_per_s: float,
               batch: int, nodes=(1, 4, 16, 64), storage_gb_s=(1.0, 10.0)) -> list[list]:
    """images/s for N nodes = min(N x actors x per-actor rate, storage bandwidth / image size, driver batch rate
    x batch size): which cap binds first is the point."""
    rows = []
    for n in nodes:
        compute = n * actors_per_node * per_actor
        for bw in storage_gb_s:
            storage = bw * 1e9 / bytes_per_image
            driver = noop_batches_per_s * batch
            limit = min(compute, storage, driver)
            which = {compute: "compute", storage: f"storage {bw:g} GB/s", driver: "driver/scheduler"}[limit]
            rows.append([n, f"{bw:g}", f"{compute:,.0f}", f"{storage:,.0f}", f"{driver:,.0f}", f"{limit:,.0f}",
                         which])
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=800, help="number of 450x450 BMPs")
    ap.add_argument("--size", type=int, default=256, help="CNN input size (when exporting)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noop-n", type=int, default=20000, help="rows through the no-op pipeline")
    ap.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per core)")
    ap.add_argument("--model", type=Path, default=None, help="an exported leuk-edge ONNX (default: export the CNN)")
    ap.add_argument("--data", type=Path, default=None, help="folder for the BMPs (kept; default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import ray

    cores = logical_cores()
    actors = args.actors or cores
    meta = machine_info(("onnxruntime", "cv2", "numpy", "ray", "pyarrow"))
    with tempfile.TemporaryDirectory(prefix="leuk_bench_cluster_") as tmp:
        tmp = Path(tmp)
        folder = args.data or tmp / "cells"
        log(f"writing {args.n} 450x450 BMPs to {folder} ...")
        paths = write_cells(folder, args.n)
        bytes_per_image = sum(os.path.getsize(p) for p in paths) / len(paths)
        model = args.model
        if model is None:
            log(f"exporting the CNN at {args.size} to ONNX ...")
            keras_path, _ = save_random_model("cnn", tmp / "cnn", size=args.size)
            model = export_onnx(keras_path, tmp / "cnn" / "cnn.onnx", int8=False, verbose=False).fp32.path
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            stages = {"local": [], "ray": [], "noop": []}
            from leuk_edge.cluster.ray_engine import list_inputs

            files = list_inputs([str(folder)]).images
            # no-op actors never open a file: many (fake) paths give many batches, so the per-batch cost shows
            fake = [f"/no/such/dir/{i:07d}.bmp" for i in range(args.noop_n)]
            half, fake_half = files[:len(files) // 2], fake[:len(fake) // 2]
            stages.update({"ray_half": [], "noop_half": []})
            runs = {"local": local_runner(model, folder, args.batch, stages["local"]),
                    "ray": ray_runner(model, files, args.batch, actors, stages["ray"]),
                    "ray_half": ray_runner(model, half, args.batch, actors, stages["ray_half"]),
                    "noop": ray_runner(model, fake, args.batch, actors, stages["noop"], noop_actor()),
                    "noop_half": ray_runner(model, fake_half, args.batch, actors, stages["noop_half"],
                                            noop_actor())}
            load_before = os.getloadavg()
            samples = interleave(runs, args.repeats, warmup=runs, on_round=lambda r, s: log(
                f"round {r + 1}: " + ", ".join(f"{k} {v[-1].wall_s:.2f}" for k, v in s.items()) + " s"))
            load_after = os.getloadavg()
        finally:
            ray.shutdown()

    summary = {k: summarize(v, args.batch) for k, v in samples.items()}
    best = {k: summary[k]["images_per_s_best"] for k in runs}
    wall = {k: min(x.wall_s for x in v) for k, v in samples.items()}
    # Steady state from two run lengths: wall(n) = start + n / rate, so the fixed start (actor pool, model
    # shipping, first batch) cancels in the difference.
    steady = (len(files) - len(half)) / max(wall["ray"] - wall["ray_half"], 1e-9)
    start_s = max(0.0, wall["ray"] - len(files) / steady)
    noop_steady = (len(fake) - len(fake_half)) / max(wall["noop"] - wall["noop_half"], 1e-9)
    per_actor = steady / actors
    rs = stages["ray"][1:]  # the warm-up round excluded
    lt = stages["local"][-1]
    rt = rs[-1]
    ratio = best["ray"] / best["local"]
    steady_ratio = steady / best["local"]
    proj = projection(per_actor, actors, bytes_per_image, noop_steady / args.batch, args.batch)
    result = {
        "n_images": args.n, "bytes_per_image": bytes_per_image, "model": str(args.model or f"cnn {args.size}"),
        "batch": args.batch, "repeats": args.repeats, "cores": cores, "actors": actors, "machine": meta,
        "load_average_before_after": [load_before, load_after], "images_per_s_best": best, "summary": summary,
        "ray_vs_local": ratio, "ray_steady_vs_local": steady_ratio, "ray_steady_images_per_s": steady,
        "ray_fixed_start_s": start_s, "ray_first_row_s": min(x["first_row_s"] for x in rs), "best_wall_s": wall, "per_actor_images_per_s": per_actor,
        "noop_batches_per_s": noop_steady / args.batch, "local_stages": lt, "ray_stages": rt, "projection": proj,
    }
    table = "\n".join([
        f"# classify: Ray engine vs local engine ({args.n} x 450x450 BMP, {result['model']}, batch {args.batch}, "
        f"{cores} cores, {actors} Ray actors)",
        "",
        markdown_table(["engine", "images/s (best of rounds)", "Ray / local"], [
            ["local (threads + 1 ORT session)", f"{best['local']:.1f}", "1"],
            ["ray, end to end (pool start included)", f"{best['ray']:.1f}", f"{ratio:.2f} x"],
            ["ray, steady state (slope of n vs n/2 images)", f"{steady:.1f}", f"{steady_ratio:.2f} x"],
            [f"ray pipeline, no-op actors ({args.noop_n} rows)", f"{best['noop']:.1f} ({noop_steady:.0f} steady)",
             "–"],
        ]),
        "",
        f"Per actor: {per_actor:.1f} images/s steady; decode+preprocess {rt['decode_ms_per_image']:.2f} ms/image, "
        f"inference {rt['infer_ms_per_image']:.2f} ms/image (per actor, one core each). Local: decode "
        f"{lt['decode_ms_per_image']:.2f} ms/image on threads, inference {lt['infer_ms_per_image']:.2f} ms/image. "
        f"Fixed cost per Ray run {start_s:.1f} s (actor pool start, model shipping; first row after "
        f"{result['ray_first_row_s']:.1f} s). No-op pipeline: "
        f"{noop_steady / args.batch:.0f} batches/s through one driver.",
        "",
        f"## Paper projection for N nodes ({actors} actors per node, {per_actor:.1f} images/s per actor, "
        f"{bytes_per_image / 1e3:.0f} kB per image, batch {args.batch})",
        "",
        "images/s = min(compute, storage, driver): compute = N x actors x per-actor rate (measured here); storage = "
        "bandwidth / image size (assumed shared storage bandwidth); driver = measured no-op batches/s x batch "
        "(one Ray Data driver schedules every batch). A projection, not a measurement.",
        "",
        markdown_table(["nodes", "storage GB/s", "compute", "storage cap", "driver cap", "projected", "limit"], proj),
        "",
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (other processes skew every row; "
        "best-of is the least disturbed run).",
        "",
    ])
    write_results(args.out, "bench_cluster", table, result)
    print(table)
    return result


if __name__ == "__main__":
    main()
