"""The review of the current slide: its cells and their images, a technologist's review, signing."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from ..review import SignRefused
from .deps import StationDep

router = APIRouter(prefix="/api")


def _query(request: Request) -> str:
    """The token of this request as a query string for the image URLs it is handed (an <img> sends no header)."""
    t = request.query_params.get("token")
    return "?" + urlencode({"token": t}) if t else ""  # a token may hold &, + or #


@router.get("/cells")
def cells(request: Request, st: StationDep):
    return st.store.cells(_query(request))


@router.get("/cells/{item}/{kind}.png")
def cell_image(item: int, kind: str, st: StationDep):
    if kind not in ("crop", "cam"):
        raise HTTPException(404, "no such image")
    path = st.store.file_of(item, kind)
    if path is None or not path.is_file():
        raise HTTPException(404, "no image for that cell")
    return FileResponse(str(path), media_type="image/png")


@router.post("/cells/{item}/review")
def review(item: int, body: dict, st: StationDep):
    try:
        return st.store.review(item, str(body.get("label")))
    except KeyError:
        raise HTTPException(404, f"no cell {item} on the current slide") from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/sign")
def sign(st: StationDep):
    try:
        return st.store.sign()
    except SignRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
