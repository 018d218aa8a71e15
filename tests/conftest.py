"""Fixtures; the shared helpers are in helpers.py (tests import them from there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_log
from lightrec.utils.quiet import SILENCED


def pytest_configure(config: pytest.Config) -> None:
    for message in SILENCED:  # the one list of warnings a user cannot act on
        config.addinivalue_line("filterwarnings", f"ignore:{message}")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one core per test worker (./run_tests.sh runs two): torch's thread pools of two
        # workers, and of the processes they start, would otherwise fight over the cores
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    make_log().to_csv(path, index=False)
    return path
