"""OmegaConf resolvers the shipped configs use; registered once, by ``import lightrec``.

- ``${lightrec_log_root:${hydra.job.name}}``: where a job's Hydra folders go. Training runs
  go under ``paths.log_root``; predict jobs (which write their submission into a training
  run folder) keep their logs under ``paths.predict_log_root``, so that only training runs
  live under ``paths.log_root``.
- ``${lightrec_job_dir:${hydra.job.num},${hydra.overrides.task}}``: a sweep job's folder,
  named by its number and the overrides that set it apart.
- ``${lightrec_run_dir:${hydra.job.name},<stamp>}``: a single job's folder,
  ``<log root>/<model_name>/<stamp>``, claimed with an atomic ``mkdir`` (``<stamp>-1``,
  ``-2``, ... when jobs start in the same second), so runs started together never share a
  folder; with ``resume=true`` (or ``resume=<run folder>``) the folder of the run being
  continued, so the resumed job logs into its own run.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def _log_root(job_name: str, *, _root_: DictConfig) -> str:
    if job_name.startswith("predict"):
        return str(_root_.paths.predict_log_root)
    return str(_root_.paths.log_root)


_claimed: dict[str, str] = {}  # this process's job folder, per wanted path


def _run_dir(job_name: str, stamp: str, *, _root_: DictConfig) -> str:
    root = _log_root(job_name, _root_=_root_)
    if not job_name.startswith("predict") and _root_.resume not in (False, None):
        from lightrec.errors import LightrecError
        from lightrec.utils.path_utils import run_to_resume

        try:
            return str(run_to_resume(_root_.resume, root, _root_.model_name).root)
        except LightrecError:
            pass  # nothing to resume: train.fit says so, in one sentence
    return claim(f"{root}/{_root_.model_name}/{stamp}")


def claim(wanted: str) -> str:
    """``wanted``, or ``wanted-1``, ``wanted-2``, ...: the first folder this process could
    create itself (the same answer every time this process asks)."""
    if wanted in _claimed:
        return _claimed[wanted]
    if any(os.environ.get(v, "0") != "0" for v in ("RANK", "SLURM_PROCID", "LOCAL_RANK")):
        return wanted  # a later process of a data-parallel job: rank 0 claims the folder
    path = Path(wanted).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return wanted  # an unwritable place: the pre-flight and Hydra report it
    for n in range(1000):
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError:
            return wanted
        _claimed[wanted] = str(candidate)
        return str(candidate)
    return wanted


# what a sweep job's folder is not named by: where things go, not what the job computes
NOT_IN_JOB_NAMES = (
    "paths.",
    "data.path",
    "data.data_dir",
    "data_cache.",
    "hparams_search",
    "resume",
    "run_dir",
    "ckpt_path",
    "progress",
    "hydra.",
)


def _job_dir(num: int, task_overrides: list) -> str:
    """A sweep job's folder: its number and the overrides that set it apart, e.g.
    ``3_model.dropout=0.3,model.lr=0.01`` (TensorBoard's run list shows this name)."""
    kept = sorted(
        o for o in map(str, task_overrides) if not o.lstrip("+~").startswith(NOT_IN_JOB_NAMES)
    )
    name = ",".join(kept).replace("/", "_")
    if len(name) > 120:  # file names have a limit; keep it readable and unique
        import hashlib

        name = name[:100] + "..." + hashlib.md5(name.encode()).hexdigest()[:8]
    return f"{num}_{name}" if name else str(num)


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("lightrec_log_root"):
        OmegaConf.register_new_resolver("lightrec_log_root", _log_root)
    if not OmegaConf.has_resolver("lightrec_run_dir"):
        OmegaConf.register_new_resolver("lightrec_run_dir", _run_dir)
    if not OmegaConf.has_resolver("lightrec_job_dir"):
        OmegaConf.register_new_resolver("lightrec_job_dir", _job_dir)
