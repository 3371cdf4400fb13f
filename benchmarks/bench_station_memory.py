"""Station memory: peak resident memory (RSS) of `leuk-edge serve` for the uploads of issue 17, item 5.

    python benchmarks/bench_station_memory.py [--baseline REV] [--model M.onnx] [--files 10] [--requests 4]

Scenarios, each in a fresh `leuk-edge serve` process (no source, uploads only):
  bomb        one upload of a 308 KB PNG that declares 6300x6300 16-bit RGBA (303 MiB of pixels)
  bomb-400    the same with --max-decode-mb 400 (decoded: the bound of a decode the budget lets through)
  ten         one request of 10 files of 24 MiB (incompressible PNG noise, 2896x2896 RGB)
  four        4 such requests at once
The server is warmed up with one small upload, its peak counter is reset (/proc/PID/clear_refs = 5), the scenario
runs, and VmHWM (peak RSS) is read from /proc/PID/status. With `--baseline REV` the same scenarios run, side by side
in this run, against the package as it was at git revision REV (`git archive REV leuk_edge`), e.g. the commit before
the bounded-memory change. The model is a 256 px stand-in ONNX (tests/tiny_models.py) unless --model is given:
the memory at stake is the uploads', not the model's. Linux only (/proc).
Writes benchmarks/results/bench_station_memory.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from common import RESULTS, log, machine_info, markdown_table, write_results  # noqa: E402
from test_station_memory import png_of_zeros  # noqa: E402  (the issue's file, written row by row)

SERVER = "from leuk_edge.cli import main; main()"


def noise_png(path: Path, side: int = 2896) -> Path:
    import cv2
    import numpy as np

    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes())
    return path


def _kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


class Station:
    """`leuk-edge serve` of one package tree in a subprocess; its URL and token read from its first stdout line."""

    def __init__(self, package_root: Path, model: Path, folder: Path, extra: list[str]):
        env = {**os.environ, "PYTHONPATH": str(package_root)}
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, "serve", "-m", str(model), "--port", "0",
                                      "--folder", str(folder), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=folder)  # not the repository: `python -c` would import ./leuk_edge first
        url = self.proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the station did not start: {self.proc.stderr.read()[-2000:]}")
        self.base, _, self.token = url.partition("/?token=")
        self.base = self.base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def upload(self, paths: list[Path]) -> dict:
        handles = [open(p, "rb") for p in paths]
        try:
            r = httpx.post(f"{self.base}/api/classify", headers=self.headers, timeout=600,
                           files=[("files", (f"{i:02d}-{p.name}", fh, "image/png")) for i, (p, fh)
                                  in enumerate(zip(paths, handles))])
        finally:
            for fh in handles:
                fh.close()
        rows = r.json().get("rows", []) if r.headers.get("content-type", "").startswith("application/json") else []
        return {"status": r.status_code, "rows": len(rows), "errors": sum(x["label"] == "error" for x in rows)}

    def reset_peak(self) -> int:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        return _kib(self.proc.pid, "VmRSS")

    def peak(self) -> int:
        return _kib(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_scenario(root: Path, model: Path, work: Path, extra: list[str], requests: list[list[Path]],
                 warm: Path) -> dict:
    st = Station(root, model, work, extra)
    try:
        st.upload([warm])
        idle = st.reset_peak()
        answers, t0 = [None] * len(requests), time.perf_counter()
        threads = [threading.Thread(target=lambda i=i, r=r: answers.__setitem__(i, st.upload(r)))
                   for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        peak = st.peak()
    finally:
        st.stop()
    return {"idle_mib": idle / 1024, "peak_mib": peak / 1024, "added_mib": (peak - idle) / 1024, "wall_s": wall,
            "answers": answers}


def baseline_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "leuk_edge"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _answer(answers: list[dict]) -> str:
    return "; ".join(f"{a['status']}: {a['rows']} rows, {a['errors']} errors" for a in answers[:1]) + \
        (f" (x{len(answers)})" if len(answers) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="git revision to measure side by side (e.g. the commit before the change)")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--requests", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-station-mem-") as tmp:
        tmp = Path(tmp)
        if args.model is None:
            from tiny_models import make_tiny_onnx

            args.model = make_tiny_onnx(tmp / "stand-in.onnx", size=256)
        bomb = tmp / "bomb.png"
        bomb.write_bytes(png_of_zeros(6300, 6300, colour=6, depth=16))
        noise = noise_png(tmp / "noise.png")
        warm = tmp / "warm.png"
        warm.write_bytes(png_of_zeros(64, 64, colour=2, depth=8))
        log(f"bomb {bomb.stat().st_size / 1e3:.0f} KB, noise {noise.stat().st_size / 2**20:.1f} MiB")
        trees = {"this tree": ROOT}
        if args.baseline:
            (tmp / "baseline").mkdir()
            trees[f"baseline {args.baseline}"] = baseline_tree(args.baseline, tmp / "baseline")
        scenarios = {
            "bomb: 308 KB PNG declaring 6300x6300 16-bit RGBA": ([], [[bomb]]),
            "bomb with --max-decode-mb 400": (["--max-decode-mb", "400"], [[bomb]]),
            f"{args.files} x 24 MiB in one request": ([], [[noise] * args.files]),
            f"{args.requests} such requests at once": ([], [[noise] * args.files] * args.requests),
        }
        results = []
        for name, (extra, requests) in scenarios.items():
            for label, root in trees.items():  # side by side: each scenario on each tree before the next
                if extra and label != "this tree":
                    continue  # the baseline has no such option
                log(f"{name} - {label}")
                r = run_scenario(root, args.model, tmp / f"work-{len(results)}", extra, requests, warm)
                results.append({"scenario": name, "tree": label, **r})
                log(f"  peak {r['peak_mib']:.0f} MiB (+{r['added_mib']:.0f}), {r['wall_s']:.1f} s, "
                    f"{_answer(r['answers'])}")
    rows = [(r["scenario"], r["tree"], f"{r['idle_mib']:.0f}", f"{r['peak_mib']:.0f}", f"{r['added_mib']:.0f}",
             f"{r['wall_s']:.1f}", _answer(r["answers"])) for r in results]
    md = ("# Station memory (peak RSS of `leuk-edge serve`)\n\n"
          + markdown_table(["scenario", "code", "idle MiB", "peak MiB", "added MiB", "wall s", "answer"], rows)
          + "\n\nidle = RSS after one small warm-up upload; peak = VmHWM after the scenario (reset before it).\n")
    print(md)
    write_results(RESULTS, "bench_station_memory", md, {"results": results, "machine": machine_info()})


if __name__ == "__main__":
    main()
