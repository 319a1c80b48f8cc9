"""Gallery fixtures: every store runs the same tests.

The MongoDB store is tested against a real MongoDB wire-protocol server process,
SecantusDB (``pip install secantusdb``), started once per test session on a free
port with its data in a temporary folder; each test gets its own database. When the
``secantusd-py`` executable is missing the MongoDB tests are skipped with a reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.mongo_server import MongoServer, secantusd_executable

from maskwatch.gallery import Gallery, open_gallery

STORES = ["sqlite", "mongo"]


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mongodb://127.0.0.1:PORT`` of a SecantusDB server process for this session."""
    if secantusd_executable() is None:
        pytest.skip("secantusd-py not found: "
                    "pip install secantusdb to run the MongoDB gallery tests")
    pytest.importorskip("pymongo", reason="pymongo is needed for the MongoDB gallery tests")
    server = MongoServer(tmp_path_factory.mktemp("secantus"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """Which store the test runs on."""
    return request.param


@pytest.fixture
def make_url(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Returns a function giving the URL of a new, empty store of the test's kind."""
    if store == "mongo":
        server = request.getfixturevalue("mongo_server")
        return lambda: f"{server}/test_{uuid.uuid4().hex[:12]}"
    return lambda: str(tmp_path / f"g-{uuid.uuid4().hex[:8]}.sqlite3")


@pytest.fixture
def gallery_url(make_url: Callable[[], str]) -> str:
    return make_url()


@pytest.fixture
def gallery(gallery_url: str) -> Iterator[Gallery]:
    """A fresh, empty gallery of each store kind."""
    g = open_gallery(gallery_url)
    try:
        yield g
    finally:
        g.close()
