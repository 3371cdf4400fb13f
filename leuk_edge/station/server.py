"""Serving the station: the token rule (on by default; `--no-token` on loopback only), the listening socket,
uvicorn with a graceful stop.

On Ctrl-C or SIGTERM uvicorn stops accepting, `StationServer.handle_exit` ends the live streams (MJPEG and SSE
responses would otherwise hold the shutdown open) and uvicorn re-raises the signal once it has shut down, which
`edge.signals.graceful_stop` turns into the CLI's exit code (130 / 143) after the stream summary is printed.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from urllib.parse import urlencode

import uvicorn


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def resolve_token(host: str, token: str | None, no_token: bool = False) -> str | None:
    """The access token: `--token T` (8+ characters), else a fresh random one (`--token auto` or nothing, as
    Jupyter does, even on loopback); `--no-token` -> None, on a loopback host only (ValueError otherwise)."""
    if no_token:
        if token is not None:
            raise ValueError("give --token or --no-token, not both")
        if not is_loopback(host):
            raise ValueError(f"--no-token is for a loopback --host only; {host} is reachable from the network")
        return None
    if token is None or token == "auto":
        return secrets.token_urlsafe(24)
    if len(token) < 8:
        raise ValueError("--token must be at least 8 characters (or 'auto')")
    return token


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port; read it from getsockname())."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: an answer's body is not held back until the client ACKs its headers (with
    # Nagle on, a keep-alive request waited ~40 ms for the client's delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket, host: str, token: str | None) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    if shown in ("0.0.0.0", "[::]"):
        shown = socket.gethostname()
    return f"http://{shown}:{port}/" + ("?" + urlencode({"token": token}) if token else "")


class StationServer(uvicorn.Server):
    def __init__(self, app, station, **kw):
        super().__init__(uvicorn.Config(app, log_level=kw.pop("log_level", "warning"), lifespan="off",
                                        timeout_graceful_shutdown=3, access_log=False, **kw))
        self.station = station
        self.stop_signal: int | None = None

    def handle_exit(self, sig, frame) -> None:
        self.stop_signal = sig
        if self.station.hub is not None:
            self.station.hub.stopping.set()
        super().handle_exit(sig, frame)
