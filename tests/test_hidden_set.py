"""The competition-style hidden set a user builds for an offline check
(``lightrec submission hide --n N --m M``): the draw validation uses, training's time order."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lightrec.data.splits import last_n_random_m
from lightrec.runs import submission


def _log(n_users: int = 30, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(100, per_user, replace=False)
        times = rng.permutation(per_user) * 10 + 1000  # file order is not time order
        rows += [(u, int(i), int(t)) for i, t in zip(items, times, strict=True)]
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def test_hide_takes_the_last_n_and_m_random_earlier_items_per_user():
    log = _log()
    train, hidden = submission.hide(log, n=1, m=4, seed=3)
    assert len(train) + len(hidden) == len(log)
    assert (hidden.groupby("user").size() == 5).all()
    for u, rows in log.groupby("user"):
        last = rows.loc[rows["time"].idxmax(), "item"]
        assert last in set(hidden.loc[hidden["user"] == u, "item"])  # the last one always
    # seeded: the same draw again, another one with another seed
    assert submission.hide(log, n=1, m=4, seed=3)[1].equals(hidden)
    assert not submission.hide(log, n=1, m=4, seed=4)[1].equals(hidden)


def test_hide_draws_what_validation_draws():
    """One rule: the rows hidden are those last_n_random_m (data.split_strategy) holds out."""
    log = _log().sort_values(["user", "time"], kind="stable").reset_index(drop=True)
    _, hidden = submission.hide(log, n=2, m=3, seed=7)
    mask = last_n_random_m(log["user"].to_numpy(), n=2, m=3, seed=7)
    assert sorted(hidden.index) == np.flatnonzero(mask).tolist()


def test_hide_orders_dates_as_instants_and_drops_incomplete_rows(caplog):
    log = pd.DataFrame(
        {
            "user": ["a", "a", "a", None, "b", "b"],
            "item": ["x", "y", "z", "x", "x", "y"],
            # as text "9/1/2020" sorts after "12/1/2020"; in time it is earlier
            "time": ["12/1/2020", "9/1/2020", "1/2/2020", "1/1/2020", "1/1/2020", "1/2/2020"],
        }
    )
    train, hidden = submission.hide(log, n=1)
    assert hidden[["user", "item"]].values.tolist() == [["a", "x"], ["b", "y"]]
    assert len(train) == 3  # the row without a user is in neither file
    assert "dropped 1 rows with a missing user, item or time" in caplog.text


def test_hide_from_the_shell_writes_both_files(tmp_path, capsys):
    log = tmp_path / "log.csv"
    _log().to_csv(log, index=False)
    out_train, out_hidden = tmp_path / "train.csv", tmp_path / "hidden.csv"
    args = ["hide", str(log), str(out_train), str(out_hidden), "--n", "1", "--m", "4"]
    assert submission.main(args) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"train_rows": 30 * 7, "hidden_rows": 30 * 5}
    assert submission.main([*args[:4], "--n", "0"]) == 2
    assert "--n 0 must be at least 1" in capsys.readouterr().err
