"""Shared request helpers: the app's objects, admin checks, CSRF, page rendering."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.requests import HTTPConnection

from maskwatch.web.security import AdminAuth, LockedOut
from maskwatch.web.service import EngineService

SESSION_COOKIE = "mw_session"
CSRF_COOKIE = "mw_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: Sent with every page: no inline scripts, nothing from another origin.
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")


class LoginRequired(Exception):
    """A page that needs the admin: the handler redirects to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def service(request: Request) -> EngineService:
    return request.app.state.service


def auth(request: HTTPConnection) -> AdminAuth:
    return request.app.state.auth


def client_address(conn: HTTPConnection) -> str:
    """The peer's address: the unit of the login lockout. Headers such as
    X-Forwarded-For are not trusted (uvicorn runs with ``proxy_headers=False``)."""
    return conn.client.host if conn.client else "unknown"


def is_https(request: Request) -> bool:
    forced = request.app.state.settings.https
    return forced if forced is not None else request.url.scheme == "https"


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when there is no such header."""
    header = conn.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def locked_out(exc: LockedOut) -> HTTPException:
    """The 429 answer for a locked-out address, with Retry-After in seconds."""
    return HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)})


def is_admin(request: HTTPConnection) -> bool:
    """True for a valid session cookie, or a Bearer token already verified (see
    :meth:`AdminAuth.known_secret`). Runs no scrypt, so sync code may call it; routes
    decide with :func:`authenticate`, which verifies an unknown token (off the event loop)."""
    token = bearer_token(request)
    if token is not None:
        return (auth(request).known_secret(token)
                and auth(request).retry_after(client_address(request)) == 0)
    return auth(request).session_from_cookie(request.cookies.get(SESSION_COOKIE)) is not None


async def authenticate(conn: HTTPConnection) -> bool:
    """True for ``Authorization: Bearer <admin password>`` (checked under the lockout, off
    the event loop) or, without that header, a valid session cookie.

    Raises:
        LockedOut: the client's address has used up its attempts (Bearer only).
    """
    token = bearer_token(conn)
    if token is not None:
        return await auth(conn).verify_secret_async(token, client_address(conn))
    return auth(conn).session_from_cookie(conn.cookies.get(SESSION_COOKIE)) is not None


def _csrf_ok(request: Request, form_token: str | None = None) -> bool:
    token = form_token or request.headers.get(CSRF_HEADER)
    return auth(request).check_csrf(request.cookies.get(CSRF_COOKIE), token)


async def require_admin(request: Request) -> None:
    """API dependency: 401 without credentials; 429 for a locked-out address that sends a
    Bearer token; 403 when a cookie session changes state without a valid CSRF token
    (header ``X-CSRF-Token``). The guard middleware (:mod:`maskwatch.web.guards`) has
    already refused requests without any valid credential; this is the second check."""
    token = bearer_token(request)
    if token is not None:
        try:
            ok = await auth(request).verify_secret_async(token, client_address(request))
        except LockedOut as exc:
            raise locked_out(exc) from None
        if not ok:
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})
        return
    if auth(request).session_from_cookie(request.cookies.get(SESSION_COOKIE)) is None:
        raise HTTPException(401, "log in first (or send Authorization: Bearer <admin password>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS and not _csrf_ok(request):
        raise HTTPException(403, "missing or wrong CSRF token (send the page's token in "
                                 "X-CSRF-Token)")


async def require_viewer(request: Request) -> None:
    """API dependency for routes that show faces or names: open unless the server is
    private (``WebSettings.watching_needs_login``), then as :func:`require_admin`."""
    if request.app.state.settings.watching_needs_login():
        await require_admin(request)


async def require_viewer_page(request: Request) -> None:
    """Page dependency: the login page first when the server is private."""
    if request.app.state.settings.watching_needs_login():
        await require_admin_page(request)


async def require_admin_page(request: Request) -> None:
    """Page dependency: redirect to the login page when not logged in (429 for a
    locked-out address that sends a Bearer token)."""
    try:
        ok = await authenticate(request)
    except LockedOut as exc:
        raise locked_out(exc) from None
    if not ok:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)


async def check_form_csrf(request: Request) -> dict[str, Any]:
    """Parse a form (multipart or urlencoded) and check its CSRF field; 403 when wrong."""
    form = await request.form(max_files=request.app.state.settings.max_upload_files,
                              max_part_size=request.app.state.settings.max_upload_bytes + 1)
    token = form.get(CSRF_FIELD)
    if not _csrf_ok(request, token if isinstance(token, str) else None):
        raise HTTPException(403, "the form is missing its CSRF token or it is wrong; reload the "
                                 "page and try again")
    return form  # type: ignore[return-value]


def render(request: Request, template: str, context: dict[str, Any] | None = None,
           status_code: int = 200) -> HTMLResponse:
    """A page from ``templates/`` with the CSRF token, the login state and security headers."""
    a = auth(request)
    seed = request.cookies.get(CSRF_COOKIE)
    new_seed = None
    if not seed or len(seed) > 64:
        seed = new_seed = a.new_csrf_seed()
    ctx = {"request": request, "csrf_token": a.csrf_token(seed), "is_admin": is_admin(request),
           "path": request.url.path, "quote": lambda s: quote(str(s), safe="")}
    ctx.update(context or {})
    resp = request.app.state.templates.TemplateResponse(request, template, ctx,
                                                        status_code=status_code)
    if new_seed:
        resp.set_cookie(CSRF_COOKIE, new_seed, httponly=True, samesite="strict",
                        secure=is_https(request), path="/")
    resp.headers["Content-Security-Policy"] = CSP
    return resp
