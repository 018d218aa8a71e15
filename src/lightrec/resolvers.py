"""OmegaConf resolvers the shipped configs use; registered once, by ``import lightrec``.

- ``${lightrec_log_root:${hydra.job.name}}``: where a job's Hydra folders go. Training runs
  go under ``paths.log_root``; predict jobs (which write their submission into a training
  run folder) keep their logs under ``paths.predict_log_root``, so that only training runs
  live under ``paths.log_root``.
- ``${lightrec_run_dir:${hydra.job.name},<stamp>}``: a single job's folder,
  ``<log root>/<model_name>/<stamp>``; with ``resume=true`` (or ``resume=<run folder>``)
  the folder of the run being continued, so the resumed job logs into its own run.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def _log_root(job_name: str, *, _root_: DictConfig) -> str:
    if job_name.startswith("predict"):
        return str(_root_.paths.predict_log_root)
    return str(_root_.paths.log_root)


def _run_dir(job_name: str, stamp: str, *, _root_: DictConfig) -> str:
    root = _log_root(job_name, _root_=_root_)
    if not job_name.startswith("predict") and _root_.resume not in (False, None):
        from lightrec.errors import LightrecError
        from lightrec.utils.path_utils import run_to_resume

        try:
            return str(run_to_resume(_root_.resume, root, _root_.model_name).root)
        except LightrecError:
            pass  # nothing to resume: train.fit says so, in one sentence
    return f"{root}/{_root_.model_name}/{stamp}"


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("lightrec_log_root"):
        OmegaConf.register_new_resolver("lightrec_log_root", _log_root)
    if not OmegaConf.has_resolver("lightrec_run_dir"):
        OmegaConf.register_new_resolver("lightrec_run_dir", _run_dir)
