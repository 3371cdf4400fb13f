"""Station state (SQLite, WAL, synchronous=FULL): how long a restart takes to restore a slide of 500 cells, and how
many reviews per second the API acknowledges (each committed and synced before its answer).

    python benchmarks/bench_station_state.py [--cells 500] [--reviews 600] [--repeats 3]

Restore: a station folder holding one open slide of N cells (128x128 crops on disk, half of them reviewed) is
opened (a) in-process (`ReviewStore(...)` + the slide's cell list) and (b) as `leuk-edge serve` from process start to
the first `/api/cells` answer listing all N cells; beside each, the same with an empty folder, so the difference is
the cost of restoring. Throughput: `POST /api/cells/{id}/review` against `leuk-edge serve` on 127.0.0.1 from 1 and
8 clients (httpx, keep-alive), beside `ReviewStore.review` called in-process (no HTTP) -- each review is one
committed transaction (UPDATE cell, INSERT review, INSERT audit entry; WAL synced) plus a reviews.jsonl append.
Configurations alternate within each repeat; medians are reported. The model is the tests' tiny ONNX graph (the
model's size only moves the serve start-up, equally for both folders). Writes benchmarks/results/bench_station_state.{md,json}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import RESULTS, log, machine_info, markdown_table, write_results  # noqa: E402

TOKEN = "bench-station-state-token"


def populate(folder: Path, n: int) -> str:
    """A station folder with one open upload batch of n cells, every other one reviewed -> the slide id."""
    from leuk_edge.station.review import ReviewStore

    st = ReviewStore(folder, 0.5, "0" * 64)
    add = st.batch("upload")
    rng = np.random.default_rng(0)
    ids = [add(f"cell{i:04d}.png", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), float(rng.random()))
           for i in range(n)]
    for cid in ids[::2]:
        st.review(cid, "hem", "bench")
    st.close()
    return add.slide


def restore_in_process(folder: Path, slide: str | None) -> tuple[float, int]:
    from leuk_edge.station.review import ReviewStore

    t0 = time.perf_counter()
    st = ReviewStore(folder, 0.5, "0" * 64)
    n = len(st.cells(slide=slide)) if slide else len(st.cells())
    dt = time.perf_counter() - t0
    st.close()
    return dt, n


def start_serve(model: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", "from leuk_edge.cli import main; main()", "serve", "-m", str(model),
                             "--port", "0", "--folder", str(folder), "--token", TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError("leuk-edge serve did not start")
    return proc, url.split("?")[0].rstrip("/")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def restore_serve(model: Path, folder: Path, slide: str | None) -> tuple[float, int]:
    """Seconds from process start to the first /api/cells answer (the slide's full list)."""
    import httpx

    t0 = time.perf_counter()
    proc, base = start_serve(model, folder)
    try:
        params = {"slide": slide} if slide else {}
        while True:
            try:
                r = httpx.get(f"{base}/api/cells", params=params, headers={"Authorization": f"Bearer {TOKEN}"})
                if r.status_code == 200:
                    return time.perf_counter() - t0, len(r.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    finally:
        stop(proc)


def api_reviews(base: str, ids: list[int], clients: int) -> float:
    """Reviews acknowledged per second, `clients` threads each sending its share one after another."""
    import httpx

    def run(mine):
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for i, cid in enumerate(mine):
                r = http.post(f"{base}/api/cells/{cid}/review", json={"label": ("all", "hem")[i % 2],
                                                                      "reviewer": "bench"})
                r.raise_for_status()
    shares = [ids[k::clients] for k in range(clients)]
    threads = [threading.Thread(target=run, args=(s,)) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(ids) / (time.perf_counter() - t0)


def store_reviews(folder: Path, slide: str, n: int) -> float:
    from leuk_edge.station.review import ReviewStore

    st = ReviewStore(folder, 0.5, "0" * 64)
    ids = [c["track"] for c in st.cells(slide=slide)]
    todo = [ids[i % len(ids)] for i in range(n)]
    t0 = time.perf_counter()
    for i, cid in enumerate(todo):
        st.review(cid, ("all", "hem")[i % 2], "bench")
    dt = time.perf_counter() - t0
    st.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--reviews", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from tiny_models import make_tiny_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-station-state-"))
    try:
        model = make_tiny_onnx(work / "tiny.onnx", size=32)
        full, empty = work / "full", work / "empty"
        slide = populate(full, args.cells)
        restore_in_process(empty, None)  # the empty folder's database exists before it is timed
        runs = {k: [] for k in ("inproc_full", "inproc_empty", "serve_full", "serve_empty",
                                "store", "api1", "api8")}
        for r in range(args.repeats):
            log(f"repeat {r + 1}/{args.repeats}")
            for key, fn in (("inproc_full", lambda: restore_in_process(full, slide)),
                            ("inproc_empty", lambda: restore_in_process(empty, None)),
                            ("serve_full", lambda: restore_serve(model, full, slide)),
                            ("serve_empty", lambda: restore_serve(model, empty, None))):
                dt, n = fn()
                assert n == (args.cells if key.endswith("full") else 0), (key, n)
                runs[key].append(dt)
            runs["store"].append(store_reviews(full, slide, args.reviews))
            proc, base = start_serve(model, full)
            try:
                import httpx

                ids = [c["track"] for c in httpx.get(f"{base}/api/cells", params={"slide": slide},
                                                      headers={"Authorization": f"Bearer {TOKEN}"}).json()]
                todo = [ids[i % len(ids)] for i in range(args.reviews)]
                runs["api1"].append(api_reviews(base, todo, 1))
                runs["api8"].append(api_reviews(base, todo, 8))
            finally:
                stop(proc)
        med = {k: statistics.median(v) for k, v in runs.items()}
        rows = [
            [f"restore, in-process (ReviewStore + cell list), {args.cells} cells", f"{1000 * med['inproc_full']:.1f} ms",
             f"empty folder {1000 * med['inproc_empty']:.1f} ms",
             f"+{1000 * (med['inproc_full'] - med['inproc_empty']):.1f} ms"],
            [f"restart, `leuk-edge serve` start -> /api/cells lists {args.cells}", f"{med['serve_full']:.2f} s",
             f"empty folder {med['serve_empty']:.2f} s", f"+{1000 * (med['serve_full'] - med['serve_empty']):.0f} ms"],
            ["reviews/s, ReviewStore.review in-process (no HTTP)", f"{med['store']:.0f}", "", ""],
            ["reviews/s, POST /api/cells/{id}/review, 1 client", f"{med['api1']:.0f}", "",
             f"{med['api1'] / med['store']:.2f} x in-process"],
            ["reviews/s, POST /api/cells/{id}/review, 8 clients", f"{med['api8']:.0f}", "",
             f"{med['api8'] / med['store']:.2f} x in-process"],
        ]
        md = ("# Station state: restore and review throughput\n\n"
              + markdown_table(["measure", "median", "beside it", "difference / ratio"], rows, "lrrr")
              + f"\n\n{args.repeats} repeats, medians; {args.reviews} reviews per throughput run; every review is "
                "committed (WAL synced) before its answer.\n")
        data = {"args": vars(args), "runs": runs, "median": med, "machine": machine_info(("onnxruntime", "numpy"))}
        md_path, _ = write_results(RESULTS, "bench_station_state", md, data)
        print(md)
        log(f"wrote {md_path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
