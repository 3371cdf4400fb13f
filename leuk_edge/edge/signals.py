"""Stop signals: SIGTERM (docker stop, systemd, Kubernetes) takes the same graceful path as Ctrl-C.

Inside `graceful_stop()` a SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so every
`except KeyboardInterrupt` that closes recordings, JSON arrays and summaries also runs on SIGTERM; the CLI then
exits 143 (128 + SIGTERM) instead of 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM received: stop like Ctrl-C, exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def graceful_stop():
    """Route SIGTERM to `Terminated` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code_for(exc: KeyboardInterrupt) -> int:
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT
