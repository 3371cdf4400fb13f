"""Classify by upload (multipart `files`) or a folder under --data-root (`folder`); list --data-root folders."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from .. import browse
from ..uploads import classify_files, classify_folder, safe_name
from .deps import RootDep, StationDep, get_data_root

router = APIRouter(prefix="/api")


def _too_large(message: str):
    raise HTTPException(status_code=413, detail=message)


def _confined(call):
    """browse's refusals as HTTP answers: out of the root 403, absent 404, too many files 413."""
    try:
        return call()
    except browse.Forbidden as exc:
        raise HTTPException(403, str(exc)) from None
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except OverflowError as exc:
        _too_large(str(exc))


@router.get("/folders")
def folders(root: RootDep, path: str = ""):
    return _confined(lambda: browse.listing(root, path))


async def _bounded_body(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        _too_large(f"request of {int(length) / 2**20:.1f} MiB is over the limit of {limit / 2**20:.0f} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            _too_large(f"request is over the limit of {limit / 2**20:.0f} MiB")
    request._body = bytes(body)  # starlette parses the form from the body read (and bounded) above


@router.post("/classify")
async def classify(request: Request, st: StationDep):
    lim = st.limits
    await _bounded_body(request, lim.max_request_bytes)
    form = await request.form(max_files=lim.max_files + 1, max_fields=lim.max_files + 16)
    uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
    folder = form.get("folder")
    if isinstance(folder, str) and not uploads:
        root = get_data_root(request)
        paths, names = _confined(lambda: browse.folder_images(root, folder, lim.max_files))
        return await run_in_threadpool(classify_folder, st.clf, paths, names, lim.max_pixels)
    if not uploads:
        raise HTTPException(400, "send one or more image files in the multipart field 'files'")
    if len(uploads) > lim.max_files:
        _too_large(f"{len(uploads)} files in one request; the limit is {lim.max_files}")
    files = []
    for i, f in enumerate(uploads):
        data = await f.read()
        if len(data) > lim.max_file_bytes:
            _too_large(f"{safe_name(f.filename, i)} is {len(data) / 2**20:.1f} MiB; the limit is "
                       f"{lim.max_file_bytes / 2**20:.0f} MiB per file")
        files.append((safe_name(f.filename, i), data))
    on_image = lambda name, rgb, p: st.store.add_upload(name, rgb, p)  # noqa: E731
    return await run_in_threadpool(classify_files, st.clf, files, lim.max_pixels, on_image)
