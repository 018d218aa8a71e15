"""What makes a killed training run cost minutes, not the run.

- :class:`ResumeState`: a callback whose state rides in every checkpoint: the random states
  (torch, CUDA, numpy, python; the data loader's shuffling draws from torch's), the training
  time so far and how often the run was resumed.
- :class:`AtomicCheckpointIO`: checkpoints are written next to their final name and renamed
  into place, so a kill never leaves a truncated ``last.ckpt``.
- :func:`resume_command`: the exact command that continues an interrupted run (which run
  ``resume=true`` continues is :func:`lightrec.utils.path_utils.run_to_resume`).
- :func:`on_signals`: Ctrl-C and SIGTERM both stop training at the next step, leave the run
  folder unfinished, and end in :class:`RunInterrupted`.
- :func:`check_same_setup`: a resumed run is the same computation, or it is refused, naming
  the key that differs.

A run resumes from ``last.ckpt``, written at the end of every epoch (docs/CHECKPOINT_STRUCTURE.md):
a run killed in the middle of an epoch does that epoch again from its start, with the same
random state, so the continuation is the same computation. A run stopped before its first
epoch ended has no checkpoint yet: it starts again, in its own folder, from its seed.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightrec.config.check import check_run_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.utils.io import atomic_write, remove_stale_temps
from lightrec.utils.path_utils import RunDir
from lightrec.utils.untrusted import read_yaml

# what must match for a run to be continued: everything that shapes its computation
# keys inside those that do not shape the training (a run may predate them)
NOT_TRAINING = ("data.item_features",)
SAME_ON_RESUME = (
    "seed",
    "refit",
    "model",
    "tune",
    "data",
    "eval",
    "checkpoint",
    "early_stopping",
    "trainer",
)


class RunInterrupted(Exception):
    """Training stopped by a signal; the run folder is left unfinished and resumable."""

    def __init__(self, run: RunDir, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: training stopped")
        self.run = run
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))


def random_state() -> dict[str, Any]:
    """Every random generator a training step draws from, in a ``weights_only``-safe form."""
    np_state: tuple = np.random.get_state(legacy=True)  # type: ignore[assignment]
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(pl.Callback):
    """Random states, training time and resume count, saved with every checkpoint."""

    def __init__(self, resumes: int = 0) -> None:
        self.elapsed_before = 0.0  # training seconds of earlier segments of this run
        self.resumes = resumes
        self._segment_start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._segment_start

    def state_dict(self) -> dict[str, Any]:
        return {"random": random_state(), "elapsed_s": self.elapsed, "resumes": self.resumes}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_random_state(state_dict["random"])
        self.elapsed_before = float(state_dict["elapsed_s"])
        self.resumes = int(state_dict["resumes"]) + 1
        self._segment_start = time.perf_counter()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint to a temporary file in its own folder, then rename it into place:
    readers and resumes see the old file or the new one, never half of one."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f), binary=True)


def remove_partial_checkpoints(run: RunDir) -> None:
    """Temporary checkpoint files a kill left behind (never a finished one): the run is
    resumed by one process, so any age counts."""
    remove_stale_temps(run.checkpoint_dir, older_than_s=-1.0)


def resume_command(run: RunDir | Path, argv: list[str] | None = None) -> str:
    """The command that continues ``run`` (a training run, or a search's folder): this
    process's own, with ``resume=<folder>``."""
    import __main__

    argv = sys.argv if argv is None else argv
    args = [a for a in argv[1:] if not a.startswith("resume=")]
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:  # python -m lightrec ...
        prog = ["-m", spec.name.removesuffix(".__main__")]
    else:
        prog = [argv[0]]
    root = run.root if isinstance(run, RunDir) else run
    return shlex.join([sys.executable, *prog, *args, f"resume={root}"])


_PENDING: list[str] = []  # signals received while training (StopOnSignal acts on them)


class StopOnSignal(pl.Callback):
    """Raises ``KeyboardInterrupt`` at the next batch or epoch once a signal arrived: the
    handler's own raise lands wherever the signal does, and there it can be swallowed (in a
    finalizer run by a garbage collection, where Python only prints it), leaving the run
    training on as if nothing had been received."""

    def _check(self) -> None:
        if _PENDING:
            raise KeyboardInterrupt

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()


@contextmanager
def on_signals(run: RunDir) -> Iterator[None]:
    """While training: Ctrl-C and SIGTERM stop at the next step and raise RunInterrupted
    (the handler raises at once, and :class:`StopOnSignal` again at the next batch should
    that raise have been swallowed).

    Lightning turns a KeyboardInterrupt inside ``fit`` into a graceful shutdown ending in
    ``SystemExit(1)``, and its own SIGTERM handling into a ``SIGTERMException``; a raise that
    lands inside a checkpoint's write comes out as the writer's own error. After a signal,
    each is reported here as one :class:`RunInterrupted` naming the signal."""
    received = _PENDING
    received.clear()

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except BaseException as e:  # re-raised below unless a signal explains it
        # once a signal arrived, whatever its raise became is the interruption: landing in
        # a checkpoint's write, it comes out as that writer's RuntimeError (the write is
        # atomic: the previous checkpoint stands)
        if not received and not isinstance(e, KeyboardInterrupt):
            raise
        raise RunInterrupted(run, received[0] if received else "SIGINT") from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        received.clear()


_HELD: dict[str, int] = {}  # run folders this process holds, and the descriptor holding each


def hold_run(run: RunDir) -> None:
    """An exclusive lock on the run folder for this process's lifetime (it goes when the
    process ends): two resumes of one run at once would both train into it, so another
    process's is refused in one sentence. Without ``fcntl`` (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return
    key = str(run.root.resolve())
    if key in _HELD:
        return
    fd = os.open(run.root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LightrecError(
            f"resume: {run.root} is being trained by another process right now; wait for it "
            "to end (or stop it), then resume"
        ) from None
    _HELD[key] = fd


def check_loadable(ckpt: Path, model: torch.nn.Module) -> None:
    """A checkpoint to resume from must load as plain weights (``weights_only``: nothing in
    it runs) and fit the model; one sentence otherwise, before training starts."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickled objects, truncated zip, garbage
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise LightrecError(
            f"resume: {ckpt} cannot be loaded as plain weights ({type(e).__name__}: {first}); "
            "it is not a checkpoint this toolkit wrote: train a new run"
        ) from None
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise LightrecError(f"resume: {ckpt} holds no model weights: train a new run")
    own = model.state_dict()
    for name, tensor in weights.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise LightrecError(
                f"resume: {ckpt} holds {name} of shape {tuple(tensor.shape)}, the model "
                f"{tuple(own[name].shape)}: the data or the model changed since the run "
                "started (a resumed run must be the same computation)"
            )


def setup_differences(cfg: DictConfig, run: RunDir) -> dict[str, tuple[Any, Any]]:
    """The keys that shape a training whose values differ between ``run``'s config.yaml and
    ``cfg``: ``{key: (the run's value, cfg's)}``, empty when ``cfg`` would compute ``run``
    again (``best resume=true`` keeps such a run)."""
    data = read_yaml(run.config, f"run folder {run.root}: config.yaml")
    if not isinstance(data, dict):
        raise LightrecError(f"run folder {run.root}: config.yaml is not a run's config")
    loaded = OmegaConf.create(data)
    check_run_config(loaded, str(run.root))  # read as untrusted: nothing in it is built
    saved = OmegaConf.to_container(loaded, resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(saved, dict) and isinstance(now, dict)
    # a knob both tune is chosen on validation: the same grid chooses the same value
    both = set(now.get("tune") or {}) & set(saved.get("tune") or {})
    tuned = {f"model.{k}" for k in both}
    return {
        name: values
        for key in SAME_ON_RESUME
        for name, values in _diff(saved.get(key), now.get(key), key).items()
        if name not in NOT_TRAINING and name not in tuned
    }


def check_same_data(run: RunDir, dm: RecSysDataModule) -> None:
    """A resumed run must read the data it started with: the same users and items
    (id_maps.json) and, when both are known, the same content (its MD5); refused in one
    sentence naming the data file."""
    try:
        saved = json.loads(run.id_maps.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no record to compare (a run that never got past its start)
    now = {**dm.id_maps(), "data_file_md5": dm.data_md5}
    differ = [k for k in ("user_ids", "item_ids") if saved.get(k) != now[k]]
    if saved.get("data_file_md5") and now["data_file_md5"]:
        if saved["data_file_md5"] != now["data_file_md5"]:
            differ.append("content (MD5)")
    if differ:
        raise LightrecError(
            f"resume: the data file {dm.data_path} changed since {run.root} started (its "
            f"{' and '.join(d.replace('_ids', 's') for d in differ)} differ): a resumed run "
            "must be the same computation; train a new run on the file as it is"
        )


def check_same_setup(cfg: DictConfig, run: RunDir) -> None:
    """A resumed run must be the same computation: refuse another setup, naming the key."""
    for name, (a, b) in setup_differences(cfg, run).items():
        raise LightrecError(
            f"resume: {name} is {b!r} here but {a!r} in {run.root}; a run continues "
            "with the settings it started with (give the same overrides, or none)"
        )


def _diff(a: Any, b: Any, prefix: str) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ between two plain configs, with both values.

    >>> _diff({"lr": 1, "k": [1]}, {"lr": 2, "k": [1]}, "model")
    {'model.lr': (1, 2)}
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(set(a) | set(b), key=str):
            out.update(_diff(a.get(k), b.get(k), f"{prefix}.{k}"))
        return out
    return {} if a == b else {prefix: (a, b)}
