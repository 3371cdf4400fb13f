"""Stream mode end to end: video file, stills/folders, live sources (fake captures and an ffmpeg server on
127.0.0.1), and a source that disappears mid-run."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge import DISCLAIMER
from leuk_edge.cli import app
from support.boxes import match_boxes
from leuk_edge.edge.model import Inference
from leuk_edge.edge.sources import LiveSource, SourceError, open_source
from leuk_edge.synth.fields import FieldConfig, write_fields

SCALE = ["--um-per-px", "0.3"]
CLI = [sys.executable, "-c", "from leuk_edge.cli import main; main()"]
FFMPEG = shutil.which("ffmpeg")  # a test dependency (.ci/run installs it): missing, the network tests fail


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    """Small fields (640x360 at 0.3 um/px): 2 stills and a 24-frame drifting video at 12 fps."""
    out = tmp_path_factory.mktemp("fields")
    cfg = FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=4)
    write_fields(out, frames=2, video_frames=24, fps=12.0, cfg=cfg, seed=8)
    return out


def _all_output(res) -> str:
    try:
        return res.output + (res.stderr or "")
    except ValueError:  # older click: stderr not separately captured
        return res.output


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stream_video_file_end_to_end(field_dir, tiny_onnx, tmp_path):
    jsonl, rec, summ = tmp_path / "ev.jsonl", tmp_path / "ann.mp4", tmp_path / "summary.json"
    res = CliRunner().invoke(app, ["stream", "--source", str(field_dir / "drift.mp4"), "--model", str(tiny_onnx),
                                   "--jsonl", str(jsonl), "--record", str(rec), "--summary", str(summ), *SCALE])
    out = _all_output(res)
    assert res.exit_code == 0, out
    assert DISCLAIMER in " ".join(out.split())
    events = _events(jsonl)
    truth = json.loads((field_dir / "drift.json").read_text())["frames"]
    assert [e["frame"] for e in events] == list(range(24))  # a file is read frame by frame, nothing dropped
    tp = fp = fn = 0
    for e, t in zip(events, truth):
        assert list(e)[:4] == ["frame", "time", "cells", "latency_ms"]  # the contract's fields first ...
        assert e["um_per_px"] == 0.3 and e["scale_from"] == "given"      # ... then the frame's scale
        assert e["time"] == pytest.approx(e["frame"] / 12.0, abs=1e-3) and e["latency_ms"] > 0
        for c in e["cells"]:
            assert list(c) == ["box", "label", "probability", "track", "track_label"]  # no scope gate: no ood
            assert all(isinstance(v, int) for v in c["box"]) and c["label"] in ("all", "hem")
            assert 0.0 <= c["probability"] <= 1.0
        a, b, m, _ = match_boxes([c["box"] for c in e["cells"]], [c["box"] for c in t["cells"]],
                                 ignore=[c["cut"] for c in t["cells"]])
        tp, fp, fn = tp + a, fp + b, fn + m
    assert tp >= 24 * 2 and tp / (tp + fp) >= 0.95 and tp / (tp + fn) >= 0.95, (tp, fp, fn)
    cap = cv2.VideoCapture(str(rec))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (360, 640, 3)
    s = json.loads(summ.read_text())
    assert s["ended"] == "end of source" and s["frames"] == 24 and s["dropped_frames"] == 0
    assert set(s["stage_ms"]) == {"capture", "detect", "classify", "draw"}
    # The tracker counts each cell once while the slide drifts: far fewer cells than sightings.
    assert 0 < s["cells"]["total"] < sum(s["observations"].values()) / 3
    assert s["disclaimer"] == DISCLAIMER


def test_still_image_folder_stride_and_max_frames(field_dir, tiny_onnx, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(field_dir / "frames", frames)
    (frames / "zz_broken.png").write_bytes(b"not an image")
    jsonl = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(app, ["stream", "-s", str(frames), "-m", str(tiny_onnx), "--jsonl", str(jsonl), *SCALE])
    assert res.exit_code == 0, _all_output(res)
    truth = json.loads((field_dir / "ground_truth.json").read_text())["frames"]
    events = _events(jsonl)
    assert len(events) == 2  # the unreadable file is reported in the summary, not fatal
    assert "zz_broken.png" in _all_output(res)
    for e, t in zip(events, truth):
        tp, fp, fn, _ = match_boxes([c["box"] for c in e["cells"]], [c["box"] for c in t["cells"]])
        assert fp == 0 and fn == 0
    res = CliRunner().invoke(app, ["stream", "-s", str(frames / "field_001.png"), "-m", str(tiny_onnx),
                                   "--jsonl", str(jsonl), *SCALE])
    assert res.exit_code == 0 and len(_events(jsonl)) == 1
    res = CliRunner().invoke(app, ["stream", "-s", str(field_dir / "drift.mp4"), "-m", str(tiny_onnx),
                                   "--jsonl", str(jsonl), "--stride", "3", "--max-frames", "4", *SCALE])
    assert res.exit_code == 0
    assert [e["frame"] for e in _events(jsonl)] == [0, 3, 6, 9]


@pytest.mark.parametrize("args, message", [
    (["-s", "/no/such/video.mp4"], "source not found"),
    (["-s", "0", "--backend", "directshow"], "unknown --backend"),
    (["-s", "x.mp4", "--um-per-px", "0.2", "--magnification", "100"], "not both"),
])
def test_usage_errors_exit_2_with_one_line(tiny_onnx, args, message):
    res = CliRunner().invoke(app, ["stream", "-m", str(tiny_onnx), *args])
    out = _all_output(res)
    assert res.exit_code == 2, out
    assert message in out and "Traceback" not in out


def test_a_file_that_is_not_a_video(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError):
        open_source(str(bad))


class FakeCapture:
    """A cv2.VideoCapture stand-in: `n` frames (or endless), `delay` s per read, then read() fails."""

    def __init__(self, n=None, delay=0.0, start=0):
        self.n, self.delay, self.i = n, delay, start
        self.released = False

    def read(self):
        time.sleep(self.delay)
        if self.released or (self.n is not None and self.i >= self.n):
            return False, None
        img = np.full((48, 64, 3), self.i % 256, np.uint8)
        self.i += 1
        return True, img

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


def test_live_source_keeps_only_the_newest_frame():
    src = LiveSource("fake", lambda: FakeCapture(n=None, delay=0.002), reconnect_s=1.0).start()
    got = []
    try:
        for frame in src:
            got.append(frame.index)
            time.sleep(0.03)  # a slow consumer
            if len(got) == 10:
                break
    finally:
        src.close()
    assert got == sorted(got) and got[-1] - got[0] > 20  # skips ahead to the present ...
    assert src.dropped > 0 and not src.lost               # ... and counts what it skipped


def test_live_source_that_disappears_ends_in_bounded_time():
    calls = []

    def opener():
        calls.append(time.monotonic())
        return FakeCapture(n=5) if len(calls) == 1 else None  # 5 frames, then gone for good

    src = LiveSource("fake", opener, reconnect_s=1.0, backoff=0.1, max_backoff=0.4).start()
    t0 = time.monotonic()
    frames = [f.index for f in src]
    elapsed = time.monotonic() - t0
    src.close()
    assert frames[-1] == 4 and src.lost and src.reconnects == 0
    assert elapsed < 3.0
    gaps = np.diff(calls[1:])
    assert len(gaps) >= 2 and gaps[1] > 1.5 * gaps[0]  # exponential back-off between attempts


def test_live_source_reconnects_and_goes_on():
    caps = [FakeCapture(n=3, delay=0.02), None, FakeCapture(n=6, start=3, delay=0.02)]

    def opener():
        return caps.pop(0) if caps else None

    src = LiveSource("fake", opener, reconnect_s=0.5, backoff=0.05).start()
    seen = []
    for f in src:
        seen.append(int(f.image[0, 0, 0]))
    src.close()
    assert src.reconnects == 1 and src.lost
    assert seen[0] == 0 and seen[-1] == 5  # frames from before and after the reconnection


def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(video, protocol="udp"):
    """ffmpeg re-streams the video forever as MPEG-TS on 127.0.0.1, over UDP or as an HTTP server (MPEG-2 with a
    short GOP, so a client joining mid-stream gets a picture within half a second). -> (process, URL)."""
    assert FFMPEG, "ffmpeg is not installed (apt-get install ffmpeg): the network tests serve the video with it"
    if protocol == "udp":
        url = f"udp://127.0.0.1:{_free_port()}"
        target, extra = url + "?pkt_size=1316", []
    else:
        url = f"http://127.0.0.1:{_free_port(socket.SOCK_STREAM)}/live.ts"
        target, extra = url, ["-listen", "1"]
    proc = subprocess.Popen([FFMPEG, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                             "-c:v", "mpeg2video", "-q:v", "4", "-g", "6", "-f", "mpegts", *extra, target],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, url


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("protocol", ["udp", "http"])
def test_network_stream_served_by_ffmpeg(field_dir, tiny_onnx, tmp_path, protocol):
    server, url = _serve(field_dir / "drift.mp4", protocol)
    jsonl, rec, summ = tmp_path / "ev.jsonl", tmp_path / "net.mp4", tmp_path / "s.json"
    try:
        proc = subprocess.run([*CLI, "stream", "-s", url, "-m", str(tiny_onnx), *SCALE,
                               "--jsonl", str(jsonl), "--record", str(rec), "--summary", str(summ),
                               "--max-frames", "12", "--timeout-s", "3", "--reconnect-s", "5"],
                              capture_output=True, text=True, timeout=90)
    finally:
        _stop(server)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = _events(jsonl)
    assert len(events) == 12
    assert sum(len(e["cells"]) for e in events) >= 12  # the fields have ~4 white cells in view
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    s = json.loads(summ.read_text())
    assert s["source_kind"] == "stream" and s["ended"] == "max frames"
    cap = cv2.VideoCapture(str(rec))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    assert "Traceback" not in proc.stderr


def test_network_source_that_disappears_mid_run_ends_with_summary(field_dir, tiny_onnx, tmp_path):
    server, url = _serve(field_dir / "drift.mp4", "udp")
    jsonl, summ = tmp_path / "ev.jsonl", tmp_path / "s.json"
    proc = subprocess.Popen([*CLI, "stream", "-s", url, "-m", str(tiny_onnx), *SCALE,
                             "--jsonl", str(jsonl), "--summary", str(summ), "--timeout-s", "2",
                             "--reconnect-s", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is really streaming
            if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the stream never delivered 5 frames")
        _stop(server)  # the source disappears
        t_lost = time.monotonic()
        out, err = proc.communicate(timeout=40)  # bounded: read timeout + reconnect budget + an open attempt
        ended_after = time.monotonic() - t_lost
    finally:
        _stop(server)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert ended_after < 20
    s = json.loads(summ.read_text())
    assert s["ended"] == "source lost" and s["source_lost"] and s["frames"] >= 5
    assert "stream summary" in err and "Traceback" not in err
    assert DISCLAIMER.split(";")[0] in " ".join(err.split())


def test_live_source_waits_for_a_server_that_is_still_starting():
    caps = [None, None, FakeCapture(n=3)]
    src = LiveSource("fake", lambda: caps.pop(0), reconnect_s=2.0, backoff=0.05).start()
    frames = [f.index for f in src]
    src.close()
    assert frames[-1] == 2 and not caps
    with pytest.raises(SourceError, match="cannot open"):  # nobody ever answers: a bounded wait, then one error
        LiveSource("fake", lambda: None, reconnect_s=0.2, backoff=0.05).start()


def test_stride_skips_frames_without_decoding_them(tmp_path):
    from leuk_edge.edge.stream import StreamOptions, iter_results

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(7):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((40, 60, 3), 200 + i, np.uint8))
    (frames / "f1.png").write_bytes(b"not an image")  # passed over by the stride: never decoded, never reported

    class NoCells:
        threshold = 0.5

        def infer_rgb(self, crops):
            return Inference(np.zeros(len(crops), np.float32))

        def labels(self, out):
            return ["hem"] * len(out)

    src = open_source(str(frames))
    got = [(r.frame.index, int(r.frame.image[0, 0, 0])) for r in iter_results(src, NoCells(), StreamOptions(stride=3))]
    assert got == [(0, 200), (3, 203), (6, 206)]
    assert src.errors == []
    with pytest.raises(ValueError, match="--stride"):  # the options are checked when the iterator is made
        iter_results(src, NoCells(), StreamOptions(stride=0))


def test_annotation_boxes_coloured_by_class_and_hud():
    from leuk_edge.edge.draw import COLORS, annotate
    from leuk_edge.edge.sources import Frame
    from leuk_edge.edge.stream import Cell, FrameResult

    img = np.full((360, 640, 3), 235, np.uint8)
    res = FrameResult(Frame(7, 0.5, img, 0.0),
                      [Cell((100, 150, 60, 60), "all", 0.91), Cell((400, 200, 50, 50), "hem", 0.12)])
    bgr = annotate(res, counts={"all": 3, "hem": 1}, fps=20.0)
    assert bgr.shape == img.shape and (img == 235).all()  # the frame itself is untouched
    assert tuple(bgr[180, 100]) == COLORS["all"] and tuple(bgr[225, 400]) == COLORS["hem"]  # left edges
    assert bgr[5:25, 5:200].mean() < 120  # the HUD panel with counts, blast fraction and fps


def _default_sigint():
    """In the child: SIGINT back to its default. A child inherits "ignore" for SIGINT from a test run started as a
    background job (`pytest &`, CI runners), and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _long_stream(field_dir, tiny_onnx, tmp_path, *extra):
    """`leuk-edge stream` on a long folder source (~25 s), started and streaming (>= 1 event written)."""
    frames = tmp_path / "many"
    frames.mkdir()
    for i in range(3000):
        (frames / f"f{i:04d}.png").symlink_to(field_dir / "frames" / "field_000.png")
    jsonl = tmp_path / "ev.jsonl"
    proc = subprocess.Popen([*CLI, "stream", "-s", str(frames), "-m", str(tiny_onnx), *SCALE,
                             "--summary", str(tmp_path / "s.json"), "--jsonl", str(jsonl), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while not jsonl.exists() or len(jsonl.read_text().splitlines()) < 3:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"the stream never started: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    return proc


def _finish(proc, sig):
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_ctrl_c_stops_cleanly_with_a_summary(field_dir, tiny_onnx, tmp_path):
    """SIGINT mid-run: the summary is still written and the exit code is 130."""
    proc = _long_stream(field_dir, tiny_onnx, tmp_path)
    out, err = _finish(proc, signal.SIGINT)
    assert proc.returncode == 130, err[-2000:]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ended"] == "interrupted" and 1 <= s["frames"] < 600
    assert "Traceback" not in err


def test_sigterm_stops_like_ctrl_c_and_leaves_a_playable_recording(field_dir, tiny_onnx, tmp_path):
    """docker stop / systemd / Kubernetes send SIGTERM: the frame in hand is finished, the MP4 closed (playable:
    it reopens with every frame), the JSONL closed, the summary written, exit 143."""
    rec = tmp_path / "rec.mp4"
    proc = _long_stream(field_dir, tiny_onnx, tmp_path, "--record", str(rec))
    out, err = _finish(proc, signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "stream summary" in err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ended"] == "terminated" and 3 <= s["frames"] < 600
    events = _events(tmp_path / "ev.jsonl")  # every line whole
    cap = cv2.VideoCapture(str(rec))
    assert cap.isOpened()
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == len(events) == s["frames"]  # events, recording and summary agree


class CropSpy:
    """A classifier stand-in with a 256x256 input that keeps the crops `stream` hands it."""
    threshold = 0.5
    size = (256, 256)

    def __init__(self):
        self.crops = []

    def infer_rgb(self, crops):
        self.crops += list(crops)
        return Inference(np.zeros(len(crops), np.float32))

    def labels(self, out):
        return ["hem"] * len(out)

    def scope_note(self):
        return None


def _span_at_input(rgb, side=256):
    """Width in model-input pixels of the lit (non-black) cell: sqrt of its area after the model's resize."""
    from leuk_edge.edge.preprocess import preprocess

    x = preprocess(rgb, side, side, "area")
    return float(np.sqrt((x.max(axis=2) > 20 / 255).sum()))


@pytest.mark.parametrize("um, size, given", [(0.15, (1280, 720), False), (0.1, (1280, 720), False),
                                             (0.08, (1280, 720), True), (0.3, (640, 360), True)])
def test_stream_crops_are_at_the_training_scale(um, size, given):
    """After the resize to the model input, a blast (16 um) and a normal lymphocyte (12 um) cut by `stream` from a
    field span as many pixels (+-10 %) as the same cells do in C-NMC-layout tiles (synth.cells, 450 px = 30 um),
    at any camera scale: measured on the red cells (no scale given: the 0.1 um/px field is not the assumed
    192 um wide one) or given."""
    from leuk_edge.edge.detect import CNMC_UM_PER_PX, DetectorConfig
    from leuk_edge.edge.sources import Frame
    from leuk_edge.edge.stream import StreamOptions, classify_frame
    from leuk_edge.synth.cells import render_cnmc_image
    from leuk_edge.synth.fields import render_field

    rng = np.random.default_rng(5)
    diam = {"all": 16.0, "hem": 12.0}
    tiles = {lab: np.median([_span_at_input(render_cnmc_image(rng, lab, radius=d / 2 / CNMC_UM_PER_PX))
                             for _ in range(8)]) for lab, d in diam.items()}
    cfg = FieldConfig(width=size[0], height=size[1], um_per_px=um, leukocytes=5,
                      blast_um=(diam["all"],) * 2, lymphocyte_um=(diam["hem"],) * 2)
    options = StreamOptions(detector=DetectorConfig(um_per_px=um if given else None))
    spans = {"all": [], "hem": []}
    for i in range(2):
        rgb, cells, _ = render_field(rng, cfg)
        spy = CropSpy()
        result = classify_frame(Frame(i, 0.0, rgb), spy, options)
        assert result.scale.source == ("given" if given else "red cells")
        _, _, _, pairs = match_boxes([c.box for c in result.cells], [c["box"] for c in cells])
        for p, t, _ in pairs:
            spans[cells[t]["label"]].append(_span_at_input(spy.crops[p]))
    assert sum(map(len, spans.values())) >= 6, spans
    for lab, got in spans.items():
        for span in got:
            assert span == pytest.approx(tiles[lab], rel=0.10), (lab, span, tiles)


def test_undersampling_camera_is_warned_once(tmp_path, field_dir):
    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.stream import StreamOptions, run_stream, undersampling_note

    assert undersampling_note(0.3, CropSpy()) and "up-sampled" in undersampling_note(0.3, CropSpy())
    assert undersampling_note(0.1, CropSpy()) is None  # 300 px per 30 um crop >= 256: down-sampled, as in training
    heard = []
    s = run_stream(open_source(str(field_dir / "drift.mp4")), CropSpy(),
                   StreamOptions(detector=DetectorConfig(um_per_px=0.3), max_frames=5), on_warning=heard.append)
    assert len(heard) == 1 and "under-samples" in heard[0] and s["warnings"] == heard
    s = run_stream(open_source(str(field_dir / "drift.mp4")), CropSpy(),
                   StreamOptions(detector=DetectorConfig(um_per_px=0.1), max_frames=2), on_warning=heard.append)
    assert len(heard) == 1 and s["warnings"] == []


def test_labels_follow_the_model_threshold(field_dir, tmp_path):
    """A model exported with threshold 0.3: a cell is "all" from P(all) 0.3 up, in the events, the per-sighting
    counts and the tracked totals (not from 0.5)."""
    import onnx
    from onnx import numpy_helper
    from tiny_models import make_tiny_onnx

    model = make_tiny_onnx(tmp_path / "t03.onnx", size=32, threshold=0.3)
    m = onnx.load(str(model))  # a lower bias puts the cells' P(all) between 0.3 and 0.5 (0.6 with the default)
    bias = next(t for t in m.graph.initializer if t.name == "b")
    bias.CopyFrom(numpy_helper.from_array(np.array([0.6], np.float32), "b"))
    onnx.save(m, str(model))
    jsonl, summ = tmp_path / "ev.jsonl", tmp_path / "s.json"
    res = CliRunner().invoke(app, ["stream", "-s", str(field_dir / "drift.mp4"), "-m", str(model), *SCALE,
                                   "--jsonl", str(jsonl), "--summary", str(summ), "--max-frames", "8"])
    assert res.exit_code == 0, _all_output(res)
    cells = [c for e in _events(jsonl) for c in e["cells"]]
    assert cells
    for c in cells:
        assert c["label"] == ("all" if c["probability"] >= 0.3 else "hem"), c
    between = [c for c in cells if 0.3 <= c["probability"] < 0.5]
    assert between, sorted(c["probability"] for c in cells)  # cells that a 0.5 rule would have called "hem"
    s = json.loads(summ.read_text())
    assert s["observations"]["all"] == sum(c["probability"] >= 0.3 for c in cells)


def test_scale_measured_without_options_shows_in_events_and_summary(field_dir, tiny_onnx, tmp_path):
    """No --um-per-px: a portrait (rotated) still at 0.3 um/px is measured on its red cells, not read as a field
    192 um wide (which would be 0.53 um/px for its 360 px width), and the estimate is in the events and summary."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rgb = cv2.imread(str(field_dir / "frames" / "field_000.png"))
    cv2.imwrite(str(frames / "portrait.png"), np.ascontiguousarray(np.rot90(rgb)))
    jsonl, summ = tmp_path / "ev.jsonl", tmp_path / "s.json"
    res = CliRunner().invoke(app, ["stream", "-s", str(frames), "-m", str(tiny_onnx), "--jsonl", str(jsonl),
                                   "--summary", str(summ)])
    assert res.exit_code == 0, _all_output(res)
    (e,) = _events(jsonl)
    assert e["scale_from"] == "red cells" and e["um_per_px"] == pytest.approx(0.3, rel=0.12)
    truth = json.loads((field_dir / "ground_truth.json").read_text())["frames"][0]["cells"]
    assert len(e["cells"]) == len(truth)
    s = json.loads(summ.read_text())
    assert s["um_per_px"] == e["um_per_px"] and s["scale_from"] == {"red cells": 1}
    assert "um/px" in _all_output(res)  # the summary table shows it


def test_scale_keeper_measures_video_frames_now_and_then_and_keeps_the_measurement(monkeypatch):
    import leuk_edge.edge.stream as stream_mod
    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.stream import ScaleKeeper
    from leuk_edge.synth.fields import render_field

    rng = np.random.default_rng(3)
    field, _, _ = render_field(rng, FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=2))
    blank = np.full_like(field, 235)  # no red cells: nothing to measure
    calls = []
    keeper = ScaleKeeper(DetectorConfig(), every=4)
    real = stream_mod.frame_scale

    def counting(rgb, cfg):
        calls.append(rgb is field)
        return real(rgb, cfg)

    monkeypatch.setattr(stream_mod, "frame_scale", counting)
    got = [keeper(img) for img in [field, field, field, field, blank, blank, field]]
    monkeypatch.undo()
    assert calls == [True, False]  # frames 0 and 4 measured, the others reuse it
    assert all(s.source == "red cells" and s.um_per_px == pytest.approx(0.3, rel=0.12) for s in got)
    # Stills are measured one by one: a blank one falls back to the assumed field of view.
    stills = ScaleKeeper(DetectorConfig(), per_frame=True)
    assert stills(field).source == "red cells" and stills(blank).source == "assumed"


def test_stream_summary_has_publish_latency_and_recording(field_dir, tmp_path):
    from leuk_edge.edge.detect import DetectorConfig
    from leuk_edge.edge.recording import VideoRecorder
    from leuk_edge.edge.stream import StreamOptions, run_stream

    rec = VideoRecorder(tmp_path / "run.mp4")
    s = run_stream(open_source(str(field_dir / "drift.mp4")), CropSpy(),
                   StreamOptions(detector=DetectorConfig(um_per_px=0.1), max_frames=8),
                   jsonl=tmp_path / "e.jsonl", recorder=rec)
    pub, lat = s["publish_latency_ms"], s["latency_ms"]
    assert pub["frames"] == s["frames"] == 8 and pub["p50"] <= pub["p95"]
    assert pub["p50"] >= lat["p50"] and pub["p95"] >= lat["p95"]
    assert s["recording"]["frames"] + s["recording"]["dropped"] == s["frames"]
    assert s["recording"]["codec"] in ("libx264", "h264")
    events = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(events) == 8 and all(e["publish_latency_ms"] >= e["latency_ms"] for e in events)
