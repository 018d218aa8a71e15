"""Reading, cleaning, encoding and splitting through the RecSysDataModule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import dm_for
from lightrec.data.interactions import read_interactions
from lightrec.data.splits import TEST, TRAIN, VALID, leave_one_out, random_holdout
from lightrec.errors import LightrecError


def rows(dm):
    a, m = dm.arrays, dm.meta
    u = np.asarray(m["user_ids"], dtype=object)[a["user"]]
    i = np.asarray(m["item_ids"], dtype=object)[a["item"]]
    return list(zip(u.tolist(), i.tolist(), a["split"].tolist(), strict=True))


def test_string_ids_missing_rows_duplicates_and_filter(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text(
        "user,item,time,rating\n"
        "bob,x,3,5\n"
        "bob,y,1,4\n"
        "bob,x,0,1\n"  # earlier repeat of (bob, x): this one is kept
        "amy,y,5,2\n"
        ",z,6,1\n"  # missing user: dropped
        "amy,,7,1\n"  # missing item: dropped
        "amy,z,2,3\n"
        "cat,x,1,1\n"  # cat has one item: filtered by min_interactions=2
    )
    dm = dm_for(csv, tmp_path, min_interactions=2)
    assert dm.meta["user_ids"] == ["amy", "bob"]  # sorted, stable
    st = dm.meta["stats"]
    assert (st["rows_read"], st["dropped_missing"], st["dropped_duplicates"]) == (8, 2, 1)
    assert st["dropped_users_below_min"] == 1
    # by user, then time; last item of each user is validation
    assert rows(dm) == [
        ("amy", "z", TRAIN),
        ("amy", "y", VALID),
        ("bob", "x", TRAIN),
        ("bob", "y", VALID),
    ]
    assert dm.meta["item_ids"] == ["x", "y", "z"]  # only items of kept users, sorted


def test_integer_ids_stay_integers_when_a_value_is_missing(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user,item,time\n10,7,1\n2,7,2\n,8,3\n2,9,4\n10,9,5\n")
    dm = dm_for(csv, tmp_path)
    assert dm.meta["user_ids"] == [2, 10]  # numeric order, ints (not 2.0, not '10' < '2')
    assert all(isinstance(x, int) for x in dm.meta["item_ids"])


def test_ties_in_time_broken_by_file_order(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user,item,time\n1,a,5\n1,b,5\n1,c,5\n")
    dm = dm_for(csv, tmp_path, holdout="valid_and_test")
    assert rows(dm) == [(1, "a", TRAIN), (1, "b", VALID), (1, "c", TEST)]


def test_dates_as_time_and_other_column_names(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("uid,iid,when\n1,a,2024-01-03\n1,b,2024-01-01\n1,c,2024-01-02\n")
    dm = dm_for(csv, tmp_path, columns={"user": "uid", "item": "iid", "time": "when"})
    assert rows(dm)[-1] == (1, "a", VALID)


def test_time_none_means_file_order(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user,item\n1,b\n1,a\n")
    dm = dm_for(csv, tmp_path, columns={"user": "user", "item": "item", "time": None})
    assert rows(dm) == [(1, "b", TRAIN), (1, "a", VALID)]


def test_views_share_one_split(tiny_csv, tmp_path):
    dm = dm_for(tiny_csv, tmp_path, holdout="valid_and_test")
    n = len(dm.arrays["user"])
    assert dm.train_csr.nnz + dm.valid_csr.nnz + dm.test_csr.nnz == n
    assert dm.valid_csr.multiply(dm.train_csr).nnz == 0
    assert dm.test_csr.multiply(dm.train_csr).nnz == 0
    assert dm.valid_csr.getnnz(axis=1).max() == 1 and dm.test_csr.getnnz(axis=1).max() == 1
    batch = next(iter(dm.test_dataloader()))
    # test input is train + valid history
    u = int(batch["users"][0])
    n_in = int(batch["input_indptr"][1] - batch["input_indptr"][0])
    assert n_in == dm.train_csr[u].nnz + dm.valid_csr[u].nnz


def test_random_split_is_seeded_and_keeps_a_training_item():
    user = np.repeat(np.arange(50), 7)
    a = random_holdout(user, 0.3, seed=1)
    assert np.array_equal(a, random_holdout(user, 0.3, seed=1))
    assert not np.array_equal(a, random_holdout(user, 0.3, seed=2))
    per_user = np.bincount(user[a == VALID], minlength=50)
    assert (per_user == 2).all()  # floor(0.3 * 7)


def test_leave_one_out_vectorised_matches_per_user_reference():
    rng = np.random.default_rng(0)
    user = np.sort(rng.integers(0, 200, size=3000))
    got = leave_one_out(user, "valid_and_test")
    want = np.zeros_like(got)
    for u in np.unique(user):
        idx = np.flatnonzero(user == u)
        if len(idx) >= 3:
            want[idx[-1]], want[idx[-2]] = TEST, VALID
    assert np.array_equal(got, want)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("user,item,time\n", "has a header but no rows"),
        ("user,product,time\n1,2,3\n", "has no column 'item'"),
        ("user,item,time\n1,2,yesterday-ish\n", "row 2"),
    ],
)
def test_bad_files_give_one_sentence(tmp_path, content, expected):
    csv = tmp_path / "log.csv"
    if content is not None:
        csv.write_text(content)
    with pytest.raises(LightrecError, match=expected) as e:
        read_interactions(csv, {"user": "user", "item": "item", "time": "time"})
    assert str(csv) in str(e.value) and "\n" not in str(e.value)


def test_unknown_split_strategy_names_the_key(tiny_csv, tmp_path):
    with pytest.raises(LightrecError, match="data.split_strategy"):
        dm_for(tiny_csv, tmp_path, split_strategy="by_moon_phase")


def test_frame_reading_matches_pandas(tiny_csv):
    log = read_interactions(tiny_csv, {"user": "user", "item": "item", "time": "time"})
    df = pd.read_csv(tiny_csv)
    assert log.user.tolist() == df.user.tolist() and log.time.tolist() == df.time.tolist()


def reference_first_rows(user, item, time):
    """The rule in plain pandas: order by (user, time, file order), keep each pair's first."""
    df = pd.DataFrame({"u": user, "i": item, "t": time, "row": np.arange(len(user))})
    df = df.sort_values(["u", "t", "row"], kind="stable")
    return df.drop_duplicates(["u", "i"], keep="first")["row"].to_numpy()


@pytest.mark.parametrize("times", ["small ints", "nanosecond dates", "floats", "huge range"])
@pytest.mark.parametrize("split", [False, True])
def test_first_rows_matches_the_plain_rule(times, split, monkeypatch):
    import lightrec.data.order as order

    if split:  # the two-core path, on a small input
        monkeypatch.setattr(order, "_halves", lambda counts: len(counts) // 2)
    rng = np.random.default_rng(len(times))
    n = 5000
    user = rng.integers(0, 300, n) * 2  # every other user code has no rows
    item = rng.integers(0, 40, n)
    time = {
        "small ints": rng.integers(0, 50, n),  # many ties: file order decides
        "nanosecond dates": rng.integers(0, 60, n) * 86_400 * 10**9 + 1_600_000_000 * 10**9,
        "floats": rng.integers(0, 50, n) / 7.0,
        "huge range": rng.integers(-(2**62), 2**62, n),
    }[times]
    kept = order.first_rows(user, item, time)
    want = reference_first_rows(user, item, time)
    assert np.array_equal(kept.rows, want)
    assert np.array_equal(kept.user, user[want]) and np.array_equal(kept.item, item[want])
    assert np.array_equal(kept.time, time[want])
