"""The maskwatch web app: live camera page, people, events dashboard, REST API.

    >>> from maskwatch.web import WebSettings, create_app      # doctest: +SKIP
    >>> app = create_app(WebSettings(db="gallery.sqlite3"))    # doctest: +SKIP

``maskwatch serve`` runs it with uvicorn. Modules: :mod:`~maskwatch.web.app` (the
factory), routers :mod:`~maskwatch.web.pages`, :mod:`~maskwatch.web.api`,
:mod:`~maskwatch.web.live` (WebSocket), :mod:`~maskwatch.web.streams` (MJPEG),
:mod:`~maskwatch.web.auth`; below them :mod:`~maskwatch.web.service` (models,
inference thread, live streams, events), :mod:`~maskwatch.web.sources` (server-side
sources), :mod:`~maskwatch.web.security` and :mod:`~maskwatch.web.uploads`.
"""

from __future__ import annotations

from maskwatch.web.settings import WebSettings, is_loopback

__all__ = ["WebSettings", "create_app", "serve"]


def create_app(settings: WebSettings | None = None):  # noqa: ANN201 - FastAPI imported lazily
    """See :func:`maskwatch.web.app.create_app`."""
    from maskwatch.web.app import create_app as _create

    return _create(settings)


def serve(settings: WebSettings, *, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted; prints the URL to open and, at the
    first start, the generated admin password (once)."""
    import uvicorn

    from maskwatch.web.app import BodyLimits
    from maskwatch.web.app import create_app as _create

    app = _create(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            ws_max_size=BodyLimits.from_settings(settings).ws_message,
                            proxy_headers=False)
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets=None) -> None:  # noqa: ANN001
        await original_startup(sockets=sockets)
        if server.should_exit:
            return
        a = app.state.auth
        # a name the Host allow-list accepts (never 0.0.0.0: see WebSettings.allowed_host_names)
        local = ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::")
        host = "localhost" if settings.host in local else settings.host
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
        lines = [f"maskwatch is running: open http://{host}:{port}/ in your browser"]
        if settings.host in ("0.0.0.0", "::"):
            lines.append("  listening on every network interface; put it behind https for remote "
                         "use; other machines reach it by the names given with --allowed-host")
        if settings.watching_needs_login():
            lines.append("  private: the live page, streams and /api/analyze need the admin login "
                         "(--no-private opens them)")
        elif not is_loopback(settings.host):
            lines.append("  not private: anyone who can reach this machine can watch the live page "
                         "and see names")
        if a.generated_password:
            lines.append(f"  admin password (shown only this once; stored hashed in {a.home}): "
                         f"{a.generated_password}")
            lines.append("  set MASKWATCH_ADMIN_PASSWORD to choose your own")
        print("\n".join(lines), flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
