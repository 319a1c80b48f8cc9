"""Login and logout (routes; the logic is in :mod:`maskwatch.web.security`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from maskwatch.web.deps import (
    SESSION_COOKIE,
    auth,
    check_form_csrf,
    client_address,
    is_https,
    render,
)
from maskwatch.web.security import LockedOut

router = APIRouter(include_in_schema=False)


def _safe_next(value: object) -> str:
    """Only local paths: a login link cannot send the browser to another site."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query name
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await check_form_csrf(request)
    a = auth(request)
    nxt = _safe_next(form.get("next"))
    password = form.get("password")
    try:
        # the one lockout shared with Bearer tokens; scrypt runs off the event loop
        ok = (isinstance(password, str)
              and await a.verify_secret_async(password, client_address(request)))
    except LockedOut as exc:
        resp = render(request, "login.html",
                      {"next": nxt, "error": f"{str(exc)[:1].upper()}{str(exc)[1:]}."},
                      status_code=429)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if not ok:
        return render(request, "login.html", {"next": nxt, "error": "Wrong password."},
                      status_code=401)
    resp = RedirectResponse(nxt, status_code=303)
    resp.set_cookie(SESSION_COOKIE, a.new_session(), httponly=True, samesite="strict",
                    secure=is_https(request),
                    max_age=int(request.app.state.settings.session_hours * 3600), path="/")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    await check_form_csrf(request)
    auth(request).end_session(request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
