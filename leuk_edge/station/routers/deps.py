"""Dependencies that hand a request the Station it is served by (`app.state.station`, set by `create_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

NO_CACHE = {"Cache-Control": "no-store"}


def get_station(request: Request):
    return request.app.state.station


def get_hub(request: Request):
    hub = get_station(request).hub
    if hub is None:
        raise HTTPException(404, "the station runs without --source: no live stream")
    return hub


def get_data_root(request: Request) -> Path:
    root = get_station(request).data_root
    if root is None:
        raise HTTPException(404, "the station runs without --data-root")
    return root


# `Any` at run time: app.py (which defines Station) includes these routers, so they cannot import it back.
StationDep = Annotated[Any, Depends(get_station)]
HubDep = Annotated[Any, Depends(get_hub)]
RootDep = Annotated[Path, Depends(get_data_root)]
