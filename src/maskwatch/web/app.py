"""The FastAPI application: ``create_app(settings)``.

One :class:`~maskwatch.web.service.EngineService` (models, gallery, inference thread)
and one :class:`~maskwatch.web.sources.SourceManager` (server-side cameras, files and
URLs) are shared by all requests; they start with the app and stop with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from swagger_ui_bundle import swagger_ui_path

from maskwatch import __version__
from maskwatch.gallery import (
    GalleryError,
    GalleryUnavailable,
    InvalidName,
    PersonExists,
    PersonNotFound,
)
from maskwatch.web.deps import LoginRequired
from maskwatch.web.security import AdminAuth
from maskwatch.web.service import EngineService
from maskwatch.web.settings import WebSettings
from maskwatch.web.uploads import UploadError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


def gallery_status(exc: GalleryError) -> int:
    """HTTP status for a gallery error."""
    from maskwatch.enrol import EnrolError

    if isinstance(exc, PersonNotFound):
        return 404
    if isinstance(exc, PersonExists):
        return 409
    if isinstance(exc, (InvalidName, EnrolError)):
        return 422
    if isinstance(exc, GalleryUnavailable):
        return 503
    return 400


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, whether or
    not the client states a Content-Length, before the body is stored anywhere."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = (b'{"detail":"the request is larger than the limit of %d bytes"}' % self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maskwatch API</title>
<link rel="stylesheet" href="/static/swagger/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>
"""


def create_app(settings: WebSettings | None = None) -> FastAPI:
    """Build the web app.

    Args:
        settings: server settings; default :class:`WebSettings` (localhost, the default
            gallery, password from ``MASKWATCH_ADMIN_PASSWORD`` or generated).

    The models load and the server sources start when the app starts (its lifespan),
    so ``TestClient(app)`` must be used as a context manager.
    """
    from maskwatch.web import api, auth, live, pages, streams
    from maskwatch.web.sources import SourceManager

    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home = settings.resolved_home()
        app.state.auth = AdminAuth(home, settings.resolved_admin_password(),
                                   session_s=settings.session_hours * 3600,
                                   attempts=settings.login_attempts, window_s=settings.login_window_s)
        app.state.service = EngineService(settings)
        app.state.sources = SourceManager(app.state.service)
        for spec in settings.sources:
            app.state.sources.add(spec, trusted=True)
        app.state.service.purge_events()
        try:
            yield
        finally:
            app.state.sources.close()
            app.state.service.close()

    app = FastAPI(
        title="maskwatch",
        version=__version__,
        description="Faces, mask state and identity from cameras and photos. Routes that change people, "
                    "events or sources need the admin: a session cookie from /login (with the page's "
                    "CSRF token in `X-CSRF-Token`) or `Authorization: Bearer <admin password>`.",
        lifespan=lifespan,
        docs_url=None,   # FastAPI's own /docs loads Swagger UI from a CDN: served locally below
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        """The OpenAPI documentation, with Swagger UI from the swagger-ui-bundle package
        (works offline; no script from another origin, none inline)."""
        return HTMLResponse(DOCS_PAGE)

    # Room for every photo of one enrolment plus the form fields.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes * settings.max_upload_files + 1024 * 1024)

    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(live.router)
    app.include_router(streams.router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(GalleryError)
    async def _gallery(request: Request, exc: GalleryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=gallery_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": f"bad request: {problems}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app
