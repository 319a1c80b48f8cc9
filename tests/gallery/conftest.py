"""Gallery fixtures: every store runs the same tests.

The MongoDB store is tested against a real MongoDB wire-protocol server process,
SecantusDB (``pip install secantusdb``), started once per test session on a free
port with its data in a temporary folder; each test gets its own database. When the
``secantusd-py`` executable is missing the MongoDB tests are skipped with a reason.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maskwatch.gallery import Gallery, open_gallery

STORES = ["sqlite", "mongo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secantusd_executable() -> str | None:
    beside = Path(sys.executable).with_name("secantusd-py")
    return str(beside) if beside.is_file() else shutil.which("secantusd-py")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mongodb://127.0.0.1:PORT`` of a SecantusDB server process for this session."""
    exe = secantusd_executable()
    if exe is None:
        pytest.skip("secantusd-py not found: pip install secantusdb to run the MongoDB gallery tests")
    pytest.importorskip("pymongo", reason="pymongo is needed for the MongoDB gallery tests")
    import pymongo

    port = free_port()
    data = tmp_path_factory.mktemp("secantus")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                             str(data / "db"), "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT)
    url = f"mongodb://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"secantusd-py exited with {proc.returncode}: "
                            f"{(data / 'server.log').read_text(errors='replace')[-2000:]}")
            try:
                with pymongo.MongoClient(url, serverSelectionTimeoutMS=500) as c:
                    c.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                if time.monotonic() > deadline:
                    pytest.fail("secantusd-py did not accept connections within 30 s")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


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
