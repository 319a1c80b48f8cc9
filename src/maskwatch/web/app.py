"""The FastAPI application: ``create_app(settings)``.

One :class:`~maskwatch.web.service.EngineService` (models, gallery, inference thread)
and one :class:`~maskwatch.web.sources.SourceManager` (server-side cameras, files and
URLs) are shared by all requests; they start with the app and stop with it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
from maskwatch.web.guards import Guards
from maskwatch.web.responses import problem_schema
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


#: Body limit of routes that take no file (JSON bodies, the login and the page forms), bytes.
SMALL_BODY_BYTES = 64 * 1024
#: Room for a multipart form's boundaries, part headers (file names) and text fields, bytes:
#: once per request, and per file of an enrolment.
FORM_OVERHEAD_BYTES = 64 * 1024
FILE_PART_OVERHEAD_BYTES = 4 * 1024
#: Live WebSocket frames start with a 4-byte sequence number (see :mod:`maskwatch.web.live`).
WS_FRAME_HEADER_BYTES = 4


@dataclass(frozen=True)
class BodyLimits:
    """The largest request each kind of route accepts, bytes: the one table of body limits.

    Attributes:
        small: JSON routes, ``/login``, ``/logout`` and the page forms without files.
        upload: ``POST /api/analyze``: one photo of ``max_upload_bytes`` and its form.
        enrol: enrolment (``POST /api/people``, ``/api/people/{name}/photos``, the
            ``/people`` page form): ``max_upload_files`` photos and their form.
        ws_message: one live WebSocket message: a frame of ``max_upload_bytes`` and its
            sequence number (also uvicorn's ``ws_max_size`` in :func:`maskwatch.web.serve`).
    """

    small: int
    upload: int
    enrol: int
    ws_message: int

    @classmethod
    def from_settings(cls, s: WebSettings) -> BodyLimits:
        return cls(small=SMALL_BODY_BYTES,
                   upload=s.max_upload_bytes + FORM_OVERHEAD_BYTES,
                   enrol=s.max_upload_files * (s.max_upload_bytes + FILE_PART_OVERHEAD_BYTES)
                   + FORM_OVERHEAD_BYTES,
                   ws_message=s.max_upload_bytes + WS_FRAME_HEADER_BYTES)

    def for_request(self, method: str, path: str) -> int:
        """The limit of an HTTP request (``path`` as in the ASGI scope: decoded)."""
        if method == "POST":
            if path == "/api/analyze":
                return self.upload
            if path in ("/api/people", "/people") or _PHOTOS_PATH.fullmatch(path):
                return self.enrol
        return self.small


_PHOTOS_PATH = re.compile(r"/api/people/[^/]+/photos")


class BodyLimit:
    """ASGI middleware: refuse request bodies over the route's limit (:class:`BodyLimits`)
    with 413, whether or not the client states a Content-Length, before more of the body
    is read; and close a live WebSocket (1009, "message too big") on an oversized message.

    A stated Content-Length over the limit is refused before the app runs. Otherwise the
    body is counted as the app reads it; past the limit the read raises, and whatever the
    app makes of that (a form parser's 400, a handler that catches everything) is
    replaced by the 413: once the limit is crossed, nothing the app sends goes out.
    """

    def __init__(self, app: Any, limits: BodyLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_request(scope.get("method", "GET"), scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(send, limit)
            return
        seen = 0
        exceeded = started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, exceeded
            if exceeded:
                raise _TooLarge()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to the aborted read: the 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            log.info("refused %s %s: body over %d bytes", scope.get("method"), scope.get("path"),
                     limit)
            await self._refuse(send, limit)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = self.limits.ws_message

        async def limited_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.receive":
                size = len(message.get("bytes") or b"") + len((message.get("text") or "").encode())
                if size > limit:
                    await send({"type": "websocket.close", "code": 1009,
                                "reason": f"message over the limit of {limit:,} bytes"})
                    return {"type": "websocket.disconnect", "code": 1009}
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _refuse(send: Any, limit: int) -> None:
        body = json.dumps({"detail": f"the request is larger than the limit of {limit:,} bytes "
                                     "for this route"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
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


def cluster_link(settings: WebSettings) -> Any:
    """The :class:`~maskwatch.web.cluster_sources.ClusterLink` of ``settings.cluster``,
    whose workers build their engine from the server's settings (a ``local:N`` cluster's
    workers share this machine's cores: each model gets cores / N threads)."""
    from maskwatch.cluster import local_workers
    from maskwatch.web.cluster_sources import ClusterLink

    workers = local_workers(settings.cluster)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers else None
    return ClusterLink(settings.cluster, settings.engine_settings(threads=threads))


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
                                   attempts=settings.login_attempts,
                                   window_s=settings.login_window_s)
        app.state.service = EngineService(settings)
        link = None
        try:
            if settings.cluster:
                link = cluster_link(settings)
            app.state.sources = SourceManager(app.state.service, link=link,
                                              max_sources=64 if link else 8)
            for spec in settings.sources:
                app.state.sources.add(spec, trusted=True)
        except BaseException:
            if link is not None:
                link.close()
            app.state.service.close()
            raise
        try:
            yield
        finally:
            app.state.sources.close()
            if link is not None:
                link.close()
            app.state.service.close()

    app = FastAPI(
        title="maskwatch",
        version=__version__,
        description="Faces, mask state and identity from cameras and photos. Routes that change "
                    "people, events or sources need the admin: a session cookie from /login (with "
                    "the page's CSRF token in `X-CSRF-Token`) or "
                    "`Authorization: Bearer <admin password>`.",
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

    # A body limit per kind of route; inside the guards, so a request refused for its Host or
    # its missing credentials is not read at all.
    app.state.body_limits = BodyLimits.from_settings(settings)
    app.add_middleware(BodyLimit, limits=app.state.body_limits)
    # Outermost (added last): Host allow-list, cross-site POSTs, credentials before the body.
    app.add_middleware(Guards, settings=settings)

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
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors())
        return JSONResponse({"detail": f"bad request: {problems}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)

    def _openapi() -> dict[str, Any]:
        """FastAPI's schema with the 422 body the handler above really gives (a Problem)."""
        if app.openapi_schema is None:
            app.openapi_schema = problem_schema(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = _openapi  # type: ignore[method-assign]
    return app
