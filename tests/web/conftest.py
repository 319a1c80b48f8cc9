"""Fixtures for the web app: a real app (real models, a SQLite store in tmp) per module."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2
    from fastapi.testclient import TestClient

from tests.mongo_server import MongoServer, secantusd_executable  # noqa: E402

from maskwatch.web import WebSettings, create_app  # noqa: E402

PASSWORD = "correct horse battery staple"
#: Headers with the admin password. Pass a copy where a callee may add to it (starlette's
#: ``TestClient.websocket_connect`` adds its handshake headers to the dict it is given).
BEARER = {"Authorization": f"Bearer {PASSWORD}"}


def make_settings(tmp: Path, **overrides: object) -> WebSettings:
    base: dict[str, object] = {"home": tmp / "home", "db": str(tmp / "home" / "gallery.sqlite3"),
                               "admin_password": PASSWORD, "max_upload_bytes": 2 * 1024 * 1024,
                               "max_pixels": 4_000_000, "login_attempts": 3, "login_window_s": 60.0,
                               # the TestClient's Host header; the default list is localhost
                               # names only
                               "allowed_hosts": ["testserver"]}
    base.update(overrides)
    return WebSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def web_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def client(web_tmp: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(web_tmp))
    with TestClient(app) as c:
        yield c


def csrf_of(client: TestClient, path: str = "/") -> str:
    """The CSRF token of a page (and its seed cookie is now in the client)."""
    html = client.get(path).text
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "page without a CSRF token"
    return m.group(1)


def login(client: TestClient, password: str = PASSWORD) -> tuple[int, str]:
    """Log in through the form; returns (status, CSRF token for later calls)."""
    token = csrf_of(client, "/login")
    r = client.post("/login", data={"password": password, "csrf_token": token, "next": "/people"},
                    follow_redirects=False)
    return r.status_code, token


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoServer]:
    """A SecantusDB server of the test's own (tests kill and restart it); skips without it."""
    if secantusd_executable() is None:
        pytest.skip("secantusd-py not found: pip install secantusdb")
    pytest.importorskip("pymongo")
    server = MongoServer(tmp_path / "secantus")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)
