"""The station API, one router per concern (FastAPI's "Bigger Applications" layout); `app.create_app` includes them.

    deps.py      the dependencies that reach the Station: the station itself, its live hub, its data root
    live.py      the live view: stream.mjpg, events, summary, record, pause
    slides.py    the review of the current slide: cells, crops, reviews, signing
    classify.py  classify by upload or --data-root folder; folder listing
    model.py     health and the Model tab
"""
