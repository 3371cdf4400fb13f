"""Recordings play in a real browser: Chromium (Debian's, via Playwright) loads the MP4/WebM in a <video> and
reads a finite duration close to the wall time it was recorded over."""
import time

import numpy as np
import pytest

from leuk_edge.edge.recording import VideoRecorder


@pytest.mark.browser
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_recording_plays_in_chromium(tmp_path, chromium, suffix):
    from playwright import sync_api

    rec = VideoRecorder(tmp_path / f"rec{suffix}", fps=25)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.0:
        rec.write(np.full((240, 320, 3), (i * 7) % 255, np.uint8))
        time.sleep(0.03 if i % 3 else 0.08)  # irregular, ~20 fps
        i += 1
    wall = time.monotonic() - t0
    rec.close()
    (tmp_path / "page.html").write_text(f'<video id="v" src="rec{suffix}" preload="metadata" muted></video>')
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((tmp_path / "page.html").as_uri())
            page.wait_for_function("document.getElementById('v').readyState >= 1 || document.getElementById('v').error",
                                   timeout=15000)
            err = page.evaluate("document.getElementById('v').error && document.getElementById('v').error.code")
            assert err is None, f"Chromium cannot play the {suffix} recording (MediaError {err})"
            duration = page.evaluate("document.getElementById('v').duration")
            size = page.evaluate("[document.getElementById('v').videoWidth, document.getElementById('v').videoHeight]")
        finally:
            browser.close()
    assert size == [320, 240]
    assert np.isfinite(duration) and abs(duration - wall) <= 0.15 * wall, (duration, wall)
