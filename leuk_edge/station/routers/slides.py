"""Slides and their review: the slide list (new, open), cells and their images, a technologist's review, signing,
amendments and the FHIR export. Every review and signature names its reviewer: from the JSON body's `reviewer`
(without `--users`; missing -> 422), or from the request's token (`--users`; another name in the body -> 403)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import FileResponse

from ..guard import bearer_token
from ..review import SignRefused, SlideClosed, check_reviewer
from .deps import StationDep

router = APIRouter(prefix="/api")
OptionalBody = Annotated[dict | None, Body()]


def _query(request: Request) -> str:
    """The token of this request as a query string for the image URLs it is handed (an <img> sends no header)."""
    t = request.query_params.get("token")
    return "?" + urlencode({"token": t}) if t else ""  # a token may hold &, + or #


def reviewer_for(st, request: Request, body: dict | None) -> str:
    """Who is acting: the token's name with --users (a different body name is 403), else the body's `reviewer`."""
    given = (body or {}).get("reviewer")
    users = st.access.users
    if users is None:
        try:
            return check_reviewer(given)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    name = users.name_for(bearer_token(request.headers, request.scope))
    if name is None:
        raise HTTPException(403, "this token names no reviewer: use your own token from the station's --users file")
    if given is not None and (not isinstance(given, str) or " ".join(given.split()) != name):
        raise HTTPException(403, f"this token is {name}'s: a review or signature is recorded under the token's name")
    return name


def _actor(st, request: Request, body: dict | None) -> str | None:
    """The name for the audit log where one is optional (opening a slide): the token's, else the body's, else none."""
    try:
        return reviewer_for(st, request, body)
    except HTTPException:
        return None


def _refusals(call):
    """The store's refusals as HTTP answers: unknown 404, signed or not signable 409, bad input 422."""
    try:
        return call()
    except KeyError as exc:
        raise HTTPException(404, f"no such slide or cell: {exc.args[0]}") from None
    except (SignRefused, SlideClosed) as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/whoami")
def whoami(request: Request, st: StationDep):
    users = st.access.users
    name = users.name_for(bearer_token(request.headers, request.scope)) if users else None
    return {"reviewer": name, "users": users is not None}


@router.get("/slides")
def slides(st: StationDep):
    return st.store.slides()


@router.post("/slides")
def new_slide(request: Request, st: StationDep, body: OptionalBody = None):
    return st.store.new_slide(_actor(st, request, body))


@router.get("/slides/{slide}")
def slide(slide: str, st: StationDep):
    entry = _refusals(lambda: st.store.slide_entry(slide))
    return {**entry, "versions": [s["summary"] for s in st.store.db.signatures_of(slide)]}


@router.post("/slides/{slide}/open")
def open_slide(slide: str, request: Request, st: StationDep, body: OptionalBody = None):
    return _refusals(lambda: st.store.open_slide(slide, _actor(st, request, body)))


@router.get("/slides/{slide}/fhir")
def fhir(slide: str, st: StationDep, version: int | None = None):
    versions = st.store.db.signatures_of(slide)
    chosen = [v for v in versions if version is None or v["version"] == version]
    if not chosen:
        raise HTTPException(404, f"slide {slide} has no signed version{'' if version is None else f' {version}'}")
    return chosen[-1]["fhir"]


@router.post("/slides/{slide}/amend")
def amend(slide: str, body: dict, request: Request, st: StationDep):
    who = reviewer_for(st, request, body)
    return _refusals(lambda: st.store.amend(slide, who, body.get("changes"), body.get("reason")))


@router.get("/cells")
def cells(request: Request, st: StationDep, slide: str | None = None):
    return _refusals(lambda: st.store.cells(_query(request), slide=slide))


@router.get("/cells/{item}/{kind}.png")
def cell_image(item: int, kind: str, st: StationDep):
    if kind not in ("crop", "cam"):
        raise HTTPException(404, "no such image")
    path = st.store.file_of(item, kind)
    if path is None or not path.is_file():
        raise HTTPException(404, "no image for that cell")
    return FileResponse(str(path), media_type="image/png")


@router.post("/cells/{item}/review")
def review(item: int, body: dict, request: Request, st: StationDep):
    label = str(body.get("label"))
    who = reviewer_for(st, request, body)
    return _refusals(lambda: st.store.review(item, label, who))


@router.post("/sign")
def sign(request: Request, st: StationDep, body: OptionalBody = None):
    who = reviewer_for(st, request, body)
    return _refusals(lambda: st.store.sign(who, (body or {}).get("slide")))
