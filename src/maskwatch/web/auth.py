"""Login and logout (routes; the logic is in :mod:`maskwatch.web.security`)."""

from __future__ import annotations

import asyncio

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
    client = client_address(request)
    nxt = _safe_next(form.get("next"))
    wait = a.retry_after(client)
    if wait > 0:
        return render(request, "login.html", {"next": nxt, "error": f"Too many failed attempts; try again in "
                                              f"{int(wait) + 1} s."}, status_code=429)
    password = form.get("password")
    ok = isinstance(password, str) and await asyncio.to_thread(a.check_password, password)
    if not ok:
        a.record_failure(client)
        return render(request, "login.html", {"next": nxt, "error": "Wrong password."}, status_code=401)
    a.clear_failures(client)
    resp = RedirectResponse(nxt, status_code=303)
    resp.set_cookie(SESSION_COOKIE, a.new_session(), httponly=True, samesite="strict", secure=is_https(request),
                    max_age=int(request.app.state.settings.session_hours * 3600), path="/")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    await check_form_csrf(request)
    auth(request).end_session(request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp
