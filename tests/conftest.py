"""Shared test fixtures.

Tests that need the real data in ``../shared/datasets`` use the ``datasets`` fixture,
which skips with a reason when the folder is absent, so that a fresh clone passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MASKWATCH_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """Path to ``../shared/datasets``; skips the test when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {DATASETS} (set MASKWATCH_DATASETS)")
    return DATASETS
