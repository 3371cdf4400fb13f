"""What the station runs: health (model, source, slide, threshold) and the Model tab's facts."""

from __future__ import annotations

from fastapi import APIRouter

from ... import DISCLAIMER
from .deps import StationDep

router = APIRouter(prefix="/api")


@router.get("/health")
def health(st: StationDep):
    h = st.hub
    return {"status": "ok", "model": st.info["file"], "providers": st.info["providers"],
            "source": h.source.describe() if h else None, "running": bool(h and h.running),
            "replayable": bool(h and getattr(h.source, "replayable", False)),
            "data_root": st.data_root is not None, "slide": st.store.slide, "live_slide": st.store.live,
            "paused": bool(h and h.paused), "users": st.access.users is not None,
            "threshold": st.store.threshold, "band": st.store.band, "refused": dict(st.access.refused),
            "precision": st.precision.to_dict() if st.precision else None, "disclaimer": DISCLAIMER}


@router.get("/model")
def model(st: StationDep):
    return st.info
