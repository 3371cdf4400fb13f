"""The station is closed to other web pages (issue 17, item 4): the attacks of the issue against a real uvicorn.

A foreign `Host` (DNS rebinding) is refused on the page, the API and the crops; a POST from another origin is refused
with or without the token; a POST from the station's own page needs its anti-CSRF token; a script without `Origin`
is judged by its token alone. The same attacks from a real browser page are in test_station_browser.py.
"""

import re

import cv2
import httpx
import numpy as np
import pytest

from leuk_edge.station.app import build_station
from leuk_edge.station.guard import Access, host_name, own_origin
from station_helpers import serve_in_thread
from tiny_models import make_tiny_onnx

REVIEWER = "Guard Test"
TOKEN = "guard-test-token-1234"
CELL = cv2.imencode(".png", np.full((40, 40, 3), 120, np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("guard") / "tiny.onnx", size=32, threshold=0.5)


@pytest.fixture
def station(model, tmp_path):
    """A token station without a source, holding one uploaded cell (reviewed: signing would succeed)."""
    st = build_station(model, tmp_path / "work", device="cpu", token=TOKEN, allowed_hosts=("station.lab",))
    with serve_in_thread(st) as base:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = httpx.post(f"{base}/api/classify", files=[("files", ("a.png", CELL, "image/png"))], headers=auth)
        assert r.status_code == 200
        assert httpx.post(f"{base}/api/slides/{r.json()['slide']}/open", headers=auth).status_code == 200
        cell = httpx.get(f"{base}/api/cells", headers=auth).json()[0]
        assert httpx.post(f"{base}/api/cells/{cell['track']}/review", json={"label": "hem", "reviewer": REVIEWER},
                          headers=auth).status_code == 200
        yield base, st, cell


def _csrf(base: str, host: str | None = None) -> str:
    page = httpx.get(base + "/", headers={"Host": host} if host else None)
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)


def test_a_foreign_host_gets_nothing(station):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends `Host: evil.example`."""
    base, st, cell = station
    port = base.rsplit(":", 1)[1]
    for path in ("/", "/api/cells", "/api/summary", cell["crop"].split("?")[0], "/api/health"):
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example"):
            r = httpx.get(base + path, params={"token": TOKEN}, headers={"Host": host})
            assert r.status_code == 400 and "host" in r.json()["detail"], (path, host, r.status_code)
    assert st.access.refused["host"] == 20
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"station.lab:{port}"):
        r = httpx.get(base + "/api/cells", params={"token": TOKEN}, headers={"Host": host})
        assert r.status_code == 200 and r.json()[0]["track"] == cell["track"], host
    assert httpx.get(base + cell["crop"], params={"token": TOKEN}).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_post_from_another_origin_is_refused_with_or_without_the_token(station):
    base, st, cell = station
    signed = st.folder / "signed"
    own = {"Origin": base, "X-CSRF-Token": _csrf(base)}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1", base.replace("http:", "ftp:")):
        for params in ({"token": TOKEN}, {}):
            # The body-less `text/plain` POST a page can send without a preflight.
            r = httpx.post(f"{base}/api/sign", params=params, content=b"{}",
                           headers={"Content-Type": "text/plain", "Origin": origin,
                                    "X-CSRF-Token": own["X-CSRF-Token"]})
            assert r.status_code == 403 and "cross-origin" in r.json()["detail"], (origin, params, r.text)
            r = httpx.post(f"{base}/api/classify", params=params, files=[("files", ("evil.png", CELL, "image/png"))],
                           headers={"Origin": origin})
            assert r.status_code == 403, (origin, r.status_code)
    assert st.access.refused["origin"] == 16
    assert not signed.exists()
    assert [c["name"] for c in httpx.get(f"{base}/api/cells", params={"token": TOKEN}).json()] == ["a.png"]
    # The station's own page: its origin and its anti-CSRF token; without that token a POST is refused.
    r = httpx.post(f"{base}/api/sign", params={"token": TOKEN}, headers={"Origin": base})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = httpx.post(f"{base}/api/sign", params={"token": TOKEN}, headers={"Origin": base, "X-CSRF-Token": "forged"})
    assert r.status_code == 403
    # ... and the right one, but not the access token: 401.
    assert httpx.post(f"{base}/api/sign", headers=own).status_code == 401
    assert not signed.exists()
    r = httpx.post(f"{base}/api/sign", params={"token": TOKEN}, headers=own, json={"reviewer": REVIEWER})
    assert r.status_code == 200 and r.json()["cells"] == 1 and len(list(signed.glob("*.json"))) == 2  # + .fhir.json


def test_a_script_without_origin_is_judged_by_its_token(station):
    base, st, _ = station
    assert httpx.post(f"{base}/api/pause", json={"on": True}).status_code == 401
    assert httpx.post(f"{base}/api/sign", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    r = httpx.post(f"{base}/api/sign", headers={"Authorization": f"Bearer {TOKEN}"},  # no Origin, no CSRF token
                   json={"reviewer": REVIEWER})
    assert r.status_code == 200 and r.json()["verified"]["hem"] == 1
    assert httpx.get(f"{base}/api/health", params={"token": TOKEN}).json()["refused"] == {"token": 2}


def test_no_token_station_on_loopback_still_refuses_other_origins(model, tmp_path):
    st = build_station(model, tmp_path / "work", device="cpu")  # `serve --no-token`
    with serve_in_thread(st) as base:
        upload = [("files", ("evil.png", CELL, "image/png"))]
        assert httpx.post(f"{base}/api/classify", files=upload, headers={"Origin": "http://evil.example"}
                          ).status_code == 403
        cells_anywhere = lambda: sum(s["cells"] for s in httpx.get(f"{base}/api/slides").json())  # noqa: E731
        assert cells_anywhere() == 0
        assert httpx.get(f"{base}/api/cells", headers={"Host": "evil.example"}).status_code == 400
        assert httpx.post(f"{base}/api/classify", files=upload).status_code == 200  # curl on the station itself
        r = httpx.post(f"{base}/api/classify", files=upload, headers={"Origin": base, "X-CSRF-Token": _csrf(base)})
        assert r.status_code == 200 and cells_anywhere() == 2


def test_the_hosts_a_bind_serves():
    lab = Access.for_bind("192.168.1.20", "t" * 10, ("station.lab",))
    assert [lab.host_served(h) for h in ("192.168.1.20:8000", "station.lab", "127.0.0.1", "[::1]:80", "localhost",
                                         "127.0.0.5:1")] == [True] * 6
    assert [lab.host_served(h) for h in ("192.168.1.21", "evil.example", "station.lab.evil.example", "",
                                         "10.0.0.1")] == [False] * 5
    anywhere = Access.for_bind("0.0.0.0")
    assert anywhere.host_served("10.1.2.3:8000") and anywhere.host_served("[fe80::1]:8000")  # numeric: not rebindable
    assert not anywhere.host_served("evil.example:8000")
    assert (host_name("[::1]:8000"), host_name("Station.Lab.:80"), host_name("::1")) == ("::1", "station.lab", "::1")
    assert own_origin("http://127.0.0.1:8000", "127.0.0.1:8000") and own_origin("https://station.lab", "station.lab")
    assert not own_origin("http://127.0.0.1:8001", "127.0.0.1:8000") and not own_origin("null", "127.0.0.1:8000")
