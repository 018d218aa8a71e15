"""What the tests share: tiny generated logs, configs composed exactly as the scripts do,
objects built from the shipped YAML (the one source of defaults), and subprocess runs."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightrec  # noqa: F401 - registers the configs' resolvers, as the scripts do
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.utils.path_utils import CONFIG_DIR  # the package's own configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))

# Every shipped model config, with the overrides that make it tiny (on the generated logs of
# make_log). A config listed here enters every contract test of tests/test_contracts.py
# (save/load, resume, device batches, refit, data parallelism); a shipped config missing
# here fails test_every_shipped_config_is_in_the_contract_tests.
CONTRACT: dict[str, list[str]] = {
    "ease": [],
    "admm_slim": ["model.iterations=5"],
    "higher_order_ease": ["model.pairs=20", "model.min_support=2", "model.iterations=2"],
    "item_knn": [],
    "rp3beta": [],
    "ials": ["model.factors=4", "model.iterations=3"],
    "pop": [],
    "multi_vae": [],
    "multi_vae_v2": [],
    "multi_vae_v3": [],
    "recvae": ["model.hidden_dim=16", "model.latent_dim=4"],
    "bert4rec_v2": [
        "data.max_len=8",
        "model.hidden_size=16",
        "model.num_layers=1",
        "trainer.min_epochs=1",
        "trainer.check_val_every_n_epoch=1",
    ],
    "sasrec": ["data.max_len=8", "model.hidden_size=16", "model.num_layers=1"],
}
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


def is_closed_form(config_name: str) -> bool:
    """Whether a config's model is fit in one call (EASE, Popularity) instead of epochs."""
    from lightrec.models.base import ClosedFormModule

    return issubclass(get_class(block(config_name, "model")["_target_"]), ClosedFormModule)


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


def run_here(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m lightrec ARGV`` run in this process, from ``cwd``: the exit code, standard
    output and standard error a shell would see, without an interpreter's start-up (torch
    and Lightning cost seconds to import). The few tests of the scripts themselves, signals,
    kills and several processes run real subprocesses (:func:`run_cmd`)."""
    from lightrec import cli

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with logging_restored(), redirect_stdout(out), redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as e:  # a stage's own exit, as under `python -m lightrec`
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@contextmanager
def logging_restored() -> Iterator[None]:
    """Within: a command run in this process may configure logging (Hydra's job logging adds
    a file handler in the run folder); after: every logger has its handlers and level back,
    and the added handlers are closed, so later tests never write to a removed folder."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.Logger.manager.loggerDict)]
    saved = {id(lg): (lg, lg.handlers[:], lg.level) for lg in loggers}
    try:
        yield
    finally:
        for lg in [logging.getLogger(), *map(logging.getLogger, logging.Logger.manager.loggerDict)]:
            before = saved.get(id(lg))
            kept = before[1] if before else []
            for h in lg.handlers:
                if h not in kept:
                    h.close()
            lg.handlers[:] = kept
            if before:
                lg.setLevel(before[2])


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


# what must be equal between an interrupted-and-resumed run and an uninterrupted one
COMPARED = ("best_epoch", "epochs_trained", "global_steps", "val", "test", "refit")


def same_numbers(a: dict, b: dict) -> None:
    """Two runs' metrics.json agree on every number but their times."""
    for key in COMPARED:
        ra, rb = a.get(key), b.get(key)
        if key == "refit" and ra is not None:  # its time differs, its results may not
            ra = {k: v for k, v in ra.items() if k != "fit_time_s"}
            rb = {k: v for k, v in rb.items() if k != "fit_time_s"}
        assert ra == rb, key


class SignalAt(pl.Callback):
    """Sends this process ``sig`` in the middle of epoch ``epoch`` (after its 2nd batch)."""

    def __init__(self, epoch: int, sig: int = signal.SIGINT) -> None:
        self.epoch, self.sig = epoch, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            os.kill(os.getpid(), self.sig)


def swap_last(log: pd.DataFrame, from_end: int) -> pd.DataFrame:
    """The log with the item of each user's ``from_end``-th last row (0 = last) replaced."""
    log = log.copy()
    rank = log.sort_values(["user", "time"]).groupby("user").cumcount(ascending=False)
    rows = rank[rank == from_end].index
    log.loc[rows, "item"] = (log.loc[rows, "item"] + 15) % 30
    return log.drop_duplicates(["user", "item"], keep="first")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
