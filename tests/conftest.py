"""Shared fixtures: tiny generated logs and configs composed exactly as the scripts do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import lightrec.cli  # noqa: F401 - registers the run-folder resolver, as the scripts do

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def make_log(
    n_users: int = 40,
    n_items: int = 30,
    per_user: int = 12,
    seed: int = 0,
    string_ids: bool = False,
) -> pd.DataFrame:
    """A small log with structure to learn: user u mostly likes items near u * n_items / n_users."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        centre = u * n_items // n_users
        items = (centre + rng.choice(np.arange(-6, 7), size=per_user, replace=False)) % n_items
        for t, i in enumerate(items):
            rows.append((u, int(i), 1000 + t))
    df = pd.DataFrame(rows, columns=["user", "item", "time"])
    if string_ids:
        df["user"] = "u" + df["user"].astype(str)
        df["item"] = "movie-" + df["item"].astype(str)
    return df


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "log.csv"
    make_log().to_csv(path, index=False)
    return path


def compose_cfg(config_name: str, overrides: list[str], run_dir: Path | None = None):
    """Compose a shipped config as Hydra would for a run, with the run dir set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.set_struct(cfg, True)
    return cfg


def cpu_overrides(tmp_path: Path, csv: Path) -> list[str]:
    """Fast, CPU-safe, everything inside tmp_path."""
    return [
        f"data.path={csv}",
        f"data.data_dir={tmp_path / 'data'}",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        f"paths.log_root={tmp_path / 'saved' / 'hydra_logs'}",
        f"paths.predict_log_root={tmp_path / 'saved' / 'predict_logs'}",
        "data.min_interactions=3",
        "data.batch_size=16",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
    ]


def run_cmd(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run a project command the way a user does; return the CompletedProcess."""
    full_env = {**os.environ, "LIGHTREC_VENV": sys.prefix, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
