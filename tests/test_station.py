"""`leuk-edge serve`: the station API against a real uvicorn server on 127.0.0.1, over a synthetic field video."""

import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge import DISCLAIMER
from leuk_edge.cli import app
from leuk_edge.edge import Classifier
from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.labels import label_for
from leuk_edge.edge.stream import StreamOptions
from leuk_edge.station.app import build_station
from leuk_edge.station.uploads import HeaderError, Limits, declared_size
from leuk_edge.synth.fields import FieldConfig, write_fields
from station_helpers import mjpeg_frames, serve_in_thread, sse_events, wait_until
from tiny_models import make_tiny_onnx

THRESHOLD = 0.66  # the tiny model's P(all) on these fields straddles it: both classes and an uncertain band
TOKEN = "s3cret-station-token"
OPTIONS = dict(options=StreamOptions(detector=DetectorConfig(um_per_px=0.3)), device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("station")
    model = make_tiny_onnx(root / "tiny.onnx", size=32, threshold=THRESHOLD)
    cfg = FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=4)
    write_fields(root / "fields", frames=2, video_frames=24, fps=12.0, cfg=cfg, seed=8)
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (root / "outside").mkdir()
    field = cv2.imread(str(root / "fields" / "frames" / "field_000.png"))
    cv2.imwrite(str(data / "sub" / "a.png"), field[:120, :120])
    cv2.imwrite(str(root / "outside" / "secret.png"), field[:64, :64])
    os.symlink(root / "outside", data / "link_out")
    os.symlink(root / "outside" / "secret.png", data / "sub" / "leak.png")
    return root


@pytest.fixture(scope="module")
def finite(media):
    """The video played once, as fast as possible; --data-root with a symlink out of it."""
    st = build_station(media / "tiny.onnx", media / "work-finite", source=str(media / "fields" / "drift.mp4"),
                       pace=0, data_root=media / "data", **OPTIONS)
    with serve_in_thread(st) as base:
        wait_until(lambda: not httpx.get(f"{base}/api/health").json()["running"])
        yield base, st


@pytest.fixture(scope="module")
def looping(media):
    """The video replayed without end at 10 frames/s, behind a token."""
    st = build_station(media / "tiny.onnx", media / "work-loop", source=str(media / "fields" / "drift.mp4"),
                       loop=True, pace=10, token=TOKEN, **OPTIONS)
    with serve_in_thread(st) as base:
        yield base, st


def _auth(**kw):
    return {"headers": {"Authorization": f"Bearer {TOKEN}"}, **kw}


def _wilson(k, n, z=1.959963984540054):  # textbook formula, written out independently of edge.summary
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return c - h, c + h


def _png_declaring(w, h):
    """A tiny PNG (signature + IHDR + empty IDAT + IEND) whose header declares w x h."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_events_carry_cells_and_the_summary_agrees(finite):
    base, st = finite
    events = sse_events(base, since=0)  # replayed from the start; ends with the finished source
    assert [e["frame"] for e in events] == list(range(24))
    assert all(list(e)[:4] == ["frame", "time", "cells", "latency_ms"] for e in events)  # contract fields first
    tracks = {}
    for e in events:
        for c in e["cells"]:
            assert set(c) == {"box", "label", "probability", "track", "track_label"} and len(c["box"]) == 4
            tracks.setdefault(c["track"], []).append(c["probability"])
    assert sum(len(e["cells"]) for e in events) > 24  # cells in (nearly) every frame
    labels = [label_for(np.mean(ps), THRESHOLD) for ps in tracks.values()]
    s = httpx.get(f"{base}/api/summary").json()
    assert set(s) >= {"frames", "cells", "all", "hem", "blast_fraction", "ci_low", "ci_high", "fps"}
    assert s["frames"] == 24 and s["cells"] == len(tracks)
    assert (s["all"], s["hem"]) == (labels.count("all"), labels.count("hem"))
    assert 0 < s["all"] < s["cells"]  # both classes present: the check above is not vacuous
    lo, hi = _wilson(s["all"], s["cells"])
    assert s["blast_fraction"] == pytest.approx(s["all"] / s["cells"], abs=1e-4)
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))
    # The station's totals are the stream's own: run_stream's CellTracker summary says the same.
    final = st.hub.summary
    assert final["ended"] == "end of source"
    assert (final["cells"]["all"], final["cells"]["hem"]) == (s["all"], s["hem"])


def test_a_replay_that_ended_can_be_played_again(media, tmp_path):
    """The page's restart button (POST /api/source/restart): the ended video plays once more, frame numbers and
    track ids go on, the same tracker counts the cells again as new tracks; 409 while it runs."""
    st = build_station(media / "tiny.onnx", tmp_path / "work", source=str(media / "fields" / "drift.mp4"), pace=0,
                       **OPTIONS)
    with serve_in_thread(st) as base:
        wait_until(lambda: not httpx.get(f"{base}/api/health").json()["running"])
        first = httpx.get(f"{base}/api/summary").json()
        assert (first["frames"], first["ended"], first["running"]) == (24, "end of source", False)
        assert httpx.get(f"{base}/api/health").json()["replayable"] is True
        r = httpx.post(f"{base}/api/source/restart")
        assert r.status_code == 200 and r.json()["running"] and r.json()["replays"] == 1
        httpx.post(f"{base}/api/pause", json={"on": True})
        r = httpx.post(f"{base}/api/source/restart")
        assert r.status_code == 409 and "still running" in r.json()["detail"]
        assert httpx.get(f"{base}/api/summary").json()["ended"] is None
        httpx.post(f"{base}/api/pause", json={"on": False})
        wait_until(lambda: not httpx.get(f"{base}/api/health").json()["running"])
        events = sse_events(base, since=0)
        second = httpx.get(f"{base}/api/summary").json()
    assert [e["frame"] for e in events] == list(range(48)) and second["frames"] == 48
    tracks = [{c["track"] for e in events[k:k + 24] for c in e["cells"]} for k in (0, 24)]
    assert tracks[0] and tracks[1] and min(tracks[1]) > max(tracks[0])  # new tracks, ids going on
    assert second["cells"] == len(tracks[0] | tracks[1]) == first["cells"] + len(tracks[1])
    assert second["ended"] == "end of source"


def test_a_token_by_default_and_no_token_on_loopback_only(media):
    from leuk_edge.station.server import is_loopback, resolve_token

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("station.lab")
    for host in ("127.0.0.1", "0.0.0.0"):  # a token on every bind, loopback included (as Jupyter)
        made = resolve_token(host, None)
        assert len(made) >= 24 and made != resolve_token(host, None) and made != resolve_token(host, "auto")
    assert resolve_token("127.0.0.1", None, no_token=True) is None
    with pytest.raises(ValueError, match="loopback"):
        resolve_token("0.0.0.0", None, no_token=True)
    res = CliRunner().invoke(app, ["serve", "-m", str(media / "tiny.onnx"), "--host", "0.0.0.0", "--port", "0",
                                   "--no-token"])
    assert res.exit_code == 2 and "--no-token" in res.output and "Traceback" not in res.output
    for args, message in ((["-s", str(media / "no-such.mp4")], "source not found"),
                          (["--data-root", str(media / "nope")], "--data-root"),
                          (["--token", "short"], "8 characters"),
                          (["--token", "long-enough", "--no-token"], "not both")):
        res = CliRunner().invoke(app, ["serve", "-m", str(media / "tiny.onnx"), "--port", "0", *args])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output


def test_upload_good_and_bad_files(finite, media):
    base, st = finite
    field = cv2.imread(str(media / "fields" / "frames" / "field_001.png"))
    cell = field[100:200, 200:300]
    good = cv2.imencode(".png", cell)[1].tobytes()
    files = [("files", ("cell.png", good, "image/png")),
             ("files", ("cell.jpg", cv2.imencode(".jpg", cell)[1].tobytes(), "image/jpeg")),
             ("files", ("broken.png", good[:60], "image/png")),
             ("files", ("notes.txt", b"hello, not an image", "text/plain")),
             ("files", ("../../huge.png", _png_declaring(20000, 20000), "image/png"))]
    r = httpx.post(f"{base}/api/classify", files=files, timeout=30)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert [row["path"] for row in rows] == ["cell.png", "cell.jpg", "broken.png", "notes.txt", "huge.png"]
    expected = float(Classifier(media / "tiny.onnx").predict_rgb([cv2.cvtColor(cell, cv2.COLOR_BGR2RGB)])[0])
    assert rows[0]["probability"] == pytest.approx(expected, abs=1e-5)
    assert rows[0]["label"] == label_for(expected, THRESHOLD) and rows[0]["error"] == ""
    assert rows[1]["label"] in ("all", "hem")
    assert [row["label"] for row in rows[2:]] == ["error"] * 3 and all(row["error"] for row in rows[2:])
    assert "20000x20000" in rows[4]["error"] and "before decoding" in rows[4]["error"]
    s = r.json()["summary"]
    assert (s["images"], s["errors"]) == (5, 3)
    # The classified uploads form a batch slide of their own, never merged into the live slide.
    batch = r.json()["slide"]
    names = [c["name"] for c in httpx.get(f"{base}/api/cells", params={"slide": batch}).json()]
    assert names == ["cell.png", "cell.jpg"]
    assert all(c["origin"] == "stream" for c in httpx.get(f"{base}/api/cells").json())


def test_upload_limits_are_413(finite):
    base, st = finite
    before = st.limits
    st.limits = Limits(max_files=2, max_file_bytes=2000, max_request_bytes=100_000)
    try:
        small = ("files", ("a.png", _png_declaring(10, 10), "image/png"))
        r = httpx.post(f"{base}/api/classify", files=[small] * 3)
        assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
        r = httpx.post(f"{base}/api/classify", files=[("files", ("big.png", b"\x89PNG" + b"0" * 5000, "image/png"))])
        assert r.status_code == 413 and "big.png" in r.json()["detail"]
        r = httpx.post(f"{base}/api/classify", files=[("files", ("x.png", b"0" * 200_000, "image/png"))])
        assert r.status_code == 413
        assert httpx.post(f"{base}/api/classify", files=[small]).status_code == 200
    finally:
        st.limits = before


def test_declared_size_reads_headers_without_decoding():
    img = np.zeros((37, 53, 3), np.uint8)
    for ext, fmt in ((".png", "png"), (".bmp", "bmp"), (".jpg", "jpeg"), (".tif", "tiff")):
        assert declared_size(cv2.imencode(ext, img)[1].tobytes()) == (53, 37, fmt)
    assert declared_size(_png_declaring(20000, 20000))[:2] == (20000, 20000)
    for bad in (b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF"):
        with pytest.raises(HeaderError):
            declared_size(bad)


def test_data_root_cannot_be_left(finite):
    base, _ = finite
    listing = httpx.get(f"{base}/api/folders").json()
    assert listing["folders"] == ["sub"]  # the symlink out of the root is not even listed
    sub = httpx.get(f"{base}/api/folders", params={"path": "sub"}).json()
    assert sub["images"] == 1  # a.png; leak.png points outside
    for path in ("..", "../outside", "sub/../..", "/etc", "link_out", "link_out/secret.png", "C:/Windows",
                 "sub\\..\\.."):
        assert httpx.get(f"{base}/api/folders", params={"path": path}).status_code == 403, path
        assert httpx.post(f"{base}/api/classify", data={"folder": path}).status_code == 403, path
    r = httpx.post(f"{base}/api/classify", data={"folder": "sub"}, timeout=30)
    assert r.status_code == 200
    assert [row["path"] for row in r.json()["rows"]] == ["sub/a.png"]
    assert httpx.get(f"{base}/api/folders", params={"path": "nope"}).status_code == 404


def test_review_sign_and_reviews_become_data(finite, media, tmp_path):
    base, st = finite
    cells = httpx.get(f"{base}/api/cells").json()
    assert len(cells) >= 4 and {c["pre_class"] for c in cells} <= {"all", "hem", "uncertain"}
    for c in cells:
        band = abs(c["probability"] - THRESHOLD) < 0.1
        assert c["pre_class"] == ("uncertain" if band else c["label"])
    crop = httpx.get(base + cells[0]["crop"])
    img = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
    assert crop.status_code == 200 and img.shape[0] == img.shape[1]  # a square C-NMC crop
    me = {"reviewer": "Ann Lee"}
    assert httpx.post(f"{base}/api/sign", json=me).status_code == 409
    assert httpx.post(f"{base}/api/cells/{cells[0]['track']}/review",
                      json={"label": "maybe", **me}).status_code == 422
    # Reviewer: debris for the first cell, the opposite of the model for the second, agrees with the rest. The
    # flipped cell is one of a class with two cells or more after the first, so both classes stay verified.
    rest = [c["label"] for c in cells[1:]]
    k = next(i for i, c in enumerate(cells[1:], 1) if rest.count(c["label"]) >= 2)
    cells = [cells[0], cells[k]] + [c for i, c in enumerate(cells) if i not in (0, k)]
    flip = {"all": "hem", "hem": "all"}
    chosen = ["not classed", flip[cells[1]["label"]]] + [c["label"] for c in cells[2:]]
    assert {"all", "hem"} <= set(chosen)
    for c, label in zip(cells[:-1], chosen):
        r = httpx.post(f"{base}/api/cells/{c['track']}/review", json={"label": label, **me})
        assert r.json()["review"] == label
    r = httpx.post(f"{base}/api/sign", json=me)
    assert r.status_code == 409 and "1 of" in r.json()["detail"]
    httpx.post(f"{base}/api/cells/{cells[-1]['track']}/review", json={"label": chosen[-1], **me})
    s = httpx.post(f"{base}/api/sign", json=me).json()
    n = len(cells)
    v_all = chosen.count("all")
    assert s["cells"] == n and s["not_classed"] == 1 and s["agreed"] == n - 2
    assert s["agreement"] == pytest.approx((n - 2) / n, abs=1e-4)
    assert (s["verified"]["all"], s["verified"]["cells"], s["signed_by"]) == (v_all, n - 1, "Ann Lee")
    assert s["pre_classified"]["all"] == sum(c["label"] == "all" for c in cells)
    lo, hi = _wilson(v_all, n - 1)
    assert s["verified"]["ci_low"] == pytest.approx(lo, abs=1e-4)
    assert s["verified"]["ci_high"] == pytest.approx(hi, abs=1e-4)
    assert json.loads(open(s["file"]).read())["slide"] == s["slide"]
    assert httpx.get(f"{base}/api/cells").json() == []  # the next slide begins empty
    # The reviews JSONL holds every review, with what the model said and which model said it.
    lines = [json.loads(x) for x in (st.folder / "reviews.jsonl").read_text().splitlines()]
    assert len(lines) == n
    sha = hashlib.sha256((media / "tiny.onnx").read_bytes()).hexdigest()
    assert all(rec["model_sha256"] == sha and rec["slide"] == s["slide"] and rec["reviewer"] == "Ann Lee"
               for rec in lines)
    assert {"crop", "probability", "pre_class", "review", "time"} <= set(lines[0])
    # ... and becomes a C-NMC-layout dataset that `data inspect` and the training loader read.
    out = tmp_path / "reviewed"
    res = CliRunner().invoke(app, ["data", "reviews", str(st.folder / "reviews.jsonl"), str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["data", "inspect", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    total = report["splits"]
    assert sum(x["all"] for x in total.values()) == v_all
    assert sum(x["hem"] for x in total.values()) == chosen.count("hem")
    from leuk_edge.train.data import load_dataset

    ds = load_dataset(out)
    assert {it.subject for it in ds.train} == {s["slide"]}
    assert CliRunner().invoke(app, ["data", "reviews", str(tmp_path / "none.jsonl"), str(out)]).exit_code == 2


def test_station_without_source_classifies_uploads(media, tmp_path):
    import shutil

    model = tmp_path / "cnn.onnx"
    shutil.copyfile(media / "tiny.onnx", model)
    (tmp_path / "cnn.parity.json").write_text(json.dumps({"passed": True, "max_abs_diff": 1e-6, "n": 20}))
    (tmp_path / "cnn.int8.parity.json").write_text(json.dumps({"passed": False, "max_abs_diff": 0.2, "n": 100}))
    (tmp_path / "cnn.card.md").write_text("# Model card\nIntended use: research.")
    st = build_station(model, media / "work-nosrc", device="cpu")
    with serve_in_thread(st) as base:
        assert httpx.get(f"{base}/api/health").json()["source"] is None
        assert httpx.get(f"{base}/api/stream.mjpg").status_code == 404
        assert httpx.get(f"{base}/api/summary").json()["cells"] == 0
        m = httpx.get(f"{base}/api/model").json()
        assert m["threshold"] == THRESHOLD and m["architecture"] == "cnn" and m["input"]["height"] == 32
        assert m["providers"] == ["CPUExecutionProvider"]
        assert m["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() and m["source_sha256"] == "0" * 64
        assert [(p["file"], p["report"]["passed"]) for p in m["parity"]] == [("cnn.parity.json", True),  # FP32 first
                                                                            ("cnn.int8.parity.json", False)]
        assert m["card"]["file"] == "cnn.card.md" and "Intended use" in m["card"]["text"]
        r = httpx.post(f"{base}/api/classify", files=[("files", ("x.png", _png_declaring(8, 8), "image/png"))])
        assert r.status_code == 200 and r.json()["rows"][0]["label"] == "error"  # no IDAT data: unreadable


HEAVY_AT_EXIT = ("import atexit, sys; atexit.register(lambda: print('heavy modules:', sorted(m for m in sys.modules "
                 "if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')), flush=True)); ")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])


def test_serve_cli_prints_url_and_stops_gracefully(media, sig, code, word):
    """Ctrl-C and SIGTERM stop the station with a viewer connected, print the summary, exit 130 / 143."""
    proc = subprocess.Popen([sys.executable, "-c", HEAVY_AT_EXIT + "from leuk_edge.cli import main; main()", "serve", "-m",
                             str(media / "tiny.onnx"), "-s", str(media / "fields" / "drift.mp4"), "--loop",
                             "--um-per-px", "0.3", "--port", "0", "--folder", str(media / "work-cli")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url, proc.stderr.read()  # a token by default
        base, token = url.split("/?token=")
        assert httpx.get(base + "/api/summary").status_code == 401
        wait_until(lambda: httpx.get(base + "/api/summary", params={"token": token}).json()["frames"] > 0)
        viewer = threading.Thread(target=mjpeg_frames, args=(base, 10**6, {"token": token}), daemon=True)
        viewer.start()  # an endless MJPEG response must not hold the shutdown open
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(20)
        stopped_in = time.monotonic() - t0
        err, out = proc.stderr.read(), proc.stdout.read()
    finally:
        proc.kill()
    assert rc == code, err
    assert "heavy modules: []" in out  # the station runs on the edge install: no TensorFlow, Keras, tf2onnx
    # The streams end at once: uvicorn did not have to cancel them after its graceful-shutdown timeout.
    assert "graceful shutdown exceeded" not in err and stopped_in < 10, (stopped_in, err)
    assert "stream summary" in err and word in err and DISCLAIMER in " ".join(err.split())


def test_explanation_overlays_when_the_model_has_cam(media, tmp_path):
    from station_helpers import make_cam_onnx

    model = make_cam_onnx(tmp_path / "cam.onnx", threshold=THRESHOLD)
    assert Classifier(model).has_cam
    st = build_station(model, tmp_path / "work", source=str(media / "fields" / "frames" / "field_000.png"),
                       pace=0, **OPTIONS)
    with serve_in_thread(st) as base:
        wait_until(lambda: not httpx.get(f"{base}/api/health").json()["running"])
        cells = httpx.get(f"{base}/api/cells").json()
        assert cells and all(c["cam"] for c in cells)
        crop = cv2.imdecode(np.frombuffer(httpx.get(base + cells[0]["crop"]).content, np.uint8), cv2.IMREAD_COLOR)
        cam = cv2.imdecode(np.frombuffer(httpx.get(base + cells[0]["cam"]).content, np.uint8), cv2.IMREAD_COLOR)
        assert cam.shape == crop.shape
        # This model's map is minus the brightness: evidence for hem on the cell, none on the black around it. The
        # overlay tints the cell blue (fixed scale) and nothing red (there is no evidence for all anywhere).
        blue = (cam[:, :, 0].astype(int) - cam[:, :, 2]) - (crop[:, :, 0].astype(int) - crop[:, :, 2])
        lit = crop.max(axis=2) > 60
        assert blue[lit].mean() > 5 and blue.min() >= -2
        assert httpx.get(f"{base}/api/model").json()["explanations"] is True
    # The model calls stay one per frame: the map comes from the same call as P(all).
    assert st.hub.clf.calls == st.hub.frames_with_cells == 1


def test_every_page_file_ships_in_the_wheel():
    """pyproject's package data covers every file of the page (a wheel without them serves a blank station)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import leuk_edge.station

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "leuk_edge.station"]
    static = Path(leuk_edge.station.__file__).parent / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.iterdir()]
    assert {"static/index.html", "static/station.js", "static/station.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)


def test_mjpeg_frames_arrive(looping):
    base, _ = looping
    frames = mjpeg_frames(base, 3, params={"token": TOKEN})
    assert len(frames) == 3
    for jpeg in frames:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (360, 640, 3)


def test_two_viewers_share_one_pipeline(looping):
    """The model runs once per frame with cells, not once per viewer: count the real model executions."""
    base, st = looping
    calls = []
    real = st.clf.infer
    pause = lambda on: httpx.post(f"{base}/api/pause", json={"on": on}, **_auth())  # noqa: E731
    # every onnxruntime run goes through infer (an empty batch runs nothing)
    st.clf.infer = lambda x, *a, **k: (calls.append(1) if len(x) else None, real(x, *a, **k))[1]
    try:
        pause(True)
        time.sleep(0.4)  # the frame in flight finishes; nothing runs while paused, so the counts are exact
        n0, c0 = st.hub.newest_event(), len(calls)
        got = [None, None]

        def view(i):
            got[i] = mjpeg_frames(base, 12, params={"token": TOKEN})
        viewers = [threading.Thread(target=view, args=(i,)) for i in range(2)]
        for v in viewers:
            v.start()
        pause(False)
        for v in viewers:
            v.join(30)
        pause(True)
        time.sleep(0.4)
        n1, c1 = st.hub.newest_event(), len(calls)
        events = [e for s, e in st.hub.events_after(n0, timeout=0) if s <= n1]  # the frames of the window
    finally:
        st.clf.infer = real
        pause(False)
    assert all(len(g) == 12 for g in got)
    with_cells = sum(1 for e in events if e["cells"])
    assert with_cells >= 12
    assert c1 - c0 == with_cells  # one model call per processed frame with cells, two viewers or not


def test_open_streams_are_capped_and_released(looping):
    """Each open MJPEG/SSE response holds a worker thread: past the cap the answer is 503, and a viewer that
    leaves gives its slot back."""
    base, st = looping
    wait_until(lambda: st.streams == 0, timeout=5)  # earlier tests' viewers have left
    before, st.max_streams = st.max_streams, 1
    try:
        with httpx.stream("GET", f"{base}/api/stream.mjpg", params={"token": TOKEN}, timeout=10) as r:
            chunks = r.iter_bytes()  # kept: a dropped iterator closes the response, the viewer would be gone
            next(chunks)  # streaming: the slot is taken
            assert st.streams == 1
            second = httpx.get(f"{base}/api/events", params={"token": TOKEN}, timeout=10)
            assert second.status_code == 503 and "at most 1" in second.json()["detail"]
        wait_until(lambda: st.streams == 0, timeout=3)  # the client left: released at once
        assert len(mjpeg_frames(base, 1, params={"token": TOKEN})) == 1
    finally:
        st.max_streams = before


def test_the_stream_cap_holds_for_a_burst(looping):
    """30 viewers at once against the cap of 24: exactly 24 are served, 6 get 503 (the slot is taken before the
    response starts; counted when the stream began, a burst all got 200)."""
    base, st = looping
    wait_until(lambda: st.streams == 0, timeout=5)
    assert st.max_streams == 24
    statuses, lock = [], threading.Lock()
    answered, leave = threading.Barrier(31), threading.Event()

    def viewer(path):
        try:
            with httpx.stream("GET", f"{base}/api/{path}", params={"token": TOKEN}, timeout=30) as r:
                with lock:
                    statuses.append(r.status_code)
                answered.wait(30)
                leave.wait(30)
        except threading.BrokenBarrierError:
            pass
    threads = [threading.Thread(target=viewer, args=("stream.mjpg" if i % 2 else "events",)) for i in range(30)]
    for t in threads:
        t.start()
    answered.wait(30)
    try:
        assert sorted(statuses) == [200] * 24 + [503] * 6 and st.streams == 24
    finally:
        leave.set()
        for t in threads:
            t.join(30)
    wait_until(lambda: st.streams == 0, timeout=10)


def test_token_rules(looping):
    base, _ = looping
    assert httpx.get(f"{base}/api/health").status_code == 401
    assert httpx.get(f"{base}/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/api/summary", params={"token": TOKEN[:-1]}).status_code == 401
    assert httpx.get(f"{base}/api/health", **_auth()).json()["status"] == "ok"
    assert httpx.get(f"{base}/api/health", params={"token": TOKEN}).status_code == 200
    page = httpx.get(f"{base}/")  # the page carries no data; the API behind it does
    assert page.status_code == 200 and DISCLAIMER in page.text


def test_recording_goes_to_the_station_folder(looping):
    base, st = looping
    r = httpx.post(f"{base}/api/record", json={"on": True, "path": "/tmp/elsewhere.mp4"}, **_auth()).json()
    assert r["recording"] and r["path"].startswith(str(st.folder / "recordings"))
    t0 = time.monotonic()
    time.sleep(1.5)
    r = httpx.post(f"{base}/api/record", json={"on": False}, **_auth()).json()
    wall = time.monotonic() - t0
    assert not r["recording"] and r["frames"] > 0 and r["codec"] in ("libx264", "h264") and r["dropped"] >= 0
    cap = cv2.VideoCapture(r["path"])
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == r["frames"]
    cap.release()
    import av

    with av.open(r["path"]) as c:  # wall-clock timestamps: it lasts as long as it was on (a frame gap either way)
        assert c.streams.video[0].codec_context.name == "h264"
        assert abs(c.duration / 1e6 - wall) <= 0.15 * wall, (c.duration, wall)
    pub = httpx.get(f"{base}/api/summary", **_auth()).json()["publish_latency_ms"]
    assert pub["frames"] > 0 and 0 < pub["p50"] <= pub["p95"]


def test_summary_agrees_with_events_across_replays(looping):
    """Replays bring the cells round again as new tracks; tracks that are over are folded into fixed totals (the
    station's memory stays bounded) and the totals still agree with the events, track by track."""
    base, st = looping
    wait_until(lambda: st.hub.source.replays >= 2, timeout=30)
    httpx.post(f"{base}/api/pause", json={"on": True}, **_auth())
    try:
        time.sleep(0.4)
        events = [e for _, e in st.hub.events_after(-1, timeout=0)]
        s = httpx.get(f"{base}/api/summary", **_auth()).json()
    finally:
        httpx.post(f"{base}/api/pause", json={"on": False}, **_auth())
    assert events[0]["frame"] == 0 and len(events) == s["frames"]  # the ring still holds the whole run
    tracks = {}
    for e in events:
        for c in e["cells"]:
            tracks.setdefault(c["track"], []).append(c["probability"])
    labels = [label_for(np.mean(ps), THRESHOLD) for ps in tracks.values()]
    assert (s["cells"], s["all"], s["hem"]) == (len(tracks), labels.count("all"), labels.count("hem"))
    first_pass = {c["track"] for e in events if e["frame"] < 24 for c in e["cells"]}
    assert len(tracks) >= 2 * len(first_pass)  # the replays' cells were counted again, as new tracks


def test_model_tab_lists_only_this_models_reports(tmp_path):
    from leuk_edge.edge import Classifier
    from leuk_edge.station.modelinfo import model_info

    model = make_tiny_onnx(tmp_path / "cnn.onnx", size=32)
    for name in ("cnn.parity.json", "cnn.int8.parity.json", "cnn_big.parity.json", "cnnx.fp16.parity.json"):
        (tmp_path / name).write_text(json.dumps({"passed": True}))
    info = model_info(Classifier(model, device="cpu"), "x")
    assert [p["file"] for p in info["parity"]] == ["cnn.parity.json", "cnn.int8.parity.json"]


def test_looping_replay_reports_each_unreadable_frame_once(tmp_path):
    from leuk_edge.edge.sources import open_source
    from leuk_edge.station.replay import ReplaySource

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.full((60, 80, 3), 200, np.uint8))
    (frames / "b.png").write_bytes(b"not an image")
    src = ReplaySource(lambda: open_source(str(frames)), loop=True)
    for _ in range(10):
        src.read()
    src.close()
    assert [name for name, _ in src.errors] == ["b.png"]


def test_crop_urls_carry_a_token_with_url_characters(media, tmp_path):
    """A user-chosen token may hold &, + or #: the crop URLs the API hands out must still authenticate."""
    token = "a&b+c#d=e f"
    st = build_station(media / "tiny.onnx", tmp_path / "work", device="cpu", token=token)
    good = cv2.imencode(".png", np.full((40, 40, 3), 120, np.uint8))[1].tobytes()
    with serve_in_thread(st) as base:
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/api/classify", files=[("files", ("a.png", good, "image/png"))], headers=auth)
        assert r.status_code == 200
        cells = httpx.get(f"{base}/api/cells", params={"token": token, "slide": r.json()["slide"]}).json()
        assert cells and all(httpx.get(base + c["crop"]).status_code == 200 for c in cells)
