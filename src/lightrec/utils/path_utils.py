"""The one place that knows where runs live.

A training run folder (Hydra's run dir, ``${paths.log_root}/${model_name}/<date>/<time>``,
or ``.../<time>-multirun/<n>`` for sweeps) holds::

    config.yaml        resolved config of the run
    id_maps.json       original user and item ids, in encoded order
    checkpoints/       best.ckpt (monitored metric) and last.ckpt
    tensorboard/       event files
    metrics.json       written last: its presence marks the run as finished
    submission.csv     written by predict

``get_directories(cfg, "predict")`` picks the latest finished run of ``cfg.model_name``,
or the one named by ``run_dir=...`` or ``ckpt_path=...``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lightrec.errors import LightrecError

FINISHED_MARKER = "metrics.json"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"


def run_paths(run_dir: Path) -> dict[str, Path]:
    return {
        "run_dir": run_dir,
        "checkpoint_dir": run_dir / "checkpoints",
        "tensorboard_dir": run_dir / "tensorboard",
        "config": run_dir / "config.yaml",
        "id_maps": run_dir / "id_maps.json",
        "metrics": run_dir / FINISHED_MARKER,
        "submission": run_dir / "submission.csv",
    }


def finished_runs(log_root: str | Path, model_name: str) -> list[Path]:
    """Finished run folders of a model, oldest first (by the time they finished)."""
    root = Path(log_root) / model_name
    if not root.is_dir():
        return []
    marks = [m for m in root.rglob(FINISHED_MARKER) if (m.parent / "checkpoints").is_dir()]
    return [m.parent for m in sorted(marks, key=lambda m: (m.stat().st_mtime_ns, str(m)))]


def get_directories(cfg: DictConfig, stage: str) -> dict[str, Path]:
    """Folders of a run: for ``fit`` the new run's (Hydra's output dir), for ``predict`` a
    finished run's, with the checkpoint to load under ``"ckpt"``."""
    if stage == "fit":
        paths = run_paths(Path(HydraConfig.get().runtime.output_dir))
        paths["checkpoint_dir"].mkdir(parents=True, exist_ok=True)
        return paths
    if stage != "predict":
        raise ValueError(f"stage must be 'fit' or 'predict', got {stage!r}")

    if cfg.ckpt_path is not None:
        ckpt = Path(cfg.ckpt_path).expanduser()
        if not ckpt.is_file():
            raise LightrecError(f"ckpt_path={ckpt} does not exist")
        paths = run_paths(ckpt.parent.parent)
        paths["ckpt"] = ckpt
    else:
        if cfg.run_dir is not None:
            run_dir = Path(cfg.run_dir).expanduser()
        else:
            runs = finished_runs(cfg.paths.log_root, cfg.model_name)
            if not runs:
                raise LightrecError(_no_run_message(cfg.paths.log_root, cfg.model_name))
            run_dir = runs[-1]
        paths = run_paths(run_dir)
        paths["ckpt"] = paths["checkpoint_dir"] / BEST_CKPT
    for key in ("ckpt", "config", "id_maps"):
        if not paths[key].is_file():
            raise LightrecError(
                f"run folder {paths['run_dir']} has no {paths[key].name} "
                "(is it a finished training run?)"
            )
    return paths


def _no_run_message(log_root: str | Path, model_name: str) -> str:
    root = Path(log_root)
    marks = sorted(root.rglob(FINISHED_MARKER)) if root.is_dir() else []
    others = sorted({str(m.parent.relative_to(root)) for m in marks})[-5:]
    hint = f"; the finished runs there are: {', '.join(others)}" if others else ""
    return (
        f"no finished training run of {model_name!r} under {root}: train one first "
        f"(or pass run_dir=... or ckpt_path=...){hint}"
    )
