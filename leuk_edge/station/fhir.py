"""A signed slide as an HL7 FHIR R4 Bundle, the form a laboratory information system takes results in.

One `collection` Bundle per signed version: a DiagnosticReport (status `final` for the first signature, `amended`
for each amendment; performer = the reviewer who signed; the conclusion carries the not-a-diagnostic-device
statement), Observations for the reviewer-verified counts (cells counted = all + hem + other, all, hem, other,
not classed) and the blast fraction with its 95 % Wilson interval (components), the Device (the model: file name,
version, SHA-256), the Practitioner, the Specimen (the slide) and a Provenance (CREATE, or UPDATE naming the
version it amends). Full URLs are name-based UUIDs, so a bundle rebuilt from the database is byte-identical.
Every bundle is validated against the R4 models of `fhir.resources` before it is stored.
"""

from __future__ import annotations

import uuid

from .. import DISCLAIMER, __version__

NAMESPACE = uuid.UUID("5b0f3f0e-2f0a-4c52-9d61-6c65756b2d65")  # fixed: the same slide gives the same UUIDs
LOCAL = "urn:leuk-edge:station"          # the station's own observation codes
SLIDE_SYSTEM = "urn:leuk-edge:slide"
MODEL_SYSTEM = "urn:leuk-edge:model-sha256"
UCUM = "http://unitsofmeasure.org"
CATEGORY_LAB = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory", "display": "Laboratory"}]}
CATEGORY_HEM = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                            "display": "Hematology"}]}
COUNTS = (("cells", "cells counted (all + hem + other; not classed left out)"),
          ("all", "leukemic B-lymphoblasts (all), reviewer-verified"),
          ("hem", "normal B-lymphoid cells (hem), reviewer-verified"),
          ("other", "cells out of the model's scope (other), reviewer-verified; not in the blast fraction"))


def _urn(*parts) -> str:
    return "urn:uuid:" + str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def _ref(url: str, display: str | None = None) -> dict:
    return {"reference": url, **({"display": display} if display else {})}


def _code(code: str, display: str) -> dict:
    return {"coding": [{"system": LOCAL, "code": code, "display": display}], "text": display}


def _observation(doc: dict, refs: dict, code: str, display: str, value: dict) -> dict:
    return {"resourceType": "Observation", "status": doc["status"], "category": [CATEGORY_LAB],
            "code": _code(code, display), "effectiveDateTime": doc["created"], "issued": doc["signed_at"],
            "performer": [refs["practitioner"]], "device": refs["device"], "specimen": refs["specimen"], **value}


def _percent(x: float) -> dict:
    return {"value": round(100 * x, 2), "unit": "%", "system": UCUM, "code": "%"}


def _blast_fraction(doc: dict, refs: dict) -> dict:
    v = doc["verified"]
    if v["blast_fraction"] is None:
        value = {"dataAbsentReason": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-applicable"}],
            "text": "no cell verified as all or hem"}}
    else:
        value = {"valueQuantity": _percent(v["blast_fraction"]),
                 "component": [{"code": _code("ci_low", "95 % confidence interval, lower bound (Wilson)"),
                                "valueQuantity": _percent(v["ci_low"])},
                               {"code": _code("ci_high", "95 % confidence interval, upper bound (Wilson)"),
                                "valueQuantity": _percent(v["ci_high"])}]}
    value["method"] = {"text": "all / (all + hem) over reviewer-verified cells; other and not classed left out"}
    return _observation(doc, refs, "blast_fraction", "blast fraction (all among all + hem)", value)


def _observations(doc: dict, refs: dict) -> list[dict]:
    v = doc["verified"]
    obs = [_observation(doc, refs, code, display, {"valueInteger": int(v[code])}) for code, display in COUNTS]
    obs.append(_observation(doc, refs, "not_classed", "cells not classed by the reviewer (debris, not a white "
                            "cell)", {"valueInteger": int(doc["not_classed"])}))
    obs.append(_blast_fraction(doc, refs))
    return obs


def _conclusion(doc: dict) -> str:
    v = doc["verified"]
    frac = ("not applicable" if v["blast_fraction"] is None else
            f"{100 * v['blast_fraction']:.1f} % (95 % CI {100 * v['ci_low']:.1f}-{100 * v['ci_high']:.1f} %)")
    text = (f"Slide {doc['slide']}, reviewed and signed by {doc['signed_by']}: {v['cells']} cells counted "
            f"({v['all']} all, {v['hem']} hem, {v['other']} other; {doc['not_classed']} not classed); "
            f"blast fraction {frac}.")
    if doc.get("amends"):
        a = doc["amends"]
        text += (f" Amendment {doc['version']} of version {a['version']} (signed by {a['signed_by']} at "
                 f"{a['signed_at']}), amended by {doc['signed_by']}"
                 + (f": {doc['reason']}" if doc.get("reason") else "") + ".")
    return f"{text} {DISCLAIMER}"


def _device(doc: dict) -> dict:
    m = doc.get("model") or {}
    return {"resourceType": "Device", "identifier": [{"system": MODEL_SYSTEM, "value": doc["model_sha256"]}],
            "deviceName": [{"name": m.get("file") or "leuk-edge model", "type": "model-name"}],
            "type": {"text": f"image classifier ({m.get('architecture') or 'ONNX'}); research use only"},
            "version": [{"type": {"text": "exported by leuk-edge"}, "value": str(m.get("version") or "unknown")},
                        {"type": {"text": "leuk-edge runner"}, "value": __version__}],
            "note": [{"text": DISCLAIMER}]}


def _provenance(doc: dict, refs: dict) -> dict:
    amended = bool(doc.get("amends"))
    prov = {"resourceType": "Provenance", "target": [refs["report"]], "recorded": doc["signed_at"],
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                     "code": "UPDATE" if amended else "CREATE"}]},
            "agent": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "verifier"}]}, "who": refs["practitioner"]}]}
    if amended:
        a = doc["amends"]
        prov["entity"] = [{"role": "revision", "what": {
            "identifier": {"system": SLIDE_SYSTEM, "value": f"{doc['slide']}/v{a['version']}"},
            "display": f"version {a['version']}, signed by {a['signed_by']} at {a['signed_at']}"}}]
        if doc.get("reason"):
            prov["reason"] = [{"text": doc["reason"]}]
    return prov


def bundle(doc: dict) -> dict:
    """The FHIR R4 Bundle of one signed version (the signing module's document); validated before it is returned."""
    slide, version = doc["slide"], doc["version"]
    urls = {k: _urn(slide, version, k) for k in ("report", "specimen", "provenance")}
    urls["device"] = _urn("device", doc["model_sha256"])
    urls["practitioner"] = _urn("practitioner", doc["signed_by"])
    refs = {"report": _ref(urls["report"]), "specimen": _ref(urls["specimen"], slide),
            "device": _ref(urls["device"], (doc.get("model") or {}).get("file")),
            "practitioner": _ref(urls["practitioner"], doc["signed_by"])}
    obs = _observations(doc, refs)
    obs_urls = [_urn(slide, version, "observation", o["code"]["coding"][0]["code"]) for o in obs]
    report = {"resourceType": "DiagnosticReport", "meta": {"versionId": str(version)},
              "identifier": [{"system": SLIDE_SYSTEM, "value": slide}], "status": doc["status"],
              "category": [CATEGORY_HEM],
              "code": {"text": "leuk-edge white-blood-cell review for acute lymphoblastic leukemia (screening aid)"},
              "effectiveDateTime": doc["created"], "issued": doc["signed_at"],
              "performer": [refs["practitioner"]], "resultsInterpreter": [refs["practitioner"]],
              "specimen": [refs["specimen"]], "result": [_ref(u) for u in obs_urls],
              "conclusion": _conclusion(doc)}
    resources = [(urls["report"], report), *zip(obs_urls, obs),
                 (urls["device"], _device(doc)),
                 (urls["practitioner"], {"resourceType": "Practitioner", "name": [{"text": doc["signed_by"]}]}),
                 (urls["specimen"], {"resourceType": "Specimen",
                                     "identifier": [{"system": SLIDE_SYSTEM, "value": slide}],
                                     "type": {"text": f"white-blood-cell images ({doc.get('kind') or 'slide'})"}}),
                 (urls["provenance"], _provenance(doc, refs))]
    out = {"resourceType": "Bundle", "identifier": {"system": SLIDE_SYSTEM, "value": f"{slide}/v{version}"},
           "type": "collection", "timestamp": doc["signed_at"],
           "entry": [{"fullUrl": url, "resource": res} for url, res in resources]}
    validate(out)
    return out


def validate(obj: dict) -> None:
    """Raise (pydantic's ValidationError, a ValueError) unless `obj` is a valid FHIR R4 Bundle."""
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(obj)
