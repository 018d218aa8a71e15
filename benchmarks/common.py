"""What the benchmarks share: the shipped configs, composed as the entry scripts do.

Benchmarks build the data module and the model from ``configs/`` (the one source of
defaults), so a benchmark measures what a user runs.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

import lightrec  # noqa: F401 - registers the configs' resolvers

ROOT = Path(__file__).resolve().parents[1]


def shipped_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """``configs/<name>.yaml`` with Hydra overrides, without Hydra's own node."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides or [])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg
