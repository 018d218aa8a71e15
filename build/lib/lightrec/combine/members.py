"""The finished runs a combiner (blend, rerank) combines: opened, checked to share their data,
their validation users and scores, and the command-line arguments both combiners take."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from omegaconf import OmegaConf

from lightrec.data.datasets import data_file
from lightrec.data.splits import SplitSpec
from lightrec.errors import LightrecError
from lightrec.runs.finished import FinishedRun
from lightrec.utils.path_utils import default_log_root, latest_finished_run

MAX_USERS = 20_000  # validation users the weights (or the ranker) learn from, by default
SAMPLE_SEED = 0  # the seed of that sample: the same users for every member and combiner


def load_members(run_dirs: list[str]) -> list[FinishedRun]:
    """The runs, checked to be finished and to share the data."""
    if len(run_dirs) < 2:
        raise LightrecError("combine at least two run folders (blend or rerank needs two)")
    members = [FinishedRun.open(name) for name in run_dirs]
    _check_same_data(members)
    return members


def applied_models(members: list[FinishedRun], use_refit: bool) -> list[str]:
    """Which model of each run a submission applies: ``refit`` or ``selected``."""
    return [
        "refit" if m.checkpoint(use_refit) == m.folder.refit_ckpt else "selected" for m in members
    ]


def validation_users(valid: sp.csr_matrix, max_users: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The validation users (rows with a validation item) a combiner learns from: all of
    them, or a seeded sample of ``max_users`` in row order.

    >>> v = sp.csr_matrix(np.array([[1, 0], [0, 0], [0, 1], [1, 1]]))
    >>> validation_users(v, 5).tolist(), len(validation_users(v, 2))
    ([0, 2, 3], 2)
    """
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def _data_identity(m: FinishedRun) -> dict[str, Any]:
    d = m.cfg.data
    return {
        "data file": str(data_file(d.path, d.data_dir).resolve()),
        "data file's content when trained (MD5)": m.metrics.get("data", {}).get("file_md5"),
        "columns": OmegaConf.to_container(d.columns),
        "min_interactions": d.min_interactions,
        "split": SplitSpec.from_data_config(d),
    }


def _check_same_data(members: list[FinishedRun]) -> None:
    first = _data_identity(members[0])
    for m in members[1:]:
        other = _data_identity(m)
        for key, value in first.items():
            if None in (value, other[key]) and "MD5" in key:
                continue  # a run trained without the cache did not hash its file
            if other[key] != value:
                raise LightrecError(
                    f"runs {members[0].root} and {m.root} differ in their {key} "
                    f"({value} vs {other[key]}): combine only runs of the same data file and split"
                )
        if m.item_ids != members[0].item_ids:
            raise LightrecError(
                f"runs {members[0].root} and {m.root} have different item maps: "
                "combine only runs of the same data file and split"
            )


def add_run_arguments(ap: argparse.ArgumentParser, folder: str, users_for: str) -> None:
    """The arguments blend and rerank share: the runs, ``--latest``, ``--out``, ...; read
    the runs back with :func:`chosen_runs`."""
    ap.add_argument("runs", nargs="*", help="finished training run folders")
    ap.add_argument(
        "--latest",
        nargs="+",
        metavar="CONFIG",
        default=[],
        help="the latest finished run of each of these configs",
    )
    ap.add_argument("--log-root", default=default_log_root(), help="where --latest looks")
    ap.add_argument(
        "--out",
        type=Path,
        help=f"submission path (default: the first run's {folder}/<date>/<time>/)",
    )
    ap.add_argument("--no-refit", action="store_true", help="use the selected models")
    ap.add_argument(
        "--max-users",
        type=int,
        default=MAX_USERS,
        help=f"validation users to {users_for} (a seeded sample)",
    )
    ap.add_argument("--top-k", type=int, help="items per user (default: the runs' predict.top_k)")


def chosen_runs(a: argparse.Namespace) -> list[str]:
    """The run folders given, then the latest finished run of each ``--latest`` config."""
    return [*a.runs, *(str(latest_finished_run(a.log_root, c).root) for c in a.latest)]
