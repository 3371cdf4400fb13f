"""Closed to other web pages: the Host, Origin, anti-CSRF and token checks in front of every request.

A station on 127.0.0.1 is still reachable by every web page its browser opens: a page on another site can send
"simple" cross-origin requests (a `no-cors` multipart POST, a `text/plain` POST) that need no preflight, and a
page behind a name that its owner re-points at 127.0.0.1 (DNS rebinding) can even read the answers. As Jupyter
does, the station therefore checks, in this order, before any handler runs:

1. **Host** — the `Host` header must name the station: a loopback name or address, the `--host` it listens on, an
   `--allowed-host`; on a wildcard bind (0.0.0.0, ::) also this machine's name and any numeric address (a numeric
   Host cannot be rebound to another site). Anything else → 400, the page included: a rebinding page never sees
   an answer.
2. **Origin** (state-changing methods) — a request that carries `Origin` must come from the station's own origin
   (scheme http/https and the very Host it was sent to), else 403 whatever token it carries. A request without
   `Origin` (curl, scripts: browsers always send it on a POST) is judged by its token alone.
3. **Anti-CSRF token** (state-changing methods from a browser, i.e. with `Origin`) — the page is served with a
   per-process random token in `<meta name="csrf-token">` and sends it back as `X-CSRF-Token`; missing or wrong
   → 403. A custom header also makes any cross-origin attempt a preflighted request, which the station never
   allows (it sends no CORS headers).
4. **Access token** (`/api/*`) — `Authorization: Bearer T` or `?token=T`, compared in constant time; else 401.

Every refusal is counted by reason (`/api/health` → `refused`), so a lab sees that something tried.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from starlette.responses import JSONResponse

from .users import Users

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


def host_name(value: str) -> str:
    """`Host` header value -> the name alone: lower case, no port, no brackets, no trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        value = value[1:value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.rsplit(":", 1)[0]
    return value.rstrip(".")


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@dataclass
class Access:
    """Who may talk to this station: the names it serves, its access token, the page's anti-CSRF token."""

    token: str | None = None
    hosts: frozenset[str] = LOOPBACK_NAMES
    any_ip: bool = False  # a wildcard bind: every numeric address of the machine is served
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    refused: Counter = field(default_factory=Counter)
    users: Users | None = None  # --users: each person's token is an access token too, and names them

    @classmethod
    def for_bind(cls, host: str = "127.0.0.1", token: str | None = None, allowed: tuple[str, ...] = (),
                 users: Users | None = None) -> Access:
        bind = host_name(host)
        names = set(LOOPBACK_NAMES) | {host_name(a) for a in allowed if a.strip()}
        wildcard = bind in WILDCARDS
        if wildcard:  # the URL printed names this machine
            names |= {host_name(socket.gethostname()), host_name(socket.getfqdn())}
        else:
            names.add(bind)
        return cls(token=token, hosts=frozenset(names), any_ip=wildcard, users=users)

    def host_served(self, value: str) -> bool:
        name = host_name(value)
        if name in self.hosts:
            return True
        ip = _ip(name)
        return ip is not None and (ip.is_loopback or self.any_ip)

    def token_ok(self, given: str) -> bool:
        if self.token is None and self.users is None:
            return True
        if self.token is not None and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
            return True
        return self.users is not None and self.users.name_for(given) is not None

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8"), self.csrf.encode("utf-8"))


def own_origin(origin: str, host: str) -> bool:
    """True when `Origin` is the station's own: http(s) and exactly the Host the request was sent to."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def bearer_token(headers, scope) -> str:
    """The request's access token: `Authorization: Bearer T`, else `?token=T` ("" when none)."""
    return _bearer(headers, scope)


def _bearer(headers: dict[str, str], scope) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]


class Guard:
    """ASGI middleware applying the four checks above; the first that fails answers."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    def verdict(self, scope) -> tuple[int, str, str] | None:
        """(status, reason key, message) of a refusal, or None to let the request through."""
        h, a = _headers(scope), self.access
        host = h.get("host", "")
        if not a.host_served(host):
            return 400, "host", f"this station does not serve the host {host_name(host) or '(none)'!r}"
        if scope.get("method", "GET") not in SAFE_METHODS and "origin" in h:
            if not own_origin(h["origin"], host):
                return 403, "origin", "cross-origin requests are refused: use the station's own page"
            if not a.csrf_ok(h.get(CSRF_HEADER, "")):
                return 403, "csrf", "missing or stale anti-CSRF token: reload the station's page"
        if scope["path"].startswith("/api/") and not a.token_ok(_bearer(h, scope)):
            return 401, "token", "missing or wrong token"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.verdict(scope)
            if refusal is not None:
                status, reason, message = refusal
                self.access.refused[reason] += 1
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                await JSONResponse({"detail": message}, status_code=status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)
