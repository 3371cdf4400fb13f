"""The station page in a real browser: Playwright driving the system's Chromium (headless)."""

import time

import cv2
import httpx
import pytest

from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.stream import StreamOptions
from leuk_edge.station.app import build_station
from leuk_edge.synth.fields import FieldConfig, write_fields
from station_helpers import serve_in_thread
from tiny_models import make_tiny_onnx

TOKEN = "browser-test-token"


@pytest.mark.browser
def test_station_page_in_chromium(tmp_path, chromium):
    from playwright import sync_api

    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32, threshold=0.66)
    write_fields(tmp_path / "fields", frames=1, video_frames=24, fps=12.0,
                 cfg=FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=4), seed=8)
    good = tmp_path / "cell.png"
    cv2.imwrite(str(good), cv2.imread(str(tmp_path / "fields" / "frames" / "field_000.png"))[100:200, 200:300])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    st = build_station(model, tmp_path / "work", source=str(tmp_path / "fields" / "drift.mp4"), loop=True, pace=12,
                       token=TOKEN, device="cpu", options=StreamOptions(detector=DetectorConfig(um_per_px=0.3)))
    with serve_in_thread(st) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/?token={TOKEN}")
            assert "not a diagnostic device" in page.inner_text("header")
            page.wait_for_function("document.getElementById('live').naturalWidth > 0", timeout=15000)
            assert page.evaluate("document.getElementById('live').naturalWidth") == 640
            page.wait_for_function("Number(document.getElementById('cells-count').textContent) > 0", timeout=15000)
            # Freeze the pipeline so that the page's next poll and the API read the same totals.
            httpx.post(f"{base}/api/pause", json={"on": True}, headers={"Authorization": f"Bearer {TOKEN}"})
            page.wait_for_timeout(600)
            summary = httpx.get(f"{base}/api/summary", params={"token": TOKEN}).json()
            page.wait_for_function(f"document.getElementById('cells-count').textContent === '{summary['cells']}'",
                                   timeout=5000)
            assert summary["cells"] > 0
            assert page.inner_text("#all-count") == str(summary["all"])
            assert page.inner_text("#hem-count") == str(summary["hem"])
            assert page.inner_text("#fps") != ""
            page.screenshot(path=str(tmp_path / "station-live.png"))
            page.click("nav button[data-tab=classify]")
            page.set_input_files("#files", [str(good), str(bad)])
            page.wait_for_selector("#classify-results tbody tr:nth-child(2)", timeout=15000)
            rows = page.locator("#classify-results tbody tr").all_inner_texts()
            assert rows[0].startswith("cell.png") and ("all" in rows[0] or "hem" in rows[0])
            assert rows[1].startswith("broken.png") and "error" in rows[1]
            page.screenshot(path=str(tmp_path / "station-classify.png"))
            with page.expect_download() as download:
                page.click("#csv-btn")
            csv_lines = open(download.value.path()).read().splitlines()
            assert csv_lines[0] == "path,label,probability,ood,error"  # the classify table's CSV contract
            assert [line.split(",")[:2] for line in csv_lines[1:]] == [[r.split("\t")[0], r.split("\t")[1]]
                                                                       for r in rows]
            # Review by keyboard, fast: `c` confirms the selected cell's pre-class, `h` (pressed at once) makes the
            # NEXT cell hem. Each key goes to its own cell even before the first answer is back.
            page.click("nav button[data-tab=review]")
            page.wait_for_selector(".card.sel", timeout=5000)
            first = int(page.get_attribute(".card.sel", "data-track"))
            page.keyboard.press("c")
            page.keyboard.press("h")

            def reviewed():
                cells = httpx.get(f"{base}/api/cells", params={"token": TOKEN}).json()
                return {c["track"]: c for c in cells if c["review"]}
            deadline = time.monotonic() + 5
            while len(reviewed()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            done = reviewed()
            assert len(done) == 2 and first in done, done
            c = done.pop(first)
            assert c["review"] == (c["label"] if c["pre_class"] == "uncertain" else c["pre_class"])
            assert next(iter(done.values()))["review"] == "hem"
            page.screenshot(path=str(tmp_path / "station.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "station.png").stat().st_size > 10_000


ATTACK_PAGE = """<!doctype html><title>elsewhere</title><script>
(async () => {
  const png = Uint8Array.from(atob("%(png)s"), (c) => c.charCodeAt(0));
  for (const [classify, sign] of %(targets)s) {
    const fd = new FormData();
    fd.append("files", new Blob([png], {type: "image/png"}), "evil.png");
    // The simple requests any page may send without a preflight: a no-cors multipart upload, a text/plain sign.
    await fetch(classify, {method: "POST", mode: "no-cors", body: fd}).catch(() => null);
    await fetch(sign, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"})
      .catch(() => null);
  }
  document.title = "sent";
})();
</script>"""


@pytest.mark.browser
def test_another_origin_cannot_drive_the_station(tmp_path, chromium):
    """Issue 17's attacks from a real page on another origin (another port), against a token station (the attacker
    even knows the token) and a `--no-token` one; and DNS rebinding (a name resolved to 127.0.0.1)."""
    import base64
    import http.server
    import json
    import threading

    import numpy as np
    from playwright import sync_api

    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32, threshold=0.5)
    cell = cv2.imencode(".png", np.full((40, 40, 3), 120, np.uint8))[1].tobytes()
    with_token = build_station(model, tmp_path / "a", device="cpu", token=TOKEN)
    without = build_station(model, tmp_path / "b", device="cpu")
    with serve_in_thread(with_token) as a, serve_in_thread(without) as b:
        for base, auth in ((a, {"Authorization": f"Bearer {TOKEN}"}), (b, {})):  # one reviewed cell: signable
            httpx.post(f"{base}/api/classify", files=[("files", ("ok.png", cell, "image/png"))], headers=auth)
            track = httpx.get(f"{base}/api/cells", headers=auth).json()[0]["track"]
            httpx.post(f"{base}/api/cells/{track}/review", json={"label": "hem"}, headers=auth)
        targets = [[f"{a}/api/classify?token={TOKEN}", f"{a}/api/sign?token={TOKEN}"],
                   [f"{b}/api/classify", f"{b}/api/sign"]]
        html = ATTACK_PAGE % {"png": base64.b64encode(cell).decode(), "targets": json.dumps(targets)}

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        port_a = a.rsplit(":", 1)[1]
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True,
                                            args=["--no-sandbox", "--host-resolver-rules=MAP evil.example 127.0.0.1"])
                try:
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
                    page.wait_for_function("document.title === 'sent'", timeout=15000)
                    # DNS rebinding: evil.example now resolves to the station; the browser sends its own name.
                    for path in ("/", f"/api/summary?token={TOKEN}", f"/api/cells?token={TOKEN}"):
                        assert page.goto(f"http://evil.example:{port_a}{path}").status == 400, path
                finally:
                    browser.close()
        finally:
            other.shutdown()
        for st, base, auth in ((with_token, a, {"Authorization": f"Bearer {TOKEN}"}), (without, b, {})):
            assert st.access.refused["origin"] == 2, st.access.refused  # the upload and the sign, both refused
            assert [c["name"] for c in httpx.get(f"{base}/api/cells", headers=auth).json()] == ["ok.png"]
            assert not (st.folder / "signed").exists()
        assert with_token.access.refused["host"] >= 3  # and the favicon requests
