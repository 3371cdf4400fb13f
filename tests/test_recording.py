"""The stream recorder (edge/recording.py): browser-playable codec, wall-clock duration, drops counted, and the
publish latency in the stream summary."""
import random
import time

import av
import numpy as np
import pytest

from leuk_edge.edge import recording
from leuk_edge.edge.recording import VideoRecorder


def _probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        head = s.codec_context.name, s.codec_context.pix_fmt, c.duration / 1e6
        size = (s.width, s.height)
        return (*head, sum(1 for _ in c.decode(video=0)), size)  # decoded: WebM stores no frame count


@pytest.mark.parametrize("suffix,codec", [(".mp4", "h264"), (".webm", "vp9")])
def test_duration_follows_the_wall_clock_at_irregular_rates(tmp_path, suffix, codec):
    rng = random.Random(0)
    rec = VideoRecorder(tmp_path / f"r{suffix}", fps=30)  # 30 claimed; ~20 fps written, irregularly
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        rec.write(np.full((121, 161, 3), rng.randint(0, 255), np.uint8))  # odd sides: cropped to even
        time.sleep(rng.uniform(0.005, 0.09))
    wall = time.monotonic() - t0
    rec.close()
    name, pix, duration, frames, size = _probe(rec.path)
    assert name == codec and pix == "yuv420p" and size == (160, 120)
    assert abs(duration - wall) <= 0.15 * wall, (duration, wall)
    assert frames == rec.frames and rec.dropped == 0


def test_frames_clock_for_synthetic_video(tmp_path):
    rec = VideoRecorder(tmp_path / "s.mp4", fps=10, clock="frames", queue_frames=4)
    for i in range(200):  # written in a blink, far faster than encoded, meant to last 20 s: none dropped
        rec.write(np.full((360, 640, 3), i, np.uint8))
    rec.close()
    _, _, duration, frames, _ = _probe(rec.path)
    assert rec.dropped == 0 and frames == rec.frames == 200 and abs(duration - 20.0) < 0.2


def test_a_slow_encoder_drops_and_counts_and_never_blocks_the_writer(tmp_path, monkeypatch):
    slow = recording._Encoder.encode

    def encode(self, bgr, pts):
        time.sleep(0.05)
        slow(self, bgr, pts)

    monkeypatch.setattr(recording._Encoder, "encode", encode)
    rec = VideoRecorder(tmp_path / "d.mp4", queue_frames=4)
    t0 = time.monotonic()
    for _ in range(40):
        rec.write(np.zeros((32, 32, 3), np.uint8))
    assert time.monotonic() - t0 < 0.5  # 40 x 50 ms of encoding would take 2 s: the writer did not wait
    rec.close()  # flushes what was queued
    assert rec.dropped > 0 and rec.frames + rec.dropped == 40
    assert _probe(rec.path)[3] == rec.frames


def test_rejects_other_suffixes(tmp_path):
    with pytest.raises(ValueError):
        VideoRecorder(tmp_path / "x.avi")
