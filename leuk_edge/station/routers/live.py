"""The live view: the annotated MJPEG stream, stream events (SSE), running totals, recording, pause, and the
restart of a replay source that ended."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from .deps import NO_CACHE, HubDep, StationDep

router = APIRouter(prefix="/api")


async def _threaded(gen):
    """A blocking generator iterated on worker threads, closed as soon as its response ends (a viewer that
    leaves gives its thread and stream slot back at once, not whenever the response is garbage-collected)."""
    try:
        async for chunk in iterate_in_threadpool(gen):
            yield chunk
    finally:
        gen.close()


def _jpeg_parts(h):
    last = -1
    while not h.stopping.is_set():
        got = h.next_part(last, timeout=1.0)  # the part is built once per frame for every viewer
        if got is None:
            if not h.running:
                return
            continue
        last, part = got
        yield part


def _event_lines(h, start: int):
    last, idle = start, 0
    while not h.stopping.is_set():
        evs = h.events_after(last, timeout=1.0)
        if not evs:
            if not h.running:
                return
            idle += 1
            if idle % 15 == 0:
                yield b": keep-alive\n\n"
            continue
        for seq, ev in evs:
            yield f"id: {seq}\ndata: {json.dumps(ev)}\n\n".encode()
        last = evs[-1][0]


class _SlotResponse(StreamingResponse):
    """A streaming response that gives its stream slot back when it ends, however it ends (client gone,
    source ended, shutdown), even if its body was never started."""

    def __init__(self, content, release, **kw):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get("/stream.mjpg")
def stream(st: StationDep, h: HubDep):
    release = st.take_stream_slot()
    return _SlotResponse(_threaded(_jpeg_parts(h)), release,
                         media_type="multipart/x-mixed-replace; boundary=frame", headers=NO_CACHE)


@router.get("/events")
def events(request: Request, st: StationDep, h: HubDep, since: int | None = None):
    last_id = request.headers.get("last-event-id")
    if since is None and last_id and last_id.isdigit():
        since = int(last_id) + 1
    start = since - 1 if since is not None else h.newest_event()  # default: from now on
    release = st.take_stream_slot()
    return _SlotResponse(_threaded(_event_lines(h, start)), release, media_type="text/event-stream",
                         headers=NO_CACHE)


@router.get("/summary")
def summary(st: StationDep):
    if st.hub is None:
        return {"frames": 0, "cells": 0, "all": 0, "hem": 0, "blast_fraction": None, "ci_low": None,
                "ci_high": None, "fps": 0.0, "running": False}
    return st.hub.live_summary()


@router.post("/source/restart")
def restart(h: HubDep):
    """Play a replay source again after it ended (404 without --source; 409 while it runs or for a live one)."""
    try:
        h.restart()
    except (RuntimeError, ValueError) as exc:
        raise HTTPException(409, str(exc)) from None
    return {"running": h.running, "source": h.source.describe(), "replays": h.source.replays}


@router.post("/record")
def record(body: dict, h: HubDep):
    return h.record(bool(body.get("on")))


@router.post("/pause")
def pause(body: dict, h: HubDep):
    return {"paused": h.pause(bool(body.get("on")))}
