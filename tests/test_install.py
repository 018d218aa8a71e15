"""An installable package: a wheel built from the clone carries the configs, and its
``lightrec`` command trains, predicts and runs ``best`` from a folder outside the clone, with
nothing of the clone on the path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from helpers import ROOT, check_submission, make_log


def _build_wheel(out: Path) -> Path:
    """``pip wheel`` of the clone (with the environment's setuptools when it is new enough
    for pyproject.toml, else in pip's own build environment from PyPI)."""
    args = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    setuptools = importlib.util.find_spec("setuptools")
    if setuptools is not None:
        import setuptools as st

        if int(st.__version__.split(".")[0]) >= 77:
            args.insert(5, "--no-build-isolation")
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("lightrec-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_installs_and_runs_outside_the_clone(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightrec/configs/ease.yaml" in names
    assert "lightrec/configs/common/default_setup.yaml" in names
    assert "lightrec/configs/recipe/competition.yaml" in names
    site = tmp_path / "site"  # the wheel alone; its dependencies come from this environment
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"  # no configs/, no src/ here
    work.mkdir()
    make_log(n_users=40).to_csv(work / "log.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import lightrec; print(lightrec.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the clone
    common = [
        "data.path=log.csv",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        "data.min_interactions=3",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
    ]
    command = str(site / "bin" / "lightrec")  # the wheel's own console script
    best = subprocess.run(
        [command, "best", *common, "best.members=[ease,pop]"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert best.returncode == 0, best.stderr[-2000:]
    submission = work / best.stdout.strip().splitlines()[-1]
    check_submission(submission, pd.read_csv(work / "log.csv"), k=10)
    assert len(list((work / "saved" / "hydra_logs").rglob("metrics.json"))) == 2
