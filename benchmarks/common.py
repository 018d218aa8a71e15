"""What the benchmarks share: the shipped configs, composed as the entry does.

Benchmarks build the data module and the model from ``configs/`` (the one source of
defaults), so a benchmark measures what a user runs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lightrec.jobs import compose_job

ROOT = Path(__file__).resolve().parents[1]


def shipped_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """``configs/<name>.yaml`` with Hydra overrides, without Hydra's own node."""
    return compose_job(name, overrides or [])
