"""What the tests share: tiny generated logs, configs composed exactly as the scripts do,
objects built from the shipped YAML (the one source of defaults), and subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightrec  # noqa: F401 - registers the configs' resolvers, as the scripts do
from lightrec.data.recsys_data import RecSysDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
MULTI_VAE_TAGS = {
    "train/loss",
    "train/recon",
    "train/kl",
    "train/kl_weight",
    "val/recall@10",
    "val/ndcg@10",
}


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


def compose_cfg(config_name: str, overrides: list[str], run_dir: Path | None = None) -> DictConfig:
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


def block(config_name: str, name: str) -> dict[str, Any]:
    """A block of a shipped config as a plain, resolved dict (``???`` left as it is)."""
    out = OmegaConf.to_container(compose_cfg(config_name, [])[name], resolve=True)
    assert isinstance(out, dict)
    return out


def build_model(config_name: str, num_items: int, **overrides: Any):
    """The model of a shipped config, its YAML values overridden by ``overrides``."""
    args = block(config_name, "model")
    cls = get_class(args.pop("_target_"))
    return cls(**{**args, "num_items": num_items, **overrides})


def dm_for(csv: Path, tmp_path: Path, **overrides: Any) -> RecSysDataModule:
    """The shipped ``data:`` block on ``csv`` (no cache unless asked), prepared and set up."""
    args = block("multi_vae_v2", "data")
    args.pop("_target_")
    args.update(
        path=str(csv),
        data_dir=str(tmp_path / "data"),
        min_interactions=1,
        use_cache=False,
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        eval_batch_size=8,
    )
    dm = RecSysDataModule(**{**args, **overrides})
    dm.prepare_data()
    dm.setup()
    return dm


def run_cmd(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run a project command the way a user does; return the CompletedProcess."""
    full_env = {**os.environ, "LIGHTREC_VENV": sys.prefix, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def only_metrics(log_root: Path) -> dict:
    """The metrics.json of the one finished run under ``log_root`` (fails if there are more)."""
    (m,) = log_root.rglob("metrics.json")
    return json.loads(m.read_text())


def tensorboard_tags(run_dir: Path) -> set[str]:
    tags: set[str] = set()
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        ea = EventAccumulator(str(f))
        ea.Reload()
        tags |= set(ea.Tags()["scalars"])
    return tags


def check_submission(path: Path, log: pd.DataFrame, k: int) -> pd.DataFrame:
    """The submission contract: header, every user, k distinct unseen known items each."""
    sub = pd.read_csv(path)
    assert list(sub.columns) == ["user", "item"]
    assert set(sub.user) == set(log.user)
    assert (sub.groupby("user").size() == k).all()
    assert not sub.duplicated().any()
    seen = set(zip(log.user, log.item, strict=True))
    assert not any((u, i) in seen for u, i in zip(sub.user, sub.item, strict=True))
    assert set(sub.item) <= set(log.item)
    return sub
