"""OmegaConf resolvers the shipped configs use; registered once, by ``import lightrec``.
Neither makes anything: they only name.

- ``${lightrec_view:${model._target_}}``: the data view the model's class declares
  (``data_view``), so ``data.view`` follows the model and a contrary override is caught by
  the config check.
- ``${lightrec_job_dir:${hydra.job.num},${hydra.overrides.task}}``: a sweep job's folder,
  named by its number and the overrides that set it apart.

Where a job's folder goes is :func:`lightrec.utils.path_utils.claim_job_dir`'s, called by
the entry (:mod:`lightrec.cli`) once the job has passed its checks.
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

from lightrec.errors import LightrecError


def _view(target: str) -> str:
    from hydra.utils import get_class

    try:
        if not str(target).startswith("lightrec."):  # nothing else is imported
            raise ValueError(target)
        return str(get_class(target).data_view)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not importable, or not one of our models
        raise LightrecError(
            f"model._target_={target!r} is not a lightrec model class (a RecommenderModule)"
        ) from None


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
    ``3_model.dropout=0.3,model.lr=0.01`` (TensorBoard's run list shows this name).

    >>> _job_dir(3, ["model.lr=0.01", "paths.log_root=/x", "model.dropout=0.3"])
    '3_model.dropout=0.3,model.lr=0.01'
    """
    kept = sorted(
        o for o in map(str, task_overrides) if not o.lstrip("+~").startswith(NOT_IN_JOB_NAMES)
    )
    name = ",".join(kept).replace("/", "_")
    if len(name) > 120:  # file names have a limit; keep it readable and unique
        name = name[:100] + "..." + hashlib.md5(name.encode()).hexdigest()[:8]
    return f"{num}_{name}" if name else str(num)


def register() -> None:
    """Register the resolvers (idempotent)."""
    if not OmegaConf.has_resolver("lightrec_view"):
        OmegaConf.register_new_resolver("lightrec_view", _view)
    if not OmegaConf.has_resolver("lightrec_job_dir"):
        OmegaConf.register_new_resolver("lightrec_job_dir", _job_dir)
