"""The station's durable review state (SQLite), signing with `other` cells, amendments, the audit chain and the
FHIR export -- at the store's own level (the API over a real server is in test_station_slides.py)."""

import hashlib
import json
import math
import sqlite3

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leuk_edge import DISCLAIMER
from leuk_edge.cli import app
from leuk_edge.edge.tracking import Cell, CellTracker
from leuk_edge.station.review import ReviewStore, SignRefused, SlideClosed
from leuk_edge.station.store import StoreError

SHA = hashlib.sha256(b"model bytes").hexdigest()
MODEL = {"file": "cnn.onnx", "architecture": "cnn", "version": "0.1.0"}
OOD_T = 5.0


def _store(folder, **kw):
    return ReviewStore(folder, 0.5, SHA, band=0.1, model=MODEL, ood_threshold=OOD_T, **kw)


def _rgb(value):
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = value
    return img


def _wilson(k, n, z=1.959963984540054):  # the textbook formula, written out here
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return round(c - h, 4), round(c + h, 4)


def _batch(st, cells):
    """[(probability, ood)] -> the ids of a new upload batch's cells."""
    add = st.batch("upload")
    ids = [add(f"cell{i}.png", _rgb((100 + i, 0, 120)), p, ood) for i, (p, ood) in enumerate(cells)]
    return add.slide, ids


def _live(st):
    """The stream's tracker, wired to the store as the station wires it."""
    tracker = CellTracker(0.5, OOD_T)
    tracker.on_ended(st.on_track_ended)
    st.tracker = tracker
    return tracker


def _frame(st, tracker, sightings, index=None):
    """One processed frame: [(x, P(all))] -> cells numbered by the tracker, then the store's hook."""
    cells = [Cell((x, 0, 20, 20), "all" if p >= 0.5 else "hem", p, 1.0) for x, p in sightings]
    tracker.update(cells, index)
    st.on_cells(cells, [_rgb((90, 0, 90)) for _ in cells], None, None)


def test_restart_restores_unsigned_slides_with_cells_crops_and_reviews(tmp_path):
    st = _store(tmp_path)
    live, tracker = st.live, _live(st)
    for p0, p1 in [(0.9, 0.1), (0.7, 0.3), (0.8, 0.2)]:  # two cells seen in three frames
        _frame(st, tracker, [(0, p0), (200, p1)])
    batch, ids = _batch(st, [(0.9, 1.0), (0.2, 1.0), (0.6, 9.0)])
    stream_ids = [c["track"] for c in st.cells(slide=live)]
    st.review(stream_ids[0], "all", "ann")
    st.review(ids[1], "hem", "bob")
    st.open_slide(batch)
    before = {sid: st.cells(slide=sid) for sid in (live, batch)}
    crops = {c["track"]: (tmp_path / "crops" / c["slide"] / f"{c['track']:06d}.png").read_bytes()
             for cs in before.values() for c in cs}
    st.close()

    again = _store(tmp_path)
    assert (again.current, again.live) == (batch, live)  # the page reopens where it was; the source feeds the same
    after = {sid: again.cells(slide=sid) for sid in (live, batch)}
    assert after == before  # same ids, P(all), frames, labels, reviews and reviewers
    live_cells = {c["track"]: c for c in after[live]}
    assert [live_cells[i]["frames"] for i in stream_ids] == [3, 3]
    assert live_cells[stream_ids[0]]["probability"] == pytest.approx(0.8)  # mean of the three sightings
    assert (live_cells[stream_ids[0]]["review"], live_cells[stream_ids[0]]["reviewer"]) == ("all", "ann")
    assert {c["track"]: c["review"] for c in after[batch]} == {ids[0]: None, ids[1]: "hem", ids[2]: None}
    assert {c["track"] for c in after[batch] if c["label"] == "other"} == {ids[2]}
    for cid, data in crops.items():
        assert again.file_of(cid, "crop").read_bytes() == data
    assert [(s["id"], s["state"], s["cells"], s["reviewed"]) for s in again.slides()] == [
        (live, "open", 2, 1), (batch, "open", 3, 1)]
    _, more = _batch(again, [(0.4, 1.0)])
    assert more[0] == max(crops) + 1  # ids continue
    again.close()


def test_one_station_per_folder(tmp_path):
    st = _store(tmp_path)
    with pytest.raises(StoreError, match="another station"):
        _store(tmp_path)
    st.close()
    _store(tmp_path).close()


def test_sign_needs_other_cells_reviewed_and_counts_other_apart(tmp_path):
    st = _store(tmp_path)
    slide, ids = _batch(st, [(0.9, 1.0), (0.2, 1.0), (0.8, 9.0), (0.1, 9.0), (0.95, 1.0)])
    assert [c["pre_class"] for c in st.cells(slide=slide)] == ["all", "hem", "other", "other", "all"]
    for cid, label in zip(ids[:3], ["all", "hem", "hem"]):  # the reviewer says the first `other` is a hem cell
        st.review(cid, label, "ann")
    st.review(ids[4], "all", "ann")
    with pytest.raises(SignRefused, match=f"1 of 5 cells .* other .*#{ids[3]}$"):
        st.sign("ann", slide)
    with pytest.raises(ValueError, match="reviewer"):
        st.review(ids[3], "other", "  ")
    st.review(ids[3], "other", "ann")  # confirmed out of scope
    s = st.sign("ann", slide)
    # model: all 2, hem 1, other 2 -> blast fraction 2/3 over all + hem only
    assert s["pre_classified"] == {"all": 2, "hem": 1, "other": 2, "cells": 5, "blast_fraction": round(2 / 3, 4),
                                   "ci_low": _wilson(2, 3)[0], "ci_high": _wilson(2, 3)[1]}
    # reviewer: all 2, hem 2, other 1
    assert s["verified"] == {"all": 2, "hem": 2, "other": 1, "cells": 5, "blast_fraction": 0.5,
                             "ci_low": _wilson(2, 4)[0], "ci_high": _wilson(2, 4)[1]}
    assert (s["cells"], s["other_confirmed"], s["agreed"], s["signed_by"]) == (5, 1, 4, "ann")
    assert s["confusion"] == {"tp": 2, "fn": 0, "tn": 1, "fp": 0}  # the reclassified `other` is in neither
    st.close()


def _signed_slide(st, labels=("all", "hem"), cells=((0.9, 1.0), (0.2, 1.0))):
    slide, ids = _batch(st, list(cells))
    for cid, label in zip(ids, labels):
        st.review(cid, label, "ann")
    return slide, ids, st.sign("ann", slide)


def test_a_signed_slide_is_immutable_and_corrected_by_amendment(tmp_path):
    st = _store(tmp_path)
    slide, ids, _ = _signed_slide(st)
    first = (tmp_path / "signed" / f"{slide}.json").read_bytes()
    with pytest.raises(SlideClosed):
        st.review(ids[0], "hem", "bob")
    with pytest.raises(SignRefused, match="already signed"):
        st.sign("bob", slide)
    with pytest.raises(ValueError, match="already all"):
        st.amend(slide, "bob", [{"cell": ids[0], "label": "all"}])
    with pytest.raises(ValueError, match="not on this slide"):
        st.amend(slide, "bob", [{"cell": 999, "label": "hem"}])
    open_slide, _ = _batch(st, [(0.5, 1.0)])
    with pytest.raises(SignRefused, match="not signed yet"):
        st.amend(open_slide, "bob", [{"cell": 1, "label": "hem"}])
    v2 = st.amend(slide, "bob", [{"cell": ids[0], "label": "hem"}], reason="second look: a hem cell")
    assert (v2["version"], v2["status"], v2["signed_by"]) == (2, "amended", "bob")
    assert v2["amends"]["version"] == 1 and v2["amends"]["signed_by"] == "ann"
    assert v2["changes"] == [{"cell": ids[0], "from": "all", "to": "hem"}]
    assert (v2["verified"]["all"], v2["verified"]["hem"]) == (0, 2)
    assert (tmp_path / "signed" / f"{slide}.json").read_bytes() == first  # both kept, the first untouched
    assert json.loads((tmp_path / "signed" / f"{slide}.v2.json").read_text())["amends"]["version"] == 1
    entry = next(s for s in st.slides() if s["id"] == slide)
    assert (entry["state"], entry["signed_by"], entry["version"]) == ("amended", "bob", 2)
    records = [json.loads(x) for x in (tmp_path / "reviews.jsonl").read_text().splitlines()]
    assert [(r["track"], r["review"], r["reviewer"], r["amendment"]) for r in records if r["slide"] == slide] == [
        (ids[0], "all", "ann", None), (ids[1], "hem", "ann", None), (ids[0], "hem", "bob", 2)]
    st.close()


def test_signs_in_the_same_second_never_overwrite_each_other(tmp_path):
    """Issue 18 defect 9: the next live slide was named by the second it began, so a third sign within one second
    overwrote the first signed/SLIDE.json."""
    st = _store(tmp_path)
    tracker = _live(st)
    signed = []
    for k in range(3):
        _frame(st, tracker, [(300 * k, 0.9)])
        cid = st.cells()[0]["track"]
        st.review(cid, "all", "ann")
        signed.append(st.sign("ann"))
    files = [s["file"] for s in signed]
    assert len(set(files)) == 3 and len({s["slide"] for s in signed}) == 3
    for s in signed:
        assert json.loads(open(s["file"]).read())["slide"] == s["slide"]
    st.close()


def test_audit_chain_verifies_and_names_the_first_broken_entry(tmp_path):
    st = _store(tmp_path)
    slide, ids, _ = _signed_slide(st)
    st.amend(slide, "bob", [{"cell": ids[1], "label": "all"}])
    st.close()
    run = CliRunner().invoke
    res = run(app, ["audit", str(tmp_path)])
    assert res.exit_code == 0 and res.stdout.startswith("ok "), res.output
    db = sqlite3.connect(tmp_path / "station.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET actor='mallory' WHERE seq=3")
    entries = db.execute("SELECT seq, action FROM audit ORDER BY seq").fetchall()
    review_seq = next(seq for seq, action in entries if action == "review")
    db.execute("DROP TRIGGER audit_no_update")  # a dishonest program rewrites history ...
    db.execute("UPDATE audit SET actor='mallory' WHERE seq=?", (review_seq,))
    db.commit()
    res = run(app, ["audit", str(tmp_path)])  # ... and the chain names the entry
    assert res.exit_code == 1 and f"audit entry {review_seq} (review" in res.stdout, res.output
    db.close()


@pytest.mark.parametrize("tamper, expect", [
    ("DROP TRIGGER reviews_append_only; UPDATE reviews SET label='hem' WHERE id=1", "review 1 (cell"),
    ("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq=(SELECT MAX(seq) FROM audit)",
     "signature of"),
    ("DROP TRIGGER audit_no_delete; DROP TRIGGER signatures_no_delete; DELETE FROM signatures; "
     "DELETE FROM audit WHERE action IN ('sign', 'amend') OR seq > (SELECT MIN(seq) FROM audit WHERE action='sign')",
     "its signature is not in the audit log"),
])
def test_audit_catches_rows_changed_behind_its_back(tmp_path, tamper, expect):
    st = _store(tmp_path)
    _signed_slide(st)
    st.close()
    db = sqlite3.connect(tmp_path / "station.db")
    db.executescript(tamper)
    db.commit()
    db.close()
    res = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and expect in res.stdout, res.output


def test_audit_of_a_folder_without_a_station_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 2 and "no station database" in res.output


def _resources(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_signed_slide_is_a_valid_fhir_r4_bundle(tmp_path):
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.observation import Observation

    st = _store(tmp_path)
    slide, ids, _ = _signed_slide(st, labels=("all", "hem", "all", "other", "not classed"),
                                  cells=((0.9, 1.0), (0.2, 1.0), (0.3, 1.0), (0.5, 9.0), (0.7, 1.0)))
    bundle = json.loads((tmp_path / "signed" / f"{slide}.fhir.json").read_text())
    Bundle.model_validate(bundle)
    report = _resources(bundle, "DiagnosticReport")[0]
    DiagnosticReport.model_validate(report)
    assert report["status"] == "final" and report["performer"][0]["display"] == "ann"
    assert DISCLAIMER in report["conclusion"]
    obs = {o["code"]["coding"][0]["code"]: o for o in _resources(bundle, "Observation")}
    for o in obs.values():
        Observation.model_validate(o)
    # reviewer: all 2, hem 1, other 1 (not classed 1 left out) -> 4 cells counted, blast fraction 2/3
    assert {k: obs[k]["valueInteger"] for k in ("cells", "all", "hem", "other", "not_classed")} == {
        "cells": 4, "all": 2, "hem": 1, "other": 1, "not_classed": 1}
    bf = obs["blast_fraction"]
    lo, hi = _wilson(2, 3)
    assert bf["valueQuantity"]["value"] == pytest.approx(100 * 2 / 3, abs=0.01) and bf["valueQuantity"]["unit"] == "%"
    assert [c["valueQuantity"]["value"] for c in bf["component"]] == [pytest.approx(100 * lo, abs=0.01),
                                                                     pytest.approx(100 * hi, abs=0.01)]
    device = _resources(bundle, "Device")[0]
    assert device["identifier"][0]["value"] == SHA and device["deviceName"][0]["name"] == "cnn.onnx"
    assert device["version"][0]["value"] == "0.1.0"
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert {r["reference"] for r in report["result"]} <= urls and len(report["result"]) == 6
    # An amendment is a bundle of its own, status amended, its Provenance naming the version it corrects.
    st.amend(slide, "bob", [{"cell": ids[4], "label": "hem"}], reason="a lymphocyte after all")
    v2 = json.loads((tmp_path / "signed" / f"{slide}.v2.fhir.json").read_text())
    Bundle.model_validate(v2)
    assert _resources(v2, "DiagnosticReport")[0]["status"] == "amended"
    prov = _resources(v2, "Provenance")[0]
    assert prov["activity"]["coding"][0]["code"] == "UPDATE" and prov["entity"][0]["what"]["identifier"][
        "value"] == f"{slide}/v1"
    assert _resources(v2, "Observation")[2]["valueInteger"] == 2  # hem 1 -> 2
    assert json.loads((tmp_path / "signed" / f"{slide}.fhir.json").read_text()) == bundle  # v1 kept as it was
    st.close()


def test_the_fhir_validator_can_fail(tmp_path):
    from leuk_edge.station import fhir

    st = _store(tmp_path)
    slide, _, s = _signed_slide(st)
    bundle = fhir.bundle(s)
    fhir.validate(bundle)
    del _resources(bundle, "DiagnosticReport")[0]["status"]  # status is required (1..1)
    with pytest.raises(ValueError):
        fhir.validate(bundle)
    st.close()


def test_data_reviews_reads_the_database(tmp_path):
    st = _store(tmp_path / "station")
    slide, ids, _ = _signed_slide(st, labels=("all", "hem", "other"), cells=((0.9, 1.0), (0.2, 1.0), (0.2, 9.0)))
    st.amend(slide, "bob", [{"cell": ids[0], "label": "hem"}])
    st.close()
    (tmp_path / "station" / "reviews.jsonl").unlink()  # the database alone is enough
    out = tmp_path / "data"
    res = CliRunner().invoke(app, ["data", "reviews", str(tmp_path / "station"), str(out)])
    assert res.exit_code == 0, res.output
    got = sorted(p.name for p in out.rglob("*.png"))
    assert got == [f"UID_{slide}_{ids[0]}_1_hem.png", f"UID_{slide}_{ids[1]}_1_hem.png"]  # amended; other left out
    crop = cv2.imread(str(out / "C-NMC_Leukemia" / "training_data" / "fold_0" / "hem" / got[0]))
    assert crop.shape == (32, 32, 3)


def test_a_track_that_ends_is_written_with_the_trackers_final_label(tmp_path):
    st = _store(tmp_path)
    tracker = _live(st)
    _frame(st, tracker, [(0, 0.2)])
    _frame(st, tracker, [(0, 0.6)])  # mean 0.4: hem, though this sighting alone is `all`
    for _ in range(tracker.max_missed + 1):
        _frame(st, tracker, [])
    assert tracker.active() == []
    db = sqlite3.connect(tmp_path / "station.db")  # committed already: read beside the running store
    row = db.execute("SELECT label, probability, frames FROM cells").fetchone()
    db.close()
    assert row == ("hem", pytest.approx(0.4), 2)
    st.close()


def test_exports_lost_to_a_crash_are_written_again_at_start(tmp_path):
    """The database is the truth: a review committed but not yet appended to reviews.jsonl, or a signed file not
    yet written, when the process died, is exported at the next start (and an existing file is never rewritten)."""
    st = _store(tmp_path)
    slide, _, _ = _signed_slide(st)
    st.close()
    jsonl = tmp_path / "reviews.jsonl"
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(lines[:-1]) + "\n")  # the last append never happened
    (tmp_path / "signed" / f"{slide}.fhir.json").unlink()
    summary = tmp_path / "signed" / f"{slide}.json"
    summary.write_text(summary.read_text().replace('"ann"', '"forged"'))  # changed behind the station's back
    _store(tmp_path).close()
    assert jsonl.read_text().splitlines() == lines
    assert json.loads((tmp_path / "signed" / f"{slide}.fhir.json").read_text())["entry"][0]["resource"][
        "performer"][0]["display"] == "ann"
    assert '"forged"' in summary.read_text()  # left as found: `leuk-edge audit` is what says it was changed
    res = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and f"{slide}.json differs from the document that was signed" in res.stdout
    summary.write_text(summary.read_text().replace('"forged"', '"ann"'))
    assert CliRunner().invoke(app, ["audit", str(tmp_path)]).exit_code == 0
    fhir = tmp_path / "signed" / f"{slide}.fhir.json"
    fhir.write_text(fhir.read_text().replace('"final"', '"preliminary"'))
    res = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and f"{slide}.fhir.json differs" in res.stdout


def test_uncertain_band_edge_is_uncertain_in_the_station_as_in_the_report(tmp_path):
    """One rule (edge.labels.is_uncertain, edges included): P(all) exactly `band` from the threshold is uncertain.
    threshold 0.25, band 0.25: P = 0.5 lies exactly on the edge (0.5 - 0.25 == 0.25 in binary); the station used
    `<` there and called it `all`, the report `<=` and called it uncertain (issue 18 defect 9)."""
    from leuk_edge.edge.labels import is_uncertain

    store = ReviewStore(tmp_path / "st", 0.25, SHA, band=0.25, model=MODEL)
    try:
        edge = {"probability": 0.5, "label": "all"}
        assert is_uncertain(0.5, 0.25, 0.25)
        assert store.pre_class(edge) == "uncertain"
        assert store.pre_class({"probability": 0.5 + 1e-9, "label": "all"}) == "all"
        assert store.pre_class({"probability": 0.5, "label": "other"}) == "other"
    finally:
        store.close()
