"""The microscope station: `leuk-edge serve`, a local web page over the edge runtime.

A thin layer: the live view is `edge.stream.run_stream` (sources, detection, classifier, CellTracker, summary) in one
background thread; the page's galleries, uploads and model tab read the same objects. No TensorFlow here.

    hub.py      one shared pipeline: frames (JPEG on demand), events, running totals, recording, pause
    replay.py   the source wrapper: --loop, pacing of file sources, pause
    review.py   the technologist's review: slides (live, batches, current), pre-class galleries, reviews
    store.py    the durable state: SQLite (WAL) slides, cells, reviews, signatures, audit log
    signing.py  signing a slide (every cell reviewed, `other` named), amendments, the signed files
    audit.py    the hash-chained audit log and its verifier (`leuk-edge audit`)
    fhir.py     a signed version as a FHIR R4 Bundle
    users.py    --users: each person's token names them (hashes only)
    uploads.py  upload limits, the header checks (pixels, decode budget) before decoding, classify rows
    guard.py    Host, Origin, anti-CSRF and token checks in front of every request
    browse.py   --data-root folders that cannot be left
    reviews_data.py  reviews (database or JSONL) -> C-NMC-layout dataset (`leuk-edge data reviews`)
    modelinfo.py     the Model tab: metadata, parity reports, model card, file hash
    app.py      Station, build_station, the token rule; create_app includes the API routers
    routers/    the API of docs/contracts.md "Station API", one router per concern: live, slides (slides, review),
                classify, model; routers/deps.py hands each request its Station
    server.py   binding, the loopback/token rule, uvicorn with graceful shutdown
"""
