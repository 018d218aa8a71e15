"""The Python API over a finished run: recommendations as DataFrames, for the run's users,
for histories the model never saw, and items like a given one.

    >>> import lightrec
    >>> run = lightrec.load_run("saved/hydra_logs/ease/2026-11-30/10-00-00")  # doctest: +SKIP
    >>> run.recommend(k=10)                      # user, item, score, rank  # doctest: +SKIP
    >>> run.recommend_histories(pd.DataFrame({"user": ["new"], "item": [50]}))  # doctest: +SKIP
    >>> run.similar_items(50, k=5)               # doctest: +SKIP

Everything goes through predict's own pieces (the same checkpoint, history rules, scorer
and top-K), so ``run.recommend()`` holds the lists of the run's ``submission.csv``. Every
model folds a history in as it reads one: the autoencoders and the item x item models as
the vector of items, the sequence models in time order, popularity as the popular unseen
items. Loading never executes code from the run folder (weights only, lightrec's own
classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from lightrec.data.interactions import (
    History,
    IdIndex,
    Interactions,
    full_history,
    parse_times,
)
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule
from lightrec.runs.finished import FinishedRun
from lightrec.runs.scoring import Scorer, check_top_k, top_items
from lightrec.utils.console import refuse
from lightrec.utils.path_utils import RunDir, default_log_root, latest_finished_run, output_path

COLUMNS = ("user", "item", "score", "rank")


@dataclass
class Run:
    """A finished run's model, ready to recommend (load it with :func:`load_run`)."""

    finished: FinishedRun
    model: RecommenderModule  # eval mode, on ``device``
    checkpoint: Path  # the one predict uses: the refit model when the run has one
    device: torch.device
    _history: History | None = None
    # built once, on first use: the item and user maps' indexes, the run's users' scorer
    _items: IdIndex | None = None
    _users: IdIndex | None = None
    _known: Scorer | None = None

    @property
    def path(self) -> Path:
        return self.finished.root

    @property
    def cfg(self) -> DictConfig:
        """The run's config.yaml."""
        return self.finished.cfg

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's metrics.json: validation and test metrics, the selection, the refit's."""
        return self.finished.metrics

    @property
    def item_ids(self) -> list:
        return self.finished.item_ids

    @property
    def history(self) -> History:
        """Every user's full history in the run's own data file (read on first use)."""
        if self._history is None:
            self._history = self.finished.history()
        return self._history

    def recommend(self, users: Sequence | None = None, k: int = 10) -> pd.DataFrame:
        """The top ``k`` unseen items of the run's users (all of them by default, else the
        given ids), from their full history in the run's data file: the lists of the run's
        ``submission.csv``. A user the file does not have is one sentence (give their
        history to :meth:`recommend_histories`)."""
        history = self.history
        if users is None:
            rows = np.arange(len(history.users))
        else:
            rows = self.user_rows(np.asarray(list(users)))
            if (rows < 0).any():
                missing = np.asarray(list(users), dtype=object)[rows < 0][0]
                raise LightrecError(
                    f"user {str(missing)!r} is not in the run's data file; give their "
                    "history to recommend_histories()"
                )
        return self._frame(history.users, rows, *self.top_of_users(rows, k))

    def recommend_histories(self, histories: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """The top ``k`` unseen items for each user of ``histories`` (``user, item[, time]``
        rows; time orders a sequence model's input, file order without it), folded in
        without training. Items the model does not know are counted and ignored with one
        warning."""
        return self.recommend_log(_interactions_of(histories), k)

    def recommend_log(self, log_: Interactions, k: int = 10) -> pd.DataFrame:
        """:meth:`recommend_histories` for a log read by
        :func:`lightrec.data.interactions.read_interactions` (ids typed as a data file's)."""
        history = full_history(log_, self.item_ids, self._item_index())
        if history.n_unknown:
            warnings.warn(
                f"{history.n_unknown} history rows name items the model does not know; "
                "they were ignored",
                stacklevel=2,
            )
        rows = np.arange(len(history.users))
        score = self.finished.scorer(history, self.model, self.device)
        return self._frame(history.users, rows, *self._top(score, rows, k))

    def top_of_histories(
        self, histories: Sequence[tuple[np.ndarray, np.ndarray]], k: int, strict: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` item indices (and scores) of each history, given as ``(item
        positions, times)`` over the model's items (:meth:`item_positions`; unknown ones
        left out): several folded in and scored at once, by the rules of every history
        (:class:`~lightrec.data.interactions.History`). What the server scores (``strict``:
        see :func:`~lightrec.runs.scoring.top_items`)."""
        lengths = [len(items) for items, _ in histories]
        user = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
        item = np.concatenate([items for items, _ in histories]).astype(np.int64)
        time = np.concatenate([times for _, times in histories])
        history = History(user, item, time, np.arange(len(histories)), len(self.item_ids), 0)
        score = self.finished.scorer(history, self.model, self.device)
        return self._top(score, np.arange(len(histories)), k, strict)

    def top_of_users(
        self, rows: np.ndarray, k: int, strict: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` item indices (and scores) of the run's users ``rows``
        (:meth:`user_rows`), from their full history: the run's users' inputs are built
        once, so a request costs its own rows."""
        if self._known is None:
            self._known = self.finished.scorer(self.history, self.model, self.device)
        return self._top(self._known, rows, k, strict)

    def item_positions(self, ids: Sequence | np.ndarray) -> np.ndarray:
        """Each id's index in the model's items, -1 if unknown (ids compared as text)."""
        return self._item_index().positions(np.asarray(ids, dtype=object))

    def user_rows(self, ids: Sequence | np.ndarray) -> np.ndarray:
        """Each id's row among the run's users, -1 if absent (ids compared as text)."""
        if self._users is None:
            self._users = IdIndex(self.history.users)
        return self._users.positions(np.asarray(ids, dtype=object))

    def similar_items(self, item: Any, k: int = 10) -> pd.DataFrame:
        """The ``k`` items the model recommends to someone whose whole history is ``item``
        (``item, score, rank``; the item itself excluded): EASE's row of B, a VAE's fold-in
        of one item, a sequence model's next items after it."""
        if int(self.item_positions([item])[0]) < 0:
            raise LightrecError(f"item {str(item)!r} is not one of the model's items")
        one = pd.DataFrame({"user": [0], "item": [item]})
        return self.recommend_histories(one, k).drop(columns="user")

    def known_items(self, ids: Sequence | np.ndarray) -> np.ndarray:
        """Whether each id is one of the model's items (ids compared as text)."""
        return self.item_positions(ids) >= 0

    def known_users(self, ids: Sequence | np.ndarray) -> np.ndarray:
        """Whether each id is a user of the run's data file (ids compared as text)."""
        return self.user_rows(ids) >= 0

    # ------------------------------------------------------------ internals
    def _item_index(self) -> IdIndex:
        if self._items is None:
            self._items = IdIndex(self.item_ids)
        return self._items

    def _top(
        self, score: Scorer, rows: np.ndarray, k: int, strict: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        check_top_k(k, len(self.item_ids))
        batch = int(self.cfg.predict.batch_size)
        return top_items(score, rows.tolist(), k, batch, strict=strict)

    def _frame(
        self, users: np.ndarray, rows: np.ndarray, items: np.ndarray, scores: np.ndarray
    ) -> pd.DataFrame:
        k = items.shape[1]
        ids = np.asarray(self.item_ids, dtype=object)
        return pd.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object)[rows], k),
                "item": ids[items.ravel()],
                "score": scores.ravel(),
                "rank": np.tile(np.arange(1, k + 1), len(rows)),
            },
            columns=list(COLUMNS),
        )


def _interactions_of(histories: pd.DataFrame) -> Interactions:
    """``user, item[, time]`` rows of a DataFrame as a log (rows missing a user or an item
    dropped; time orders, file order without it)."""
    if not isinstance(histories, pd.DataFrame):
        raise LightrecError("histories must be a DataFrame with user and item columns")
    missing = [c for c in ("user", "item") if c not in histories.columns]
    if missing:
        raise LightrecError(f"histories have no column {', '.join(missing)}")
    rows = histories.dropna(subset=["user", "item"])
    if len(rows) == 0:
        raise LightrecError("histories hold no row with both a user and an item")
    if "time" in rows.columns:
        time = parse_times(rows["time"].reset_index(drop=True), "histories", "time")
    else:
        time = np.arange(len(rows), dtype=np.int64)
    return Interactions(
        rows["user"].reset_index(drop=True),
        rows["item"].reset_index(drop=True),
        np.asarray(time),
        {"rows_read": len(histories), "dropped_missing": len(histories) - len(rows)},
    )


def load_run(
    run_dir: str | Path | None = None,
    config: str | None = None,
    log_root: str | Path | None = None,
    device: str = "cpu",
) -> Run:
    """A finished run: ``run_dir``, or the latest finished run of the config ``config``
    under ``log_root`` (the shipped ``paths.log_root`` by default), on ``device``
    ("cpu", "cuda", "cuda:1", "mps"). Relative paths in the run's config (its data file)
    are read from the current directory, as the run scripts do."""
    if run_dir is not None:
        run = RunDir(Path(run_dir).expanduser())
    elif config is not None:
        run = latest_finished_run(log_root or default_log_root(), config)
    else:
        raise LightrecError("load_run needs a run folder or a config name")
    finished = FinishedRun.open(run)
    ckpt = finished.checkpoint(bool(finished.cfg.predict.use_refit))  # one of the run's own
    try:
        where = torch.device(device)
    except RuntimeError as e:
        raise LightrecError(f"device {device!r} is not a device torch knows ({e})") from None
    return Run(finished, finished.model(ckpt, where), ckpt, where)


def main(argv: list[str] | None = None) -> int:
    """``python -m lightrec recommend RUN_DIR [--histories FILE] --out FILE [--k 10]``."""
    import argparse

    from lightrec.data.interactions import read_interactions
    from lightrec.utils.io import atomic_write

    ap = argparse.ArgumentParser(
        prog="python -m lightrec recommend",
        description="Recommendations of a finished run as user,item,score,rank rows: for "
        "the run's own users, or for the histories of a CSV (user,item[,time]) the model "
        "never saw, folded in without training.",
    )
    ap.add_argument("run_dir", help="a finished training run folder")
    ap.add_argument("--histories", help="CSV of user,item[,time] rows (default: the run's users)")
    ap.add_argument("--out", required=True, type=Path, help="the CSV to write")
    ap.add_argument("--k", type=int, default=10, help="items per user")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    a = ap.parse_args(argv)
    try:
        out = output_path(a.out, ".")
        run = load_run(a.run_dir, device=a.device)
        check_top_k(a.k, len(run.item_ids))
        if a.histories is None:
            recs = run.recommend(k=a.k)
        else:
            header = pd.read_csv(a.histories, nrows=0) if Path(a.histories).is_file() else None
            time = "time" if header is not None and "time" in header.columns else None
            log_ = read_interactions(a.histories, {"user": "user", "item": "item", "time": time})
            recs = run.recommend_log(log_, a.k)
        atomic_write(out, lambda f: recs.to_csv(f, index=False))
    except LightrecError as e:
        return refuse(e)
    print(f"wrote {out}: {recs['user'].nunique():,} users x {a.k} items")
    return 0
