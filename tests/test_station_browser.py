"""The station page in a real browser: Playwright driving the system's Chromium (headless)."""

import time

import cv2
import httpx
import pytest

from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.stream import StreamOptions
from leuk_edge.station.app import build_station
from leuk_edge.synth.fields import FieldConfig, write_fields
from station_helpers import serve_in_thread, wait_in_page
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
            wait_in_page(page, "document.getElementById('live').naturalWidth > 0", timeout=15)
            assert page.evaluate("document.getElementById('live').naturalWidth") == 640
            wait_in_page(page, "Number(document.getElementById('cells-count').textContent) > 0", timeout=15)
            # Freeze the pipeline so that the page's next poll and the API read the same totals.
            httpx.post(f"{base}/api/pause", json={"on": True}, headers={"Authorization": f"Bearer {TOKEN}"})
            page.wait_for_timeout(600)
            summary = httpx.get(f"{base}/api/summary", params={"token": TOKEN}).json()
            wait_in_page(page, f"document.getElementById('cells-count').textContent === '{summary['cells']}'",
                         timeout=5)
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
            # Review by keyboard, fast: `n` labels the selected cell, `h` (pressed at once) the NEXT one. Each key
            # goes to its own cell even before the first answer is back. (`c`/Enter confirm a pre-class only on
            # all/hem cells: test_review_keys_do_not_rubber_stamp_... .)
            page.on("dialog", lambda d: d.accept("Ann Lee"))  # the page asks for the reviewer's name once
            page.click("nav button[data-tab=review]")
            page.wait_for_selector(".card.sel", timeout=5000)
            first = int(page.get_attribute(".card.sel", "data-track"))
            page.keyboard.press("n")
            page.keyboard.press("h")

            def reviewed():
                cells = httpx.get(f"{base}/api/cells", params={"token": TOKEN}).json()
                return {c["track"]: c for c in cells if c["review"]}
            deadline = time.monotonic() + 5
            while len(reviewed()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            done = reviewed()
            assert len(done) == 2 and first in done, done
            assert (done[first]["review"], done.pop(first)["reviewer"]) == ("not classed", "Ann Lee")
            assert next(iter(done.values()))["review"] == "hem"
            assert next(iter(done.values()))["reviewer"] == "Ann Lee"
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
            batch = httpx.post(f"{base}/api/classify", files=[("files", ("ok.png", cell, "image/png"))],
                               headers=auth).json()["slide"]
            httpx.post(f"{base}/api/slides/{batch}/open", headers=auth)
            track = httpx.get(f"{base}/api/cells", headers=auth).json()[0]["track"]
            httpx.post(f"{base}/api/cells/{track}/review", json={"label": "hem", "reviewer": "ann"}, headers=auth)
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
                    wait_in_page(page, "document.title === 'sent'", timeout=15)
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
            assert sum(s["cells"] for s in httpx.get(f"{base}/api/slides", headers=auth).json()) == 1  # no batch
            assert not (st.folder / "signed").exists()
        assert with_token.access.refused["host"] >= 3  # and the favicon requests


@pytest.mark.browser
def test_review_keys_do_not_rubber_stamp_and_csv_cells_are_not_formulas(tmp_path, chromium):
    """Issue 17 item 6 and the CSV part of item 7, in the page: Enter/`c` do nothing on an uncertain cell until a
    label is chosen; Ctrl/Alt combinations are ignored; Enter on the focused Sign button signs (or says why not)
    instead of relabelling a cell; the threshold is shown rounded; CSV cells that a spreadsheet would run as a
    formula (`@SUM(1+1).png`, `=1+2.png`, `-3+4.png`, `+5.png`) are prefixed with ' (OWASP)."""
    import csv

    import numpy as np
    from playwright import sync_api

    # P(all) = sigmoid(-4R - 8G + 2B + 1.5): black -> 0.82 (all), white -> 0.0002 (hem), grey 38 -> 0.50 (uncertain)
    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32, threshold=0.5000000023556707)
    files = {"grey.png": 38, "black.png": 0, "white.png": 255, "@SUM(1+1).png": 255, "=1+2.png": 255,
             "-3+4.png": 255, "+5.png": 255}
    for name, value in files.items():
        cv2.imwrite(str(tmp_path / name), np.full((40, 40, 3), value, np.uint8))
    st = build_station(model, tmp_path / "work", device="cpu", token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def cell(name):
        return next(c for c in httpx.get(f"{base}/api/cells", headers=auth).json() if c["name"] == name)

    with serve_in_thread(st) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/?token={TOKEN}")
            page.click("nav button[data-tab=classify]")
            page.set_input_files("#files", [str(tmp_path / n) for n in files])
            page.wait_for_selector(f"#classify-results tbody tr:nth-child({len(files)})", timeout=15000)
            with page.expect_download() as download:
                page.click("#csv-btn")
            with open(download.value.path(), newline="") as fh:
                table = list(csv.reader(fh))
            assert table[0] == ["path", "label", "probability", "ood", "error"]
            assert [r[0] for r in table[1:]] == ["grey.png", "black.png", "white.png", "'@SUM(1+1).png",
                                                 "'=1+2.png", "'-3+4.png", "'+5.png"]
            assert all(r[1] in ("all", "hem") and float(r[2]) >= 0 for r in table[1:])  # numbers stay numbers

            page.on("dialog", lambda d: d.accept("Ann Lee"))  # the reviewer's name (asked once), sign's confirmation
            page.click("#review-batch")  # the uploads are a batch slide of their own: review it
            page.wait_for_selector(".card.sel", timeout=5000)
            assert page.inner_text("#band") == "P(all) within 0.1 of 0.5"
            grey, black, white = cell("grey.png"), cell("black.png"), cell("white.png")
            assert (grey["pre_class"], black["pre_class"], white["pre_class"]) == ("uncertain", "all", "hem")
            page.click(f".card[data-track='{grey['track']}']")
            for key in ("Enter", "c", "Control+h", "Alt+a", "Meta+n", "Control+Enter"):
                page.keyboard.press(key)
            page.wait_for_timeout(400)
            assert cell("grey.png")["review"] is None  # nothing rubber-stamped, no modifier combination taken
            assert "choose a label" in page.inner_text("#review-progress")
            page.keyboard.press("h")  # the reviewer's own choice
            page.click(f".card[data-track='{black['track']}']")
            page.keyboard.press("Enter")  # a certain pre-class may be confirmed with one key
            wait_in_page(page, "document.querySelectorAll('.card.done').length === 2", timeout=5)
            page.wait_for_timeout(300)
            assert (cell("grey.png")["review"], cell("black.png")["review"]) == ("hem", "all")
            # A focused button keeps its own Enter: the Sign button answers, the selected cell stays unreviewed.
            page.click(f".card[data-track='{white['track']}']")
            page.focus("#sign-btn")
            page.keyboard.press("Enter")
            page.wait_for_selector("#signed:not([hidden])", timeout=5000)
            assert "Cannot sign" in page.inner_text("#signed") and "not reviewed" in page.inner_text("#signed")
            assert cell("white.png")["review"] is None
        finally:
            browser.close()


@pytest.mark.browser
def test_an_ended_replay_says_so_and_plays_again(tmp_path, chromium):
    """A video that has ended: the page says so plainly and offers to play it again; the restart brings frames
    back. The blast fraction and its interval stay on one line."""
    from playwright import sync_api

    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32, threshold=0.66)
    write_fields(tmp_path / "fields", frames=1, video_frames=24, fps=12.0,
                 cfg=FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=4), seed=8)
    st = build_station(model, tmp_path / "work", source=str(tmp_path / "fields" / "drift.mp4"), pace=24,
                       token=TOKEN, device="cpu", options=StreamOptions(detector=DetectorConfig(um_per_px=0.3)))
    with serve_in_thread(st) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/?token={TOKEN}")
            page.wait_for_selector("#source-ended", state="visible", timeout=20000)
            assert "has ended (end of source)" in page.inner_text("#ended-text")
            assert page.is_visible("#restart-btn") and page.inner_text("#frames-count") == "24"
            one_line = page.evaluate("""() => { const el = document.getElementById('blast-fraction');
                return [el.textContent, el.getBoundingClientRect().height,
                        parseFloat(getComputedStyle(el).lineHeight)]; }""")
            assert "95" in one_line[0] and "CI" in one_line[0] and one_line[1] < 1.5 * one_line[2], one_line
            page.click("#restart-btn")
            page.wait_for_selector("#source-ended", state="hidden", timeout=5000)
            wait_in_page(page, "Number(document.getElementById('frames-count').textContent) > 24", timeout=20)
            wait_in_page(page, "document.getElementById('live').naturalWidth === 640", timeout=10)
            page.wait_for_selector("#source-ended", state="visible", timeout=20000)
            assert page.inner_text("#frames-count") == "48"
        finally:
            browser.close()
