"""Classify by upload (multipart `files`) or a folder under --data-root (`folder`); list --data-root folders.
Each request's classified images form a batch slide of their own (`"slide"` in the answer; null when none)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from .. import browse
from ..uploads import classify_files, classify_folder, safe_name
from .deps import RootDep, StationDep, get_data_root

router = APIRouter(prefix="/api")
SPOOL_BYTES = 64 << 10  # an uploaded file beyond this is on disk while the request is parsed


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


class _TooLarge(Exception):
    pass


async def _counted(request: Request, limit: int):
    """The request body as it arrives, refused once it passes `limit` bytes (nothing is kept here)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge(f"request is over the limit of {limit / 2**20:.0f} MiB")
        yield chunk


async def _form(request: Request, lim) -> FormData:
    """The form, its files streamed into temporary files as they arrive (in memory only up to SPOOL_BYTES each):
    no copy of the body is held, and the request is cut off at the limit (413)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > lim.max_request_bytes:
        _too_large(f"request of {int(length) / 2**20:.1f} MiB is over the limit of "
                   f"{lim.max_request_bytes / 2**20:.0f} MiB")
    stream = _counted(request, lim.max_request_bytes)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, stream, max_files=lim.max_files + 1, max_fields=lim.max_files + 16)
        parser.spool_max_size = SPOOL_BYTES
    else:
        parser = FormParser(request.headers, stream, max_fields=16)
    try:
        return await parser.parse()
    except _TooLarge as exc:
        _too_large(str(exc))
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            _too_large(f"more than {lim.max_files} files in one request; the limit is {lim.max_files}")
        raise HTTPException(400, exc.message) from None


@router.post("/classify")
async def classify(request: Request, st: StationDep):
    lim = st.limits
    form = await _form(request, lim)
    try:
        return await _classify_form(request, st, form)
    finally:
        await form.close()  # the temporary files go


async def _classify_form(request: Request, st, form: FormData):
    lim = st.limits
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    folder = form.get("folder")
    if isinstance(folder, str) and not uploads:
        root = get_data_root(request)
        paths, names = _confined(lambda: browse.folder_images(root, folder, lim.max_files))
        batch = st.store.batch("folder", source=folder or "/")
        answer = await run_in_threadpool(classify_folder, st.clf, paths, names, lim, _filer(batch), st.decode_slots)
        return {**answer, "slide": batch.slide}
    if not uploads:
        raise HTTPException(400, "send one or more image files in the multipart field 'files'")
    if len(uploads) > lim.max_files:
        _too_large(f"{len(uploads)} files in one request; the limit is {lim.max_files}")
    for i, f in enumerate(uploads):
        if (f.size or 0) > lim.max_file_bytes:
            _too_large(f"{safe_name(f.filename, i)} is {f.size / 2**20:.1f} MiB; the limit is "
                       f"{lim.max_file_bytes / 2**20:.0f} MiB per file")
    files = [(safe_name(f.filename, i), f.file) for i, f in enumerate(uploads)]
    batch = st.store.batch("upload")
    answer = await run_in_threadpool(classify_files, st.clf, files, lim, _filer(batch), st.decode_slots)
    return {**answer, "slide": batch.slide}


def _filer(batch):
    """Each classified image joins the request's own batch slide (never the live slide): the review gallery."""
    return lambda name, rgb, row: batch(name, rgb, row.probability, ood=row.ood, label=row.label)
