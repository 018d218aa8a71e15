"""Fixtures; the shared helpers are in helpers.py (tests import them from there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_log


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    make_log().to_csv(path, index=False)
    return path
