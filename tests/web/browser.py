"""Helpers for the browser tests: the server in a subprocess, Chromium with a fake camera."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO / "test-artefacts"


def browser_skip_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return (f"no Chromium at {CHROMIUM} "
                "(Debian: apt-get install chromium; .ci/run does it as root)")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(NamedTuple):
    url: str  # base URL, http://127.0.0.1:PORT
    pid: int


@contextmanager
def running_server(home: Path, password: str, *extra: str,
                   timeout: float = 90.0) -> Iterator[Server]:
    """``maskwatch serve`` in a subprocess with ``MASKWATCH_HOME=home``; yields its URL and pid.

    Its output goes to ``server-PORT.log`` beside ``home``. Used by the browser tests and
    by ``benchmarks/bench_web.py``.
    """
    port = free_port()
    env = dict(os.environ, MASKWATCH_HOME=str(home), MASKWATCH_ADMIN_PASSWORD=password,
               PYTHONUNBUFFERED="1")
    log = open(home.parent / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "maskwatch.cli", "serve", "--port", str(port),
                             *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: "
                                   f"{(home.parent / f'server-{port}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.3)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def chromium_args(y4m: Path) -> list[str]:
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}",
            "--autoplay-policy=no-user-gesture-required"]


def artefact(name: str) -> Path:
    ARTEFACTS.mkdir(exist_ok=True)
    return ARTEFACTS / name

