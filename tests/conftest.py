"""Shared test fixtures.

Tests that need the real data in ``../shared/datasets`` use the ``datasets`` fixture,
which skips with a reason when the folder is absent, so that a fresh clone passes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.mjpeg import MJPEGServer

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MASKWATCH_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """Path to ``../shared/datasets``; skips the test when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {DATASETS} (set MASKWATCH_DATASETS)")
    return DATASETS


@pytest.fixture
def mjpeg_server() -> Iterator[MJPEGServer]:
    """A real MJPEG stream on 127.0.0.1: 6 frames per connection, 2 connections, then 503."""
    # imported here so that a plain ``pytest`` (repository root not on sys.path) still
    # collects the tests that do not use it
    from tests.mjpeg import MJPEGServer

    with MJPEGServer() as server:
        yield server
