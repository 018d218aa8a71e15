"""The finished runs a combiner (blend, rerank) combines: opened, checked to share their data,
their validation users and scores, and the command-line arguments both combiners take."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from omegaconf import OmegaConf

from lightrec.combine.weights import normalise
from lightrec.data.datasets import data_file
from lightrec.data.interactions import History
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.data.splits import SplitSpec
from lightrec.errors import LightrecError
from lightrec.runs.finished import FinishedRun
from lightrec.runs.scoring import Scorer
from lightrec.training.resume import setup_differences
from lightrec.utils.path_utils import default_log_root, latest_finished_run

MAX_USERS = 20_000  # validation users the weights (or the ranker) learn from, by default
SAMPLE_SEED = 0  # the seed of that sample: the same users for every member and combiner


class Bag(FinishedRun):
    """One member made of several finished runs of one config, trained with other seeds
    (seed bagging): it scores each user with the mean of its runs' per-user z-scores. It
    is its first run in every other respect (config, data, id maps)."""

    def __init__(self, runs: list[FinishedRun]) -> None:
        first = runs[0]
        super().__init__(first.folder, first.cfg, first.item_ids, first.user_ids)
        self.runs = runs
        names = {r.name for r in runs}
        if len(names) > 1:
            raise LightrecError(f"a bag holds runs of one config, not of {sorted(names)}")
        roots = [r.root.resolve() for r in runs]
        if len(set(roots)) < len(roots):
            twice = next(r for r in roots if roots.count(r) > 1)
            raise LightrecError(f"a bag holds distinct runs: {twice} is in it twice")
        for other in runs[1:]:  # the same training but for its seed (resume's rule)
            differ = [k for k in setup_differences(first.cfg, other.folder) if k != "seed"]
            if differ:
                raise LightrecError(
                    f"a bag holds runs that differ only in seed: {other.root} and "
                    f"{first.root} differ in {differ[0]}"
                )

    def validation_scorer(self, dm: RecSysDataModule, device: torch.device) -> Scorer:
        return mean_z([r.validation_scorer(dm, device) for r in self.runs])

    def submission_scorer(
        self, history: History, use_refit: bool, device: torch.device | str = "cpu"
    ) -> Scorer:
        return mean_z([r.submission_scorer(history, use_refit, device) for r in self.runs])


def mean_z(scorers: list[Scorer]) -> Scorer:
    """The mean of several scorers' per-user z-scores (seen items stay out)."""

    def score(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        total, seen = None, None
        for scorer in scorers:
            scores, seen = scorer(rows)
            z = normalise(scores, seen, "zscore")
            total = z if total is None else total + z
        assert total is not None and seen is not None
        return total / len(scorers), seen

    return score


Member = str | list[str]  # a run folder, or a bag's run folders


def load_members(run_dirs: Sequence[Member]) -> list[FinishedRun]:
    """The runs (a list: a bag of one config's runs), checked to be finished and to share
    the data."""
    if len(run_dirs) < 2:
        raise LightrecError("combine at least two run folders (blend or rerank needs two)")
    members: list[FinishedRun] = []
    for given in run_dirs:
        if isinstance(given, str):
            members.append(FinishedRun.open(given))
        else:
            members.append(Bag([FinishedRun.open(name) for name in given]))
    _check_same_data([run for m in members for run in runs_of(m)])
    return members


def runs_of(member: FinishedRun) -> list[FinishedRun]:
    """A member's runs: a bag's, or the run itself."""
    return member.runs if isinstance(member, Bag) else [member]


def applied_models(members: list[FinishedRun], use_refit: bool) -> list[str]:
    """Which model of each run a submission applies: ``refit`` or ``selected``."""
    return [
        "refit" if m.checkpoint(use_refit) == m.folder.refit_ckpt else "selected" for m in members
    ]


def describe(members: list[FinishedRun]) -> list[str | list[str]]:
    """The members as a record names them: a run's folder, or a bag's folders."""
    return [[str(r.root) for r in m.runs] if isinstance(m, Bag) else str(m.root) for m in members]


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
        "--bag",
        action="append",
        type=_bag,
        metavar="RUN,RUN[,...]",
        default=[],
        help="one member made of these runs of one config, comma-separated (seed bagging); "
        "repeatable",
    )
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
        help=f"submission path (default: the shipped {folder}/<date>/<time>/, never a "
        "folder a run's config names)",
    )
    ap.add_argument("--no-refit", action="store_true", help="use the selected models")
    ap.add_argument(
        "--max-users",
        type=int,
        default=MAX_USERS,
        help=f"validation users to {users_for} (a seeded sample)",
    )
    ap.add_argument("--top-k", type=int, help="items per user (default: the runs' predict.top_k)")


def _bag(value: str) -> list[str]:
    """``--bag``'s one argument: run folders separated by commas (a list of its own, so a
    bag never swallows the positional runs after it)."""
    runs = [v for v in value.split(",") if v]
    if len(runs) < 2:
        raise argparse.ArgumentTypeError(f"a bag is two runs or more, comma-separated: {value!r}")
    return runs


def chosen_runs(a: argparse.Namespace) -> list[Member]:
    """The run folders given, the latest finished run of each ``--latest`` config, then
    each ``--bag``."""
    latest = [str(latest_finished_run(a.log_root, c).root) for c in a.latest]
    return [*a.runs, *latest, *(list(bag) for bag in a.bag)]


def labels(members: list[FinishedRun]) -> list[str]:
    """A unique name per member, by place: its config's model name, and ``#2``, ``#3``
    after a name that is already taken (two EASE runs are two members)."""
    out: list[str] = []
    for m in members:
        name = m.cfg.model_name + ("_bag" if isinstance(m, Bag) else "")
        n = sum(1 for o in out if o == name or o.startswith(name + "#"))
        out.append(name if n == 0 else f"{name}#{n + 1}")
    return out


def with_seconds(rows: list[dict[str, Any]], seconds: Sequence[float | None] | None) -> None:
    """Each member's row of a combiner's table given its training seconds (``best``'s), in
    place; without them (a combiner called on finished runs) the rows stay as they are."""
    for row, took in zip(rows, seconds or [], strict=False):
        row["seconds"] = took


def member_table(rows: list[dict[str, Any]], what: str) -> str:
    """Each member's training time, its own score and its marginal value (the blend's score
    with it, less the blend's without it), as text: what ``best`` ends with."""
    lines = [f"members ({what}):", "  member            time   alone   blend without   marginal"]
    for r in rows:
        took = r.get("seconds")
        shown = "   kept" if took is None else f"{took:6.0f}s"
        lines.append(
            f"  {r['member']:<16}{shown}  {r['alone']:.4f}  {r['blend_without']:13.4f}  "
            f"{r['marginal']:+9.4f}"
        )
    return "\n".join(lines)
