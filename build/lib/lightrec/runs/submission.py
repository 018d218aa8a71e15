"""The submission file: writing it, and scoring it the way a competition does.

A submission is a CSV with the header ``user,item`` and, for every user, ``predict.top_k``
distinct items the user has not interacted with, best first, in original ids.

To score one on items hidden from the training file:
``python -m lightrec submission hide LOG.csv TRAIN.csv HIDDEN.csv [--n 1] [--m 0] [--seed 0]``
moves each user's last ``n`` interactions plus ``m`` random earlier ones (by time as training
orders it, ties in file order; after keeping each (user, item) pair's earliest row) from the
log into HIDDEN.csv: ``--n 1 --m 4`` is a competition-style hidden set. Train on TRAIN.csv
as a user would, then
``python -m lightrec submission score SUBMISSION.csv HIDDEN.csv [--k 10]`` prints one JSON
line with Recall@K (hits / min(K, |hidden|)), NDCG@K and HitRate@K over the hidden users.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lightrec.data.interactions import parse_times
from lightrec.data.order import first_rows
from lightrec.data.splits import last_n_random_m
from lightrec.errors import LightrecError
from lightrec.utils.console import refuse
from lightrec.utils.io import atomic_write

logger = logging.getLogger(__name__)


def write(
    path: str | Path, user_ids: Sequence | np.ndarray, item_ids: Sequence, topk: np.ndarray
) -> pd.DataFrame:
    """Write ``user,item`` rows (original ids, best first) atomically; return the frame."""
    n_users, k = topk.shape
    items = np.asarray(item_ids, dtype=object)
    frame = pd.DataFrame(
        {"user": np.repeat(np.asarray(user_ids, dtype=object), k), "item": items[topk.ravel()]}
    )
    atomic_write(path, lambda f: frame.to_csv(f, index=False))
    return frame


def hide(
    log: pd.DataFrame, n: int = 1, m: int = 0, seed: int = 0, source: str = "the log"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(remaining rows, hidden rows): each user's last ``n`` distinct items by time plus
    ``m`` random earlier ones (seeded), the competition's kind of hidden set. The rules are
    training's own: rows missing a user, item or time are dropped (counted in the log),
    times are numbers or dates compared as instants (``M/D/YYYY`` included), a repeated
    (user, item) counts at its earliest row, ties keep file order, and every user keeps at
    least one row (:func:`lightrec.data.splits.last_n_random_m`, the draw validation uses).

    >>> log = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [5, 6, 5, 7, 8],
    ...                     "time": [1, 2, 3, 1, 1]})
    >>> train, hidden = hide(log)
    >>> hidden.values.tolist()       # user 1's repeat of item 5 is not new; user 2: file order
    [[1, 6, 2], [2, 8, 1]]
    >>> train.values.tolist()
    [[1, 5, 1], [1, 5, 3], [2, 7, 1]]
    >>> dates = pd.DataFrame({"user": [1, 1], "item": [5, 6], "time": ["12/1/2020", "2/1/2021"]})
    >>> hide(dates)[1]["item"].tolist()      # February 2021 is later, though "1" < "2" as text
    [6]
    """
    if n < 1 or m < 0:
        raise LightrecError(f"--n {n} must be at least 1 and --m {m} at least 0")
    complete = ~log[["user", "item", "time"]].isna().any(axis=1).to_numpy()
    if not complete.all():
        logger.warning(
            "%s: dropped %d rows with a missing user, item or time", source, (~complete).sum()
        )
        log = log.loc[complete]
    time = parse_times(log["time"], source, "time")
    user = pd.factorize(log["user"])[0]
    kept = first_rows(user, pd.factorize(log["item"])[0], time)
    is_hidden = np.zeros(len(log), dtype=bool)
    is_hidden[kept.rows[last_n_random_m(kept.user, n, m, seed)]] = True
    # later repeats of a hidden item would reveal it: drop them from the training file
    pairs = set(
        zip(log["user"].to_numpy()[is_hidden], log["item"].to_numpy()[is_hidden], strict=True)
    )
    repeat = (
        np.fromiter(
            ((u, i) in pairs for u, i in zip(log["user"], log["item"], strict=True)),
            dtype=bool,
            count=len(log),
        )
        & ~is_hidden
    )
    return log.loc[~is_hidden & ~repeat], log.loc[is_hidden]


def score(submission: pd.DataFrame, hidden: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """Mean Recall@K, NDCG@K, HitRate@K over the users of ``hidden`` (missing users score 0).

    >>> sub = pd.DataFrame({"user": [1, 1, 2, 2], "item": [6, 9, 9, 3]})
    >>> hid = pd.DataFrame({"user": [1, 2], "item": [6, 7]})
    >>> score(sub, hid, k=2)
    {'users': 2, 'recall@2': 0.5, 'ndcg@2': 0.5, 'hit@2': 0.5}
    """
    sub = submission.copy()
    sub["rank"] = sub.groupby("user", sort=False).cumcount()
    sub = sub[sub["rank"] < k]
    truth = hidden[["user", "item"]].drop_duplicates()
    n_true = truth.groupby("user").size()
    hits = sub.merge(truth, on=["user", "item"])
    hits["gain"] = 1.0 / np.log2(hits["rank"] + 2.0)
    per_user = pd.DataFrame({"n": n_true})
    per_user["hits"] = hits.groupby("user").size().reindex(per_user.index, fill_value=0)
    per_user["dcg"] = hits.groupby("user")["gain"].sum().reindex(per_user.index, fill_value=0.0)
    m = np.minimum(per_user["n"].to_numpy(), k)
    idcg = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[m - 1]
    return {
        "users": len(per_user),
        f"recall@{k}": round(float((per_user["hits"] / m).mean()), 6),
        f"ndcg@{k}": round(float((per_user["dcg"] / idcg).mean()), 6),
        f"hit@{k}": round(float((per_user["hits"] > 0).mean()), 6),
    }


def read(path: str, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """The CSV at ``path`` with at least ``columns``, or one sentence naming the file. Ids
    are text, as training reads them: ``007`` stays ``007`` in a file ``hide`` writes."""
    try:
        df = pd.read_csv(path, dtype={"user": str, "item": str})
    except FileNotFoundError:
        raise LightrecError(f"the {what} {path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:  # a folder, binary, not CSV
        raise LightrecError(f"the {what} {path} cannot be read as a CSV file ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LightrecError(f"the {what} {path} has no column {', '.join(missing)}")
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec submission",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser(
        "hide", help="hide each user's last n interactions and m random earlier ones"
    )
    sp.add_argument("log")
    sp.add_argument("train_out")
    sp.add_argument("hidden_out")
    sp.add_argument("--n", type=int, default=1, help="last items hidden per user")
    sp.add_argument("--m", type=int, default=0, help="random earlier items hidden per user")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random draw")
    sc = sub.add_parser("score", help="score a submission on the hidden interactions")
    sc.add_argument("submission")
    sc.add_argument("hidden")
    sc.add_argument("--k", type=int, default=10)
    a = ap.parse_args(argv)
    pair = ("user", "item")
    try:
        if a.cmd == "hide":
            log_ = read(a.log, "log", (*pair, "time"))
            train, hidden = hide(log_, a.n, a.m, a.seed, source=a.log)
            atomic_write(a.train_out, lambda f: train.to_csv(f, index=False))
            atomic_write(a.hidden_out, lambda f: hidden.to_csv(f, index=False))
            print(json.dumps({"train_rows": len(train), "hidden_rows": len(hidden)}))
        else:
            sub = read(a.submission, "submission", pair)
            print(json.dumps(score(sub, read(a.hidden, "hidden file", pair), a.k)))
    except LightrecError as e:
        return refuse(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
