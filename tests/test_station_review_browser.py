"""The review tab in Chromium: an upload batch reviewed as its own slide, the `other` gallery that must be reviewed
before signing, the reviewer's name asked once, signing confirmed, a signed slide read-only and amended."""

import cv2
import httpx
import numpy as np
import pytest
from station_helpers import serve_in_thread, wait_until
from tiny_models import make_tiny_onnx

from leuk_edge.station.app import build_station

TOKEN = "review-browser-token"


@pytest.mark.browser
def test_batch_review_other_gallery_sign_and_amend_in_chromium(tmp_path, chromium):
    from playwright import sync_api

    model = make_tiny_onnx(tmp_path / "tiny.onnx", size=32, threshold=0.5, ood_threshold=3.0)
    files = []
    for name, bgr in (("dark.png", (150, 0, 90)), ("pale.png", (40, 0, 20)), ("green.png", (40, 200, 40))):
        img = np.zeros((48, 48, 3), np.uint8) if name != "green.png" else np.full((48, 48, 3), bgr, np.uint8)
        cv2.circle(img, (24, 24), 16, bgr, -1)
        cv2.imwrite(str(tmp_path / name), img)
        files.append(str(tmp_path / name))
    st = build_station(model, tmp_path / "work", device="cpu", token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    dialogs = []

    def answer(d):
        dialogs.append((d.type, d.message))
        d.accept("Ann Lee") if d.type == "prompt" else d.accept()

    with serve_in_thread(st) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("dialog", answer)
            page.goto(f"{base}/?token={TOKEN}")
            page.click("nav button[data-tab=classify]")
            page.set_input_files("#files", files)
            page.wait_for_selector("#review-batch", timeout=15000)
            assert "a slide of their own" in page.inner_text("#batch-note")
            page.click("#review-batch")
            page.wait_for_selector("#gallery-other .card", timeout=5000)
            batch = next(s for s in httpx.get(f"{base}/api/slides", headers=auth).json() if s["kind"] == "upload")
            assert batch["current"] and page.input_value("#slide-select") == batch["id"]
            assert "batch" in page.inner_text("#slide-status")
            assert page.is_hidden("#amend") and page.is_visible("#sign-btn")  # an open slide: no amendment panel
            other = int(page.get_attribute("#gallery-other .card", "data-track"))
            # Review the two cells in scope by keyboard, then try to sign: refused, naming the other cell.
            for card in page.locator("#gallery-all .card, #gallery-uncertain .card, #gallery-hem .card").all():
                card.click()
                page.keyboard.press("a")
            wait_until(lambda: batch_entry(base, auth)["reviewed"] == 2, timeout=10)
            page.click("#sign-btn")
            page.wait_for_selector("#signed:not([hidden])")
            wait_until(lambda: "Cannot sign" in page.inner_text("#signed"), timeout=5)
            assert f"#{other}" in page.inner_text("#signed")
            page.click(f'#gallery-other .card[data-track="{other}"]')
            page.keyboard.press("o")  # confirmed out of scope
            wait_until(lambda: batch_entry(base, auth)["reviewed"] == 3, timeout=10)
            page.click("#sign-btn")
            wait_until(lambda: "Signed" in page.inner_text("#signed"), timeout=10)
            assert "by Ann Lee" in page.inner_text("#signed")
            assert [t for t, _ in dialogs] == ["prompt", "confirm", "confirm"]  # the name asked once
            assert "cannot be changed" in dialogs[-1][1]
            entry = batch_entry(base, auth)
            assert (entry["state"], entry["signed_by"]) == ("signed", "Ann Lee")
            cells = httpx.get(f"{base}/api/cells", params={"slide": batch["id"]}, headers=auth).json()
            assert {c["reviewer"] for c in cells} == {"Ann Lee"}
            assert {c["track"]: c["review"] for c in cells}[other] == "other"
            # The signed batch, viewed again: read-only; a correction is an amendment.
            page.select_option("#slide-select", batch["id"])
            page.wait_for_selector("#amend:not([hidden])", timeout=5000)
            assert page.is_hidden("#sign-btn")
            page.click(f'#gallery-other .card[data-track="{other}"]')
            page.keyboard.press("h")  # a review key on a signed slide changes nothing
            page.select_option("#amend-label", "not classed")
            page.click("#amend-add")
            page.fill("#amend-reason", "debris after all")
            page.click("#amend-sign")
            wait_until(lambda: batch_entry(base, auth)["state"] == "amended", timeout=10)
            assert "Amendment 2 of version 1" in page.inner_text("#signed")
            cells = httpx.get(f"{base}/api/cells", params={"slide": batch["id"]}, headers=auth).json()
            assert {c["track"]: c["review"] for c in cells}[other] == "not classed"
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        finally:
            browser.close()


def batch_entry(base, auth):
    return next(s for s in httpx.get(f"{base}/api/slides", headers=auth).json() if s["kind"] == "upload")
