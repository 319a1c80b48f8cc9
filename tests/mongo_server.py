"""A real MongoDB wire-protocol server (SecantusDB) that tests can stop and start again.

Used by the ``mongo_server`` fixture of ``tests/gallery/conftest.py`` and by the outage
tests, which kill the server in the middle of live analysis and bring it back on the
same port with the same data.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secantusd_executable() -> str | None:
    """The ``secantusd-py`` beside this Python, or on PATH, or None."""
    beside = Path(sys.executable).with_name("secantusd-py")
    return str(beside) if beside.is_file() else shutil.which("secantusd-py")


class MongoServer:
    """``secantusd-py`` on 127.0.0.1 with its data in ``folder``.

    Args:
        folder: data and log folder (created).
        port: fixed port (default: a free one), kept across :meth:`stop` / :meth:`start`.

    ``url`` is ``mongodb://127.0.0.1:PORT``. Use as a context manager, or call
    :meth:`start` and :meth:`stop` (``kill=True`` sends SIGKILL, as a crash would).
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        exe = secantusd_executable()
        if exe is None:
            raise FileNotFoundError("secantusd-py not found: pip install secantusdb")
        self.exe = exe
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers a ping."""
        import pymongo

        if self.proc is not None and self.proc.poll() is None:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([self.exe, "--host", "127.0.0.1", "--port", str(self.port),
                                      "--storage-path", str(self.folder / "db"),
                                      "--log-level", "WARNING"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500) as c:
                    c.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                if time.monotonic() > deadline:
                    self.stop(kill=True)
                    raise RuntimeError("secantusd-py did not accept connections "
                                       f"within {timeout:g} s") from None
                time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``, else SIGTERM) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MongoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
