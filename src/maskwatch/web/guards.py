"""ASGI middleware in front of every route: :class:`Guards`.

Three checks, in this order, each answered before the app runs and before the request
body is read:

1. **Host allow-list** (HTTP and WebSocket): a ``Host`` header that is not a name of this
   server gets 400 (a WebSocket is closed before it is accepted). A page of another
   site that makes its own name resolve to 127.0.0.1 (DNS rebinding) sends its own name.
   The names: :meth:`WebSettings.allowed_host_names`.
2. **Cross-site state changes** (HTTP): a POST, PUT, PATCH or DELETE that the browser
   marks as sent by a page of another site (``Sec-Fetch-Site: cross-site`` or
   ``same-site``, or an ``Origin`` whose host:port is not the ``Host``) gets 403, on
   every route, open ones included. Requests without these headers (curl, API clients)
   pass; cookie sessions still need their CSRF token (:mod:`maskwatch.web.deps`).
3. **Credentials before the body** (HTTP): a route of :data:`GUARDED_ROUTES` that needs
   the admin (or, on a private server, the viewer) is refused without a valid session
   cookie or ``Authorization: Bearer`` token: 401 for the API, 303 to the login page for
   pages, 429 for an address locked out after failed logins. FastAPI parses a multipart
   form before the route's dependencies run, so without this an anonymous upload would
   be read and spooled to disk before its 401. The route dependencies still check
   (CSRF for cookie sessions included): this only refuses requests with no valid
   credential at all.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import HTTPConnection

from maskwatch.web.deps import SESSION_COOKIE, bearer_token, client_address
from maskwatch.web.security import LockedOut
from maskwatch.web.settings import WebSettings

log = logging.getLogger(__name__)

ADMIN = "admin"
VIEWER = "viewer"  # the admin too, but only when the server is private

READS = frozenset({"GET", "HEAD"})
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Which routes need a login: ``(methods or None for any, path pattern, level)``, the first
#: match wins; patterns match the whole path. The one list of them: the route-level
#: dependencies in api.py, pages.py and streams.py must agree, which
#: tests/web/test_guards.py checks by walking the app's routes. ``/ws/live`` decides in
#: its handler (no body to protect; the page needs the close code 4401).
GUARDED_ROUTES: tuple[tuple[frozenset[str] | None, re.Pattern[str], str], ...] = tuple(
    (methods, re.compile(pattern), level) for methods, pattern, level in (
        (None, r"/api/people(/.*)?", ADMIN),
        (None, r"/api/events(\.csv)?", ADMIN),
        (None, r"/api/stats", ADMIN),
        (WRITES, r"/api/sources(/.*)?", ADMIN),
        (READS, r"/api/sources(/[^/]+/result)?", VIEWER),
        (None, r"/api/analyze", VIEWER),
        (None, r"/stream/.*", VIEWER),
        (None, r"/people(/.*)?", ADMIN),
        (None, r"/events", ADMIN),
        (None, r"/sources(/.*)?", ADMIN),
        (READS, r"/", VIEWER),
    )
)


def required_level(method: str, path: str) -> str | None:
    """:data:`ADMIN`, :data:`VIEWER` or None (open) for a request's method and path."""
    for methods, pattern, level in GUARDED_ROUTES:
        if (methods is None or method.upper() in methods) and pattern.fullmatch(path):
            return level
    return None


def host_name(value: str) -> str:
    """The name of a ``Host`` header without its port, lower case, IPv6 in brackets;
    ``""`` for a malformed one (never allowed)."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        rest = v[end + 1:] if end > 0 else ":"
        return v[:end + 1] if rest == "" or (rest[0] == ":" and rest[1:].isdigit()) else ""
    name, colon, port = v.rpartition(":")
    if not colon:
        return v
    return name if port.isdigit() and ":" not in name else ""


def host_allowed(value: str, names: frozenset[str] | None) -> bool:
    """Whether a ``Host`` header names this server (any port); ``names`` None: any host."""
    return names is None or host_name(value) in names


def is_cross_site(conn: HTTPConnection) -> bool:
    """Whether the browser says a page of another site sent this request (a request
    without ``Sec-Fetch-Site`` and ``Origin``, as from curl, is not)."""
    site = conn.headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        return True
    origin = conn.headers.get("origin")
    if origin is None:
        return False
    # "null" (a sandboxed or privacy-redirected page) has no netloc: refused too
    return urlsplit(origin.strip().lower()).netloc != conn.headers.get("host", "").strip().lower()


class Guards:
    """The middleware (see the module's docstring); ``settings`` are the app's."""

    def __init__(self, app: Any, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.allowed_host_names()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        host = conn.headers.get("host", "")
        if not host_allowed(host, self.hosts):
            log.info("refused a request for host %r (not in the allow-list; see --allowed-host)",
                     host[:100])
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
            else:
                await _json(send, 400, f"host not allowed: {host[:100]!r} is not a name of this "
                                       "server (serve --allowed-host NAME adds one)")
            return
        if scope["type"] == "http":
            method = scope["method"].upper()
            if method in WRITES and is_cross_site(conn):
                await _json(send, 403, "cross-site request refused: a page of another site may "
                                       "not send this; use this server's own pages or an API "
                                       "client")
                return
            if not await self._credentials_ok(conn, method, send):
                return
        await self.app(scope, receive, send)

    async def _credentials_ok(self, conn: HTTPConnection, method: str, send: Any) -> bool:
        """True when the request may go on; otherwise the refusal has been sent."""
        path = conn.scope["path"][len(conn.scope.get("root_path", "")):] or "/"
        level = required_level(method, path)
        if level is None or (level == VIEWER and not self.settings.watching_needs_login()):
            return True
        token = bearer_token(conn)
        cookie = conn.cookies.get(SESSION_COOKIE)
        try:
            if token is not None and await conn.app.state.auth.verify_secret_async(
                    token, client_address(conn)):
                return True
        except LockedOut as exc:
            await _json(send, 429, str(exc), [(b"retry-after", str(exc.retry_after).encode())])
            return False
        if token is None and cookie and conn.app.state.auth.session_from_cookie(cookie) is not None:
            return True
        if path.startswith(("/api/", "/stream/")):
            detail = "wrong token" if token is not None else \
                "log in first (or send Authorization: Bearer <admin password>)"
            await _json(send, 401, detail, [(b"www-authenticate", b"Bearer")])
        else:
            query = conn.scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            location = f"/login?next={quote(target, safe='')}".encode()
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
        return False


async def _json(send: Any, status: int, detail: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send ``{"detail": ...}`` with ``status``, the app's error style."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
