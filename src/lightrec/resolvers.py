"""OmegaConf resolvers the shipped configs use; registered once, by ``import lightrec``.

- ``${lightrec_log_root:${hydra.job.name}}``: where a job's Hydra folder goes. Training runs
  go under ``paths.log_root``; predict jobs (which write their submission into a training
  run folder) keep their logs under ``paths.predict_log_root``, so that only training runs
  live under ``paths.log_root``.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def _log_root(job_name: str, *, _root_: DictConfig) -> str:
    if job_name.startswith("predict"):
        return str(_root_.paths.predict_log_root)
    return str(_root_.paths.log_root)


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("lightrec_log_root"):
        OmegaConf.register_new_resolver("lightrec_log_root", _log_root)
