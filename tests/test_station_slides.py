"""Slides as a lab handles them, over a real uvicorn server: durable across restarts (and `kill -9`), batches kept
apart from the live slide, a reviewer on every review and signature, `other` cells reviewed before signing,
amendments, and the FHIR export."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import cv2
import httpx
import numpy as np
import pytest
from station_helpers import serve_in_thread, wait_until
from tiny_models import make_tiny_onnx

from leuk_edge.edge.detect import DetectorConfig
from leuk_edge.edge.stream import StreamOptions
from leuk_edge.station.app import build_station
from leuk_edge.station.users import Users, token_hash
from leuk_edge.synth.fields import FieldConfig, write_fields

THRESHOLD = 0.66
OOD_T = 3.0  # the tiny scope score is 10 x mean green: a purple cell on black ~0, a green image ~8
TOKEN = "slides-station-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPTIONS = dict(options=StreamOptions(detector=DetectorConfig(um_per_px=0.3)), device="cpu", token=TOKEN)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    make_tiny_onnx(root / "tiny.onnx", size=32, threshold=THRESHOLD, ood_threshold=OOD_T)
    write_fields(root / "fields", frames=1, video_frames=24, fps=12.0,
                 cfg=FieldConfig(width=640, height=360, um_per_px=0.3, leukocytes=4), seed=8)
    return root


def _png(bgr) -> bytes:
    return cv2.imencode(".png", bgr)[1].tobytes()


def _cell(shade: int) -> bytes:
    img = np.zeros((48, 48, 3), np.uint8)
    cv2.circle(img, (24, 24), 16, (shade, 0, shade // 2), -1)  # BGR: a purple cell on black, in scope
    return _png(img)


GREEN = _png(np.full((48, 48, 3), (40, 200, 40), np.uint8))  # far out of the tiny model's scope


def _upload(base, files, headers=AUTH):
    r = httpx.post(f"{base}/api/classify", files=[("files", (n, b, "image/png")) for n, b in files],
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _get(base, path, **kw):
    r = httpx.get(f"{base}{path}", headers=AUTH, timeout=30, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def _post(base, path, body=None, headers=AUTH):
    return httpx.post(f"{base}{path}", json=body if body is not None else {}, headers=headers, timeout=30)


def test_uploads_form_their_own_batch_and_slides_can_be_opened(media, tmp_path):
    st = build_station(media / "tiny.onnx", tmp_path / "work", **OPTIONS)
    with serve_in_thread(st) as base:
        (live,) = _get(base, "/api/slides")
        assert (live["state"], live["cells"], live["current"], live["kind"]) == ("open", 0, True, "live")
        res = _upload(base, [("a.png", _cell(200)), ("b.png", _cell(120)), ("bad.png", b"\x89PNG nope")])
        batch = res["slide"]
        assert batch and batch != live["id"]
        slides = {s["id"]: s for s in _get(base, "/api/slides")}
        assert (slides[batch]["kind"], slides[batch]["cells"], slides[batch]["current"]) == ("upload", 2, False)
        assert _get(base, "/api/cells") == []  # never merged into the live slide
        assert _upload(base, [("only-bad.png", b"nope")])["slide"] is None  # nothing classified: no batch
        assert _post(base, f"/api/slides/{batch}/open").json()["current"] is True
        cells = _get(base, "/api/cells")
        assert [c["name"] for c in cells] == ["a.png", "b.png"] and {c["origin"] for c in cells} == {"upload"}
        new = _post(base, "/api/slides").json()
        assert new["current"] and new["live"] and new["cells"] == 0 and new["id"] not in (live["id"], batch)
        assert [s["id"] for s in _get(base, "/api/slides")] == [live["id"], batch, new["id"]]
        assert _post(base, "/api/slides/no-such-slide/open").status_code == 404


def test_reviewer_is_required_and_recorded(media, tmp_path):
    st = build_station(media / "tiny.onnx", tmp_path / "work", **OPTIONS)
    with serve_in_thread(st) as base:
        batch = _upload(base, [("a.png", _cell(200)), ("b.png", _cell(90))])["slide"]
        a, b = [c["track"] for c in _get(base, "/api/cells", params={"slide": batch})]
        assert _post(base, f"/api/cells/{a}/review", {"label": "all"}).status_code == 422
        assert _post(base, f"/api/cells/{a}/review", {"label": "all", "reviewer": " "}).status_code == 422
        card = _post(base, f"/api/cells/{a}/review", {"label": "all", "reviewer": "Ann Lee"}).json()
        assert (card["review"], card["reviewer"]) == ("all", "Ann Lee")
        _post(base, f"/api/cells/{b}/review", {"label": "hem", "reviewer": "Bo Chen"})
        assert _post(base, "/api/sign", {"slide": batch}).status_code == 422
        s = _post(base, "/api/sign", {"slide": batch, "reviewer": "Ann Lee"}).json()
        assert s["signed_by"] == "Ann Lee" and s["slide"] == batch
        on_file = json.loads(open(s["file"]).read())
        assert on_file["signed_by"] == "Ann Lee"
        lines = [json.loads(x) for x in (tmp_path / "work" / "reviews.jsonl").read_text().splitlines()]
        assert [(x["track"], x["reviewer"]) for x in lines] == [(a, "Ann Lee"), (b, "Bo Chen")]
        # A signed slide is immutable: a review is 409, a correction an amendment.
        assert _post(base, f"/api/cells/{a}/review", {"label": "hem", "reviewer": "Bo Chen"}).status_code == 409
        entry = next(x for x in _get(base, "/api/slides") if x["id"] == batch)
        assert (entry["state"], entry["signed_by"], entry["reviewed"]) == ("signed", "Ann Lee", 2)


def test_users_file_names_the_reviewer_from_the_token(media, tmp_path):
    alice, bob = "alice-token-0123456789", "bob-token-9876543210"
    users = tmp_path / "users.json"
    users.write_text(json.dumps({alice: "Alice Ng", f"sha256:{token_hash(bob)}": "Bob Roy"}))
    st = build_station(media / "tiny.onnx", tmp_path / "work", device="cpu", users=Users.load(users))
    as_alice, as_bob = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    with serve_in_thread(st) as base:
        batch = _upload(base, [("a.png", _cell(200))], headers=as_alice)["slide"]
        (cid,) = [c["track"] for c in httpx.get(f"{base}/api/cells", params={"slide": batch},
                                                 headers=as_alice).json()]
        assert httpx.get(f"{base}/api/cells", headers={"Authorization": "Bearer nobody-at-all"}).status_code == 401
        r = _post(base, f"/api/cells/{cid}/review", {"label": "all", "reviewer": "Bob Roy"}, headers=as_alice)
        assert r.status_code == 403  # a name other than the token's
        r = _post(base, f"/api/cells/{cid}/review", {"label": "all"}, headers=as_alice)
        assert r.status_code == 200 and r.json()["reviewer"] == "Alice Ng"
        s = _post(base, "/api/sign", {"slide": batch}, headers=as_bob).json()
        assert s["signed_by"] == "Bob Roy"
        assert httpx.get(f"{base}/api/whoami", headers=as_bob).json() == {"reviewer": "Bob Roy", "users": True}
    raw = b"".join(p.read_bytes() for p in (tmp_path / "work").rglob("*") if p.is_file())
    assert alice.encode() not in raw and bob.encode() not in raw  # only names (and hashes) are kept


def test_other_cells_have_their_gallery_and_must_be_reviewed_before_signing(media, tmp_path):
    st = build_station(media / "tiny.onnx", tmp_path / "work", **OPTIONS)
    with serve_in_thread(st) as base:
        res = _upload(base, [("cell.png", _cell(200)), ("green.png", GREEN), ("cell2.png", _cell(60))])
        assert [r["label"] for r in res["rows"]][1] == "other"
        cells = {c["name"]: c for c in _get(base, "/api/cells", params={"slide": res["slide"]})}
        other = cells["green.png"]
        assert (other["label"], other["pre_class"]) == ("other", "other") and other["ood"] > OOD_T
        for name in ("cell.png", "cell2.png"):
            c = cells[name]
            _post(base, f"/api/cells/{c['track']}/review", {"label": c["label"], "reviewer": "ann"})
        r = _post(base, "/api/sign", {"slide": res["slide"], "reviewer": "ann"})
        assert r.status_code == 409 and f"#{other['track']}" in r.json()["detail"] and "other" in r.json()["detail"]
        assert _post(base, f"/api/cells/{other['track']}/review", {"label": "other", "reviewer": "ann"}).json()[
            "review"] == "other"
        s = _post(base, "/api/sign", {"slide": res["slide"], "reviewer": "ann"}).json()
        model_all = sum(c["label"] == "all" for c in cells.values())
        assert s["verified"]["other"] == 1 and s["verified"]["cells"] == 3
        assert s["verified"]["all"] + s["verified"]["hem"] == 2 and s["verified"]["all"] == model_all
        assert s["verified"]["blast_fraction"] == pytest.approx(model_all / 2, abs=1e-4)  # other is not in it


def test_amendment_and_fhir_over_the_api(media, tmp_path):
    from fhir.resources.R4B.bundle import Bundle

    st = build_station(media / "tiny.onnx", tmp_path / "work", **OPTIONS)
    with serve_in_thread(st) as base:
        batch = _upload(base, [("a.png", _cell(200)), ("b.png", _cell(90))])["slide"]
        assert httpx.get(f"{base}/api/slides/{batch}/fhir", headers=AUTH).status_code == 404  # not signed yet
        cells = _get(base, "/api/cells", params={"slide": batch})
        for c in cells:
            _post(base, f"/api/cells/{c['track']}/review", {"label": "all", "reviewer": "ann"})
        assert _post(base, f"/api/slides/{batch}/amend",
                     {"reviewer": "bob", "changes": [{"cell": cells[0]["track"], "label": "hem"}]}).status_code == 409
        v1 = _post(base, "/api/sign", {"slide": batch, "reviewer": "ann"}).json()
        f1 = _get(base, f"/api/slides/{batch}/fhir")
        Bundle.model_validate(f1)
        assert f1 == json.loads((tmp_path / "work" / "signed" / f"{batch}.fhir.json").read_text())
        bad = _post(base, f"/api/slides/{batch}/amend", {"reviewer": "bob", "changes": []})
        assert bad.status_code == 422
        v2 = _post(base, f"/api/slides/{batch}/amend", {"reviewer": "bob", "reason": "b is a hem cell",
                                                          "changes": [{"cell": cells[1]["track"], "label": "hem"}]})
        assert v2.status_code == 200, v2.text
        v2 = v2.json()
        assert (v2["version"], v2["amends"]["version"], v2["signed_by"]) == (2, 1, "bob")
        f2 = _get(base, f"/api/slides/{batch}/fhir")
        Bundle.model_validate(f2)
        report = next(e["resource"] for e in f2["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
        assert report["status"] == "amended" and report["performer"][0]["display"] == "bob"
        assert _get(base, f"/api/slides/{batch}/fhir", params={"version": 1}) == f1
        detail = _get(base, f"/api/slides/{batch}")
        assert detail["state"] == "amended" and [v["version"] for v in detail["versions"]] == [1, 2]
        assert v1["file"] != v2["file"] and os.path.isfile(v1["file"]) and os.path.isfile(v2["file"])


def test_restart_restores_the_live_slide_with_its_cells_and_reviews(media, tmp_path):
    work = tmp_path / "work"
    src = dict(source=str(media / "fields" / "drift.mp4"), pace=0, **OPTIONS)
    st = build_station(media / "tiny.onnx", work, **src)
    with serve_in_thread(st) as base:
        wait_until(lambda: not _get(base, "/api/health")["running"])
        before = _get(base, "/api/cells")
        assert len(before) >= 4
        for c in before[:3]:
            _post(base, f"/api/cells/{c['track']}/review", {"label": "not classed", "reviewer": "ann"})
        before = _get(base, "/api/cells")
        slide = _get(base, "/api/health")["slide"]
    st = build_station(media / "tiny.onnx", work, **OPTIONS)  # started again on the same folder, no source now
    with serve_in_thread(st) as base:
        assert _get(base, "/api/health")["slide"] == slide
        after = _get(base, "/api/cells")
        assert after == before  # same ids, crops, P(all), reviews
        assert httpx.get(base + after[0]["crop"], headers=AUTH).status_code == 200
        for c in after[3:]:
            _post(base, f"/api/cells/{c['track']}/review", {"label": "hem", "reviewer": "bob"})
        s = _post(base, "/api/sign", {"reviewer": "bob"}).json()
        assert s["slide"] == slide and s["not_classed"] == 3 and s["cells"] == len(before)


def test_acknowledged_reviews_survive_kill_9(media, tmp_path):
    """A burst of 200 reviews from 8 clients; `kill -9` mid-burst; every review answered 200 is in the database
    after a restart, and each cell shows its last acknowledged review (or one sent but not yet answered)."""
    folder = tmp_path / "work"

    def start():
        proc = subprocess.Popen([sys.executable, "-c", "from leuk_edge.cli import main; main()", "serve", "-m",
                                 str(media / "tiny.onnx"), "--port", "0", "--folder", str(folder),
                                 "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        return proc, url.split("?")[0].rstrip("/")

    proc, base = start()
    try:
        batch = _upload(base, [(f"c{i}.png", _cell(60 + 4 * i)) for i in range(40)])["slide"]
        ids = [c["track"] for c in _get(base, "/api/cells", params={"slide": batch})]
        acked, sent, stop = [], {}, threading.Event()
        labels = ("all", "hem", "not classed", "other")

        def client(k):
            mine = ids[k::8]
            with httpx.Client(headers=AUTH, timeout=10) as http:
                for i in range(25):
                    cid, label, who = mine[i % len(mine)], labels[(i + k) % 4], f"tech-{k}-{i}"
                    sent[k] = (cid, label, who)
                    try:
                        r = http.post(f"{base}/api/cells/{cid}/review", json={"label": label, "reviewer": who})
                    except httpx.HTTPError:
                        return
                    if r.status_code != 200 or stop.is_set():
                        return
                    acked.append((k, cid, label, who))
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 60, timeout=60, every=0.001)
        os.kill(proc.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(20)
        proc.wait(10)
    finally:
        proc.kill()
    got = list(acked)
    assert 60 <= len(got) < 200, len(got)  # the kill came mid-burst
    proc, base = start()
    try:
        cells = {c["track"]: c for c in _get(base, "/api/cells", params={"slide": batch})}
        assert sorted(cells) == sorted(ids)  # the batch and its ids are back
        db = sqlite3.connect(f"file:{folder / 'station.db'}?mode=ro", uri=True)
        stored = set(db.execute("SELECT cell, label, reviewer FROM reviews").fetchall())
        db.close()
        missing = [a for a in got if (a[1], a[2], a[3]) not in stored]
        assert not missing, missing
        last = {}
        for k, cid, label, who in got:
            last[cid] = (label, who)
        for cid, (label, who) in last.items():
            now = (cells[cid]["review"], cells[cid]["reviewer"])
            in_flight = {sent[k][1:] for k in sent if sent[k][0] == cid}
            assert now == (label, who) or now in in_flight, (cid, now, (label, who))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_serve_users_file_on_the_command_line(media, tmp_path):
    from typer.testing import CliRunner

    from leuk_edge.cli import app

    run = CliRunner().invoke
    base_args = ["serve", "-m", str(media / "tiny.onnx"), "--port", "0", "--folder", str(tmp_path / "work")]
    bad = tmp_path / "bad.json"
    for text, message in (("{not json", "not a JSON object"), ('{"short": "Ann"}', "shorter than 8"),
                          ('{"long-enough-token": ""}', "reviewer")):
        bad.write_text(text)
        res = run(app, base_args + ["--users", str(bad)])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"carol-token-123456": "Carol Diaz"}))
    res = run(app, base_args + ["--users", str(users), "--no-token"])
    assert res.exit_code == 2 and "--no-token" in res.output
    proc = subprocess.Popen([sys.executable, "-c", "from leuk_edge.cli import main; main()", *base_args,
                             "--users", str(users)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "token=" not in url  # people bring their own tokens
        base = url.rstrip("/")
        assert httpx.get(f"{base}/api/slides").status_code == 401
        carol = {"Authorization": "Bearer carol-token-123456"}
        assert httpx.get(f"{base}/api/whoami", headers=carol).json() == {"reviewer": "Carol Diaz", "users": True}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_station_connections_send_without_nagle_delay():
    """Each answer is written in two parts (headers, body): with Nagle's algorithm on, the body waited for the
    client's delayed ACK, ~40 ms per request on a keep-alive connection (a review took 45 ms instead of 3). The
    listening socket sets TCP_NODELAY, which the connections it accepts inherit."""
    import socket

    from leuk_edge.station.server import bind

    listener = bind("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    try:
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in (conn, client, listener):
            s.close()


def test_bad_input_writes_no_station_folder(media, tmp_path, monkeypatch):
    """A serve that refuses its input (a missing source, a folder already used by a running station) leaves no
    database behind and holds nothing open: the store is opened last."""
    from typer.testing import CliRunner

    from leuk_edge.cli import app

    monkeypatch.chdir(tmp_path)  # serve's default --folder is ./station
    res = CliRunner().invoke(app, ["serve", "-m", str(media / "tiny.onnx"), "--port", "0", "-s",
                                   str(media / "no-such.mp4")])
    assert res.exit_code == 2 and "source not found" in res.output
    assert not (tmp_path / "station").exists()
    first = build_station(media / "tiny.onnx", tmp_path / "busy", device="cpu")
    try:
        with pytest.raises(ValueError, match="another station"):
            build_station(media / "tiny.onnx", tmp_path / "busy", source=str(media / "fields" / "drift.mp4"),
                          **OPTIONS)
    finally:
        first.close()
    build_station(media / "tiny.onnx", tmp_path / "busy", device="cpu").close()  # the folder is free again
