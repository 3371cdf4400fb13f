"""Station state (SQLite, WAL, synchronous=FULL): how long a restart takes to restore a slide of 500 cells, and how
many reviews per second the API acknowledges (each committed and synced before its answer).

    python benchmarks/bench_station_state.py [--cells 500] [--reviews 600] [--repeats 3]

Restore: a station folder holding one open slide of N cells (128x128 crops on disk, half of them reviewed) is
opened (a) in-process as the store alone (`ReviewStore(...)` + the slide's cell list), (b) in-process as the whole
station (`build_station`: model session + store) and (c) as `leuk-edge serve` from process start to the first
`/api/cells` answer listing all N cells; beside each, the same with an empty folder, so the difference is the cost of
restoring. Throughput: `POST /api/cells/{id}/review` against `leuk-edge serve` on 127.0.0.1 from 1 and 8 clients
(httpx, keep-alive), beside `ReviewStore.review` called in-process (no HTTP) and beside the HTTP floor of the same
server (`GET /static/station.css`, the same clients) -- each review is one committed transaction (UPDATE cell,
INSERT review, INSERT audit entry; WAL synced) plus a reviews.jsonl append.
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


def build_in_process(model: Path, folder: Path, slide: str | None) -> tuple[float, int]:
    from leuk_edge.station.app import build_station

    t0 = time.perf_counter()
    st = build_station(model, folder, device="cpu", threads=1)
    n = len(st.store.cells(slide=slide)) if slide else len(st.store.cells())
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


def api_rate(base: str, ids: list[int], clients: int, review: bool = True) -> float:
    """Requests answered per second, `clients` threads each sending its share one after another: reviews, or
    (review=False) as many GETs of a static file, the server's HTTP floor."""
    import httpx

    def run(mine):
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for i, cid in enumerate(mine):
                if review:
                    r = http.post(f"{base}/api/cells/{cid}/review", json={"label": ("all", "hem")[i % 2],
                                                                          "reviewer": "bench"})
                else:
                    r = http.get(f"{base}/static/station.css")
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
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from tiny_models import make_tiny_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-station-state-"))
    try:
        model = make_tiny_onnx(work / "tiny.onnx", size=32)
        full, empty = work / "full", work / "empty"
        slide = populate(full, args.cells)
        restore_in_process(empty, None)  # the empty folder's database exists before it is timed
        runs = {k: [] for k in ("inproc_full", "inproc_empty", "build_full", "build_empty", "serve_full",
                                "serve_empty", "store", "api1", "api8", "floor1", "floor8")}
        for r in range(args.repeats):
            log(f"repeat {r + 1}/{args.repeats}")
            for key, fn in (("inproc_full", lambda: restore_in_process(full, slide)),
                            ("inproc_empty", lambda: restore_in_process(empty, None)),
                            ("build_full", lambda: build_in_process(model, full, slide)),
                            ("build_empty", lambda: build_in_process(model, empty, None)),
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
                runs["floor1"].append(api_rate(base, todo, 1, review=False))
                runs["api1"].append(api_rate(base, todo, 1))
                runs["floor8"].append(api_rate(base, todo, 8, review=False))
                runs["api8"].append(api_rate(base, todo, 8))
            finally:
                stop(proc)
        med = {k: statistics.median(v) for k, v in runs.items()}
        ms = lambda k: f"{1000 * med[k]:.0f} ms ({1000 * min(runs[k]):.0f}-{1000 * max(runs[k]):.0f})"  # noqa: E731
        diff = lambda a, b: f"{1000 * (med[a] - med[b]):+.0f} ms"  # noqa: E731
        rate = lambda k: f"{med[k]:.0f} ({min(runs[k]):.0f}-{max(runs[k]):.0f})"  # noqa: E731
        n = args.cells
        rows = [
            [f"restore: the store alone, {n} cells (ReviewStore + cell list)", ms("inproc_full"),
             ms("inproc_empty"), diff("inproc_full", "inproc_empty")],
            [f"restore: the station in-process (model + store), {n} cells", ms("build_full"), ms("build_empty"),
             diff("build_full", "build_empty")],
            [f"restart: `leuk-edge serve` start -> /api/cells lists {n}", ms("serve_full"), ms("serve_empty"),
             diff("serve_full", "serve_empty")],
            ["reviews/s in-process (ReviewStore.review, no HTTP)", rate("store"), "", ""],
            ["reviews/s over HTTP, 1 client", rate("api1"), f"GET static file {rate('floor1')}/s",
             f"{med['api1'] / med['floor1']:.2f} x the HTTP floor"],
            ["reviews/s over HTTP, 8 clients", rate("api8"), f"GET static file {rate('floor8')}/s",
             f"{med['api8'] / med['floor8']:.2f} x the HTTP floor"],
        ]
        md = ("# Station state: restore and review throughput\n\n"
              + markdown_table(["measure", "median (min-max)", "beside it: empty folder / HTTP floor",
                                "difference / ratio"], rows, "lrrr")
              + f"\n\n{args.repeats} repeats, medians (min-max); {args.reviews} requests per throughput run; every "
                "review is committed (WAL synced) before its answer. Restore columns: with the slide / with an "
                "empty folder.\n")
        data = {"args": vars(args), "runs": runs, "median": med, "machine": machine_info(("onnxruntime", "numpy"))}
        md_path, _ = write_results(RESULTS, "bench_station_state", md, data)
        print(md)
        log(f"wrote {md_path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
