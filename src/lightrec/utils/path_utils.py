"""The one place that knows where runs live and what a run folder holds.

A training run folder (Hydra's run dir, ``${paths.log_root}/${model_name}/<date>/<time>``,
or ``.../<time>-multirun/<n>`` for sweeps) holds::

    config.yaml        resolved config of the run
    id_maps.json       original user and item ids, in encoded order
    checkpoints/       best.ckpt (monitored metric), last.ckpt, refit.ckpt (train + valid)
    tensorboard/       event files
    metrics.json       written last: its presence marks the run as finished
    submission.csv     written by predict

:class:`RunDir` names these paths; ``get_directories(cfg, "predict")`` picks the latest
finished run of ``cfg.model_name``, or the one named by ``run_dir=...`` or ``ckpt_path=...``;
``run_to_resume`` the unfinished run that ``resume=true`` (or ``resume=<run folder>``)
continues; :func:`job_root` and :func:`claim_job_dir` where a stage's job folder goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightrec.errors import LightrecError
from lightrec.utils.io import unwritable
from lightrec.utils.untrusted import read_yaml

# the shipped configs (the one source of defaults), package data of lightrec
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

CLOCK = "%Y-%m-%d/%H-%M-%S"  # a job folder's <date>/<time>, as Hydra names its own
FINISHED_MARKER = "metrics.json"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"
REFIT_CKPT = "refit.ckpt"


@dataclass(frozen=True)
class RunDir:
    """The paths of one training run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def id_maps(self) -> Path:
        return self.root / "id_maps.json"

    @property
    def metrics(self) -> Path:
        return self.root / FINISHED_MARKER

    @property
    def submission(self) -> Path:
        return self.root / "submission.csv"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoint_dir / BEST_CKPT

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoint_dir / LAST_CKPT

    @property
    def selection(self) -> Path:
        """Written when training ends: what it selected (best checkpoint, epochs, time)."""
        return self.checkpoint_dir / "selection.json"

    @property
    def refit_ckpt(self) -> Path:
        return self.checkpoint_dir / REFIT_CKPT

    def submission_ckpt(self, use_refit: bool = True) -> Path:
        """The model this run submits with: its refit model when it has one (and
        ``use_refit``), else its selected (best) one. Predict, the blend and the re-ranker
        all apply this rule."""
        return self.refit_ckpt if use_refit and self.refit_ckpt.is_file() else self.best_ckpt

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def finished(self) -> bool:
        return self.metrics.is_file() and self.checkpoint_dir.is_dir()

    def relative(self, path: Path) -> str:
        """``path`` as written into the run's own files: relative to the run folder."""
        return str(Path(path).relative_to(self.root))


def finished_runs(log_root: str | Path, model_name: str) -> list[RunDir]:
    """Finished run folders of a model, oldest first (by the time they finished)."""
    root = Path(log_root) / model_name
    if not root.is_dir():
        return []
    runs = [RunDir(m.parent) for m in root.rglob(FINISHED_MARKER)]
    runs = [r for r in runs if r.finished]
    return sorted(runs, key=lambda r: (r.metrics.stat().st_mtime_ns, str(r.root)))


def latest_finished_run(log_root: str | Path, model_name: str) -> RunDir:
    """The most recently finished run of ``model_name``; one sentence when there is none."""
    runs = finished_runs(log_root, model_name)
    if not runs:
        raise LightrecError(_no_run_message(log_root, model_name))
    return runs[-1]


def unfinished_runs(log_root: str | Path, model_name: str) -> list[RunDir]:
    """Training runs of a model that started (config.yaml) and did not finish (no
    metrics.json), oldest first by their latest checkpoint (or their start)."""
    root = Path(log_root) / model_name
    if not root.is_dir():
        return []
    runs = [RunDir(p.parent) for p in root.rglob("config.yaml")]
    runs = [r for r in runs if r.checkpoint_dir.is_dir() and not r.metrics.exists()]

    def progress(r: RunDir) -> tuple[int, str]:
        newest = r.last_ckpt if r.last_ckpt.is_file() else r.config
        return newest.stat().st_mtime_ns, str(r.root)

    return sorted(runs, key=progress)


def resuming(cfg: DictConfig) -> bool:
    """Whether a training continues a run (``resume=true`` or ``resume=<run folder>``)."""
    return cfg.resume not in (False, None)


def run_to_resume(resume: bool | str, log_root: str | Path, model_name: str) -> RunDir:
    """The run ``resume=true`` (the most recent unfinished run of the model) or
    ``resume=<run folder>`` names; one sentence when there is none."""
    if resume is True:
        runs = unfinished_runs(log_root, model_name)
        if not runs:
            raise LightrecError(
                f"resume=true: no unfinished training run of {model_name!r} under "
                f"{Path(log_root)} to continue (train one, or name it with resume=<run folder>)"
            )
        return runs[-1]
    run = RunDir(Path(str(resume)).expanduser())
    if (run.root / FINISHED_MARKER).exists():
        raise LightrecError(f"resume={resume}: that run already finished (it has metrics.json)")
    if not run.config.is_file() or not run.checkpoint_dir.is_dir():
        raise LightrecError(f"resume={resume}: not a training run folder (no config.yaml)")
    return run


def get_directories(cfg: DictConfig, stage: str) -> RunDir:
    """The run folder of a stage: for ``fit`` the new run's (Hydra's output dir, with its
    checkpoint folder made), for ``predict`` a finished run's (``ckpt_path=``, ``run_dir=``
    or the latest finished run of ``cfg.model_name``), checked to hold what predict reads."""
    if stage == "fit":
        if resuming(cfg):  # the run's own folder (the entry made it Hydra's run dir too)
            return run_to_resume(cfg.resume, cfg.paths.log_root, cfg.model_name)
        run = RunDir(Path(HydraConfig.get().runtime.output_dir))
        run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return run
    if stage != "predict":
        raise ValueError(f"stage must be 'fit' or 'predict', got {stage!r}")

    if cfg.ckpt_path is not None:
        ckpt = Path(cfg.ckpt_path).expanduser()
        if not ckpt.is_file():
            raise LightrecError(f"ckpt_path={ckpt} does not exist")
        run = RunDir(ckpt.parent.parent)
    elif cfg.run_dir is not None:
        run = RunDir(Path(cfg.run_dir).expanduser())
        ckpt = run.best_ckpt
        if run.config.is_file() and not run.metrics.is_file():
            raise LightrecError(
                f"run folder {run.root} is unfinished (no metrics.json): resume it "
                "(resume=true), or name one of its checkpoints with ckpt_path=..."
            )
    else:
        run = latest_finished_run(cfg.paths.log_root, cfg.model_name)
        ckpt = run.best_ckpt
    for path in (ckpt, run.config, run.id_maps):
        if not path.is_file():
            raise LightrecError(
                f"run folder {run.root} has no {path.name} (is it a finished training run?)"
            )
    saved = read_yaml(run.config, f"run folder {run.root}: config.yaml")
    trained = saved.get("model_name") if isinstance(saved, dict) else None
    if trained != cfg.model_name:
        raise LightrecError(
            f"run folder {run.root} is a run of {trained!r}, not of {cfg.model_name!r} "
            f"(predict it with --config-name {trained})"
        )
    return run


def predict_checkpoint(cfg: DictConfig, run: RunDir) -> Path:
    """The checkpoint predict loads: ``ckpt_path=`` when given; else the run's refit model
    when it has one (and ``predict.use_refit``), else its selected (best) model."""
    if cfg.ckpt_path is not None:
        return Path(cfg.ckpt_path).expanduser()
    return run.submission_ckpt(cfg.predict.use_refit)


def _no_run_message(log_root: str | Path, model_name: str) -> str:
    root = Path(log_root)
    marks = sorted(root.rglob(FINISHED_MARKER)) if root.is_dir() else []
    others = sorted({str(m.parent.relative_to(root)) for m in marks})[-5:]
    hint = f"; the finished runs there are: {', '.join(others)}" if others else ""
    return (
        f"no finished training run of {model_name!r} under {root}: train one first "
        f"(or pass run_dir=... or ckpt_path=...){hint}"
    )


def default_path(key: str) -> str:
    """``paths.<key>`` as the shipped configs set it: where a tool writes when its command
    line names no folder (never a folder a run's own config.yaml names)."""
    setup = OmegaConf.load(CONFIG_DIR / "common" / "default_setup.yaml")
    return str(setup.paths[key])


def default_log_root() -> str:
    """``paths.log_root`` as the shipped configs set it (the tools' ``--log-root`` default)."""
    return default_path("log_root")


def job_root(cfg: DictConfig, stage: str) -> tuple[str, str]:
    """The config key and the folder under which a stage's jobs go: training runs under
    ``paths.log_root``; predict jobs (which write their submission into a training run's
    folder) keep their logs under ``paths.predict_log_root``, so that only training runs
    live under ``paths.log_root``."""
    if stage == "train":
        return "paths.log_root", str(cfg.paths.log_root)
    if stage == "predict":
        return "paths.predict_log_root", str(cfg.paths.predict_log_root)
    raise ValueError(f"stage must be 'train' or 'predict', got {stage!r}")


def stamp(suffix: str = "") -> str:
    """``<date>/<time><suffix>`` of now: the name of every new job folder (a run, a sweep, a
    search, a blend's or re-ranker's submission)."""
    return datetime.now().strftime(CLOCK) + suffix


def output_path(out: Path | None, folder: str | Path | None = None) -> Path:
    """Where a tool (blend, rerank, recommend, export) writes: ``out``, or
    ``<folder>/<date>/<time>/submission.csv``; one sentence when ``out`` is a folder or its
    folder cannot be written."""
    if out is None:
        assert folder is not None, "no --out: the default folder is needed"
        return Path(folder).expanduser() / stamp() / "submission.csv"
    out = Path(out)
    if out.is_dir():
        raise LightrecError(
            f"--out {out} is a folder: name the file, e.g. {out / 'submission.csv'}"
        )
    if problem := unwritable(out.parent):
        raise LightrecError(f"--out {out}: its folder cannot be written ({problem})")
    return out


def claim_job_dir(cfg: DictConfig, stage: str, stamp: str) -> Path:
    """A new job folder ``<root>/<model_name>/<stamp>`` for ``stage``, or ``<stamp>-1``,
    ``-2``, ...: the first this process could create itself (an atomic ``mkdir``), so jobs
    started in the same second never share a folder."""
    root = Path(job_root(cfg, stage)[1]).expanduser()
    path = root / str(cfg.model_name) / stamp
    if not path.resolve().is_relative_to(root.resolve()):  # model_name is checked; be sure
        raise LightrecError(f"model_name={cfg.model_name!r} would put runs outside {root}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise LightrecError(f"{path.parent} holds 1000 folders named {path.name}-N: clean it up")


def quote_override(value: str) -> str:
    """A value as one quoted Hydra override value (paths with commas or spaces stay one).

    >>> quote_override("/runs/a,b")
    "'/runs/a,b'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
