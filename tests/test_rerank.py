"""The re-ranker: trained on validation only (a leak test), the availability filter, the
submission contract, refusals in one sentence."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from helpers import check_submission, compose_cfg, cpu_overrides, make_log, run_cmd
from lightrec.combine import features, ranker, rerank
from lightrec.errors import LightrecError
from lightrec.training import fit as train

MEMBERS = ("ease", "item_knn")


def _items_csv(folder, n_items=30):
    rows = [
        f"{i},Film {i},{1990 + i % 8},{'Drama|War' if i % 3 else 'Comedy'}" for i in range(n_items)
    ]
    (folder / "items.csv").write_text("item,title,year,genres\n" + "\n".join(rows) + "\n")


def _runs(tmp_path, log: pd.DataFrame, name: str, holdout: str = "valid_and_test") -> list[str]:
    """The members trained on ``log`` (with an items.csv beside it), in their own folders."""
    folder = tmp_path / name
    folder.mkdir()
    csv = folder / "log.csv"
    log.to_csv(csv, index=False)
    _items_csv(folder)
    runs = []
    for config in MEMBERS:
        run_dir = folder / "saved" / config
        overrides = [*cpu_overrides(folder, csv), f"data.holdout={holdout}"]
        train.fit(compose_cfg(config, overrides, run_dir))
        runs.append(str(run_dir))
    return runs


def _last_rows_changed(log: pd.DataFrame, from_end: int) -> pd.DataFrame:
    """Each user's ``from_end``-th latest row (0: the last) names another item, one the user
    never had (the same items exist in the file, so the item map is the same)."""
    log = log.copy()
    n_items = log["item"].max() + 1
    for _, rows in log.groupby("user"):
        row = rows.sort_values("time").index[-1 - from_end]
        have = set(rows["item"])
        log.loc[row, "item"] = next(i for i in range(n_items) if i not in have)
    return log


def test_the_ranker_never_sees_a_test_item(tmp_path):
    """Changing every user's test item changes nothing the ranker learns; changing the
    validation items does (the check is sensitive)."""
    log = make_log(n_users=60)
    outs = {}
    for name, changed in (
        ("base", log),
        ("test_changed", _last_rows_changed(log, 0)),
        ("valid_changed", _last_rows_changed(log, 1)),
    ):
        out = tmp_path / name / "submission.csv"
        rerank.rerank(_runs(tmp_path, changed, name), out=out, n_candidates=10)
        outs[name] = (out.parent / "ranker.txt").read_text()
    assert outs["test_changed"] == outs["base"]
    assert outs["valid_changed"] != outs["base"]


def test_rerank_writes_the_submission_contract(tmp_path):
    runs = _runs(tmp_path, make_log(n_users=60), "data", holdout="valid")
    out = tmp_path / "rr" / "submission.csv"
    p = run_cmd(
        [
            sys.executable,
            *("-m", "lightrec", "rerank", *runs, "--out", str(out)),
            *("--candidates", "8", "--share-candidates"),
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == str(out)
    log = pd.read_csv(tmp_path / "data" / "log.csv")
    check_submission(out, log, k=10)
    record = json.loads((out.parent / "rerank.json").read_text())
    assert {"genres_share", "genres_seen", "year", "m0_z", "m1_rank"} <= set(record["features"])
    assert "recent_z" in record["features"]  # the first run scoring the latest items (issue 39)
    assert "title" not in " ".join(record["features"])  # text is for display only
    check = record["ranker_check"]
    assert {"ranker", "blend", "mean_z", "ease", "item_knn"} == set(check["held_back_recall@10"])
    assert check["held_back_users"] == round(0.2 * check["users"]) and check["trees"] >= 1
    held = check["held_back_recall@10"]
    assert check["applied"] == ranker.decide(held, check["best_member"], check["held_back_users"])
    assert check["best_member"] in ("ease", "item_knn")
    assert check["gain_over_best_member"] == pytest.approx(
        held["ranker"] - held[check["best_member"]], abs=1e-5
    )
    assert [r["member"] for r in check["member_value"]] == ["ease", "item_knn"]
    assert 0 < record["candidates_reach"] <= 1
    counts = record["candidates_per_member"]  # 8 each on average, shared out (issue 39)
    assert set(counts) == {"ease", "item_knn"} and sum(counts.values()) == 16
    shared = record["candidates_chosen"]
    assert shared["chosen"] >= shared["equal"]  # greedy from nothing: never below equal
    assert "candidates (ease " in p.stdout and "at equal counts" in p.stdout
    assert "margin over the blend" in p.stdout
    assert "members (held-back Recall@10 among the candidates):" in p.stdout
    studios = tmp_path / "studios"  # --item-features: other side files than the runs', with
    studios.mkdir()  # the competition's headers (the value's column named in the singular)
    (studios / "studios.tsv").write_text(
        "item\tstudio\n" + "".join(f"{i}\ts{i % 3}\n" for i in range(30))
    )
    (studios / "years.tsv").write_text("item\tyear\n" + "".join(f"{i}\t1990\n" for i in range(30)))
    out2 = tmp_path / "rr2" / "submission.csv"
    args = [*runs, "--out", str(out2), "--candidates", "8", "--item-features", str(studios)]
    assert rerank.main([*args, "--available-only"]) == 0
    features = json.loads((out2.parent / "rerank.json").read_text())["features"]
    assert "studios_share" in features and "years" in features and "genres_share" not in features
    assert rerank.main([*args, "--no-recency"]) == 0  # as many from each, by default
    record2 = json.loads((out2.parent / "rerank.json").read_text())
    assert "recent_z" not in record2["features"]
    assert record2["candidates_per_member"] == {"ease": 8, "item_knn": 8}
    assert record2["candidates_chosen"] is None
    (studios / "years.tsv").unlink()  # the filter without a year is refused, not ignored
    assert rerank.main([*args, "--available-only"]) == 2


def test_candidate_counts_are_shared_out_by_the_users_the_check_does_not_hold_back(
    tmp_path, monkeypatch
):
    """Issue 39: each member's count is chosen on validation, never on the held-back users
    that judge the ranker: the users whose ranks choose the counts and the held-back ones
    are disjoint and together every validation user, the same split the check draws."""
    runs = _runs(tmp_path, make_log(n_users=60), "data", holdout="valid")
    seen: dict[str, list] = {"split": [], "ranks": []}
    real_split, real_ranks = ranker.split_held_back, rerank.target_ranks

    def split(users, seed):
        out = real_split(users, seed)
        seen["split"].append((np.unique(users), out[0]))
        return out

    def ranks(ctx, users, targets, batch_size):
        seen["ranks"].append(np.asarray(users))
        return real_ranks(ctx, users, targets, batch_size)

    monkeypatch.setattr(ranker, "split_held_back", split)
    monkeypatch.setattr(rerank, "split_held_back", split)
    monkeypatch.setattr(rerank, "target_ranks", ranks)
    _, record = rerank.rerank(runs, out=tmp_path / "rr" / "s.csv", n_candidates=6, per_member=True)
    (users, held), (users_check, held_check) = seen["split"]  # counts, then the check
    assert np.array_equal(users, users_check) and np.array_equal(held, held_check)
    (choosers,) = seen["ranks"]
    assert len(held) and not set(choosers) & set(held)
    assert set(choosers) | set(held) == set(users)
    assert sum(record["candidates_per_member"].values()) == 12
    ranks_ = np.array([[0, 9], [1, 9], [2, 9], [9, 0], [0, 1]])
    assert features.choose_counts(ranks_, total=4, step=1, cap=2) == [2, 2]  # the cap binds
    assert features.reach_of(ranks_, [3, 1]) == 1.0 and features.reach_of(ranks_, [1, 1]) == 0.6


def test_the_availability_filter_drops_films_released_after_the_users_last_year():
    items = pd.DataFrame({"item": ["a", "b", "c", "d"], "year": [1990, 1997, 1999, np.nan]})
    users = pd.DataFrame({"user": ["u1", "u2"], "last_year": [1997, 2001]})
    mask = features.available(items["year"].to_numpy(float), users["last_year"].to_numpy(float))
    kept = {u: items["item"][m].tolist() for u, m in zip(users["user"], mask, strict=True)}
    assert kept == {"u1": ["a", "b", "d"], "u2": ["a", "b", "c", "d"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--candidates", "0"], "--candidates 0 must be at least 1"),
        (["--top-k", "0"], "--top-k=0 must be at least 1"),
        (["--out", "{tmp}"], "is a folder: name the file"),
    ],
)
def test_bad_rerank_options_are_one_sentence(tmp_path, capsys, args, message):
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert rerank.main([*runs, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_runs_that_are_not_finished_are_refused(tmp_path, capsys):
    assert rerank.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "is not a finished training run" in capsys.readouterr().err


def _planted(signal_column: int, seed: int = 0) -> dict:
    """Candidates where the validation item is always the one with the largest value of one
    feature column (10 of 40 candidates are the top-10: chance is 0.25)."""
    rng = np.random.default_rng(seed)
    n_users, per = 200, 40
    x = rng.normal(size=(n_users * per, 4)).astype(np.float32)
    y = np.zeros(n_users * per, dtype=bool)
    for u in range(n_users):
        y[u * per + int(np.argmax(x[u * per : (u + 1) * per, signal_column]))] = True
    return {
        "x": x,
        "y": y,
        "group": np.full(n_users, per),
        "user": np.repeat(np.arange(n_users), per),
        "item": np.tile(np.arange(per), n_users),
    }


def test_the_ranker_learns_from_features(tmp_path):
    """A planted signal in a side feature (column 2): the ranker finds it, on users it never
    trained on, and beats the blend of the members (column 0, noise): it is applied."""
    _, applied, check = ranker.fit_ranker(_planted(2), seed=0, members={"noise": 0})
    held = check["held_back_recall@10"]
    assert held["ranker"] > 0.9 and held["noise"] < 0.4 and check["gain_over_blend"] > 0.5
    assert check["applied"] == "ranker" and check["held_back_users"] == 40
    assert hasattr(applied, "feature_importance")  # the LightGBM booster


def test_the_blend_is_applied_where_the_ranker_does_not_beat_it():
    """The signal is a member's own score (column 1): the blend of the members already ranks
    perfectly, the ranker cannot gain on the held-back users, so the blend is applied."""
    _, applied, check = ranker.fit_ranker(_planted(1), seed=0, members={"a": 0, "b": 1})
    assert check["held_back_recall@10"]["blend"] == 1.0
    assert check["gain_over_blend"] <= 0 and check["applied"] == "blend"
    assert check["blend_weights"][1] > 0.5  # the member that knows
    assert isinstance(applied, ranker.CandidateBlend)


def test_each_member_is_valued_by_the_blend_without_it():
    """Issue 39: a member that knows (b) is worth the blend's gain over the blend without it;
    a noise member (a) is worth nothing; each scored on the held-back users."""
    _, _, check = ranker.fit_ranker(_planted(1), seed=0, members={"a": 0, "b": 1})
    value = {r["member"]: r for r in check["member_value"]}
    assert value["b"]["alone"] == 1.0 and value["b"]["blend_without"] < 0.5
    assert value["b"]["marginal"] > 0.5 and value["a"]["marginal"] == 0.0
    assert value["a"]["blend_without"] == 1.0  # b alone
    assert check["best_member"] == "b"


def test_the_best_member_goes_out_where_the_ranker_and_the_blend_lose_to_it():
    assert ranker.decide({"ranker": 0.29, "blend": 0.28, "ease": 0.30}, "ease") == "ease"
    # issue 40: two held-back users decide nothing
    assert ranker.decide({"ranker": 0.9, "blend": 0.1, "ease": 0.1}, "ease", 2) == "blend"
    assert ranker.decide({"ranker": 0.31, "blend": 0.28, "ease": 0.31}, "ease") == "ease"
    assert ranker.decide({"ranker": 0.32, "blend": 0.33, "ease": 0.30}, "ease") == "blend"


def test_two_runs_of_one_config_are_two_members(tmp_path):
    """Issue 40.9: members are named by place: two EASE runs are ``ease`` and ``ease#2``."""
    from types import SimpleNamespace

    from lightrec.combine.members import labels

    runs = [SimpleNamespace(cfg=SimpleNamespace(model_name=n)) for n in ["ease", "ease", "rp3"]]
    assert labels(runs) == ["ease", "ease#2", "rp3"]


def test_too_few_runs_or_validation_users_are_one_sentence(tmp_path):
    with pytest.raises(LightrecError, match="at least two run folders"):
        rerank.rerank([], out=tmp_path / "s.csv")
    few = _planted(1)
    few = {k: v[: 3 * 40] for k, v in few.items() if k != "group"} | {"group": np.full(3, 40)}
    with pytest.raises(LightrecError, match="3 validation users are too few for the ranker"):
        ranker.fit_ranker(few, seed=0, members={"a": 0})


def test_count_features_do_not_shift_between_a_stage_and_a_larger_one_of_its_shape():
    """The ranker learns on the validation stage's history and is applied to the
    submission's, which holds more rows: an item's popularity and a user's activity are read
    against their stage's mean, so a stage with every user twice (items twice as popular) or
    every item twice (users twice as active) gives the same features. Raw log counts (the
    previous features) moved by about log 2 here."""
    from lightrec.data.item_features import ItemFeatures

    rng = np.random.default_rng(0)
    base = sp.csr_matrix((rng.random((30, 20)) < 0.3).astype(np.float32))

    def stats(history: sp.csr_matrix) -> dict[str, np.ndarray]:
        u, i = history.nonzero()
        time = (u % 30) * 20 + i % 20  # a copy's rows at their original's times
        ctx = features.context(history, [], u, i, time, ItemFeatures())
        return {**ctx.item_stats, **ctx.user_stats}

    plain = stats(base)
    more_users = stats(sp.vstack([base, base]).tocsr())
    more_items = stats(sp.hstack([base, base]).tocsr())
    for name in ("pop_all", "pop_recent"):
        np.testing.assert_allclose(more_users[name], plain[name], rtol=1e-6)
    np.testing.assert_allclose(more_items["user_items"], plain["user_items"], rtol=1e-6)
    counts = np.diff(base.tocsc().indptr)
    assert not np.allclose(np.log1p(2 * counts), np.log1p(counts))  # what raw counts did


def test_the_protocols_rerank_again_repeats_bests_rerank_on_the_same_members(tmp_path):
    """benchmarks/eval_protocol.py --rerank-again: the members of the `best` re-rank under a
    seed's folder, re-ranked again (in their order) with the same options, give that
    submission back; other options are passed through; no re-rank there is one sentence."""
    import runpy

    from helpers import ROOT
    from lightrec.runs.submission import score

    protocol = runpy.run_path(str(ROOT / "benchmarks" / "eval_protocol.py"))
    log = make_log(n_users=60)
    runs = _runs(tmp_path, log, "work")
    work = tmp_path / "work"
    first = work / "saved" / "reranks" / "first" / "submission.csv"
    rerank.rerank(runs, out=first, n_candidates=10)
    hidden = log.groupby("user").tail(1)
    row = protocol["rerank_again"](work, work / "saved", ["--candidates", "10"], hidden)
    again = work / "again" / "work" / "submission.csv"
    assert again.read_text() == first.read_text()
    assert row["recall@10"] == score(pd.read_csv(first), hidden)["recall@10"]
    assert row["model"] == "rerank again --candidates 10" and row["trees"] >= 1
    record = json.loads((again.parent / "rerank.json").read_text())
    assert record["runs"] == runs and record["candidates_per_member"]["ease"] == 10
    with pytest.raises(SystemExit, match="no re-rank of `best`"):
        protocol["rerank_again"](work, tmp_path / "elsewhere", [], hidden)


def test_the_protocols_ceiling_weights_the_members_on_the_hidden_rows(tmp_path):
    """benchmarks/eval_protocol.py --ceiling: the `best` members' weighting chosen on the
    hidden rows themselves. Hidden rows that are each user's top item of the first member
    give that member alone (and the ceiling) a recall of 1 with all the weight; the second
    member alone is scored too."""
    import runpy

    import torch

    from helpers import ROOT
    from lightrec.runs.finished import FinishedRun
    from lightrec.runs.scoring import best_first

    protocol = runpy.run_path(str(ROOT / "benchmarks" / "eval_protocol.py"))
    log = make_log(n_users=60)
    runs = _runs(tmp_path, log, "work")
    work = tmp_path / "work"
    rerank.rerank(runs, out=work / "saved" / "reranks" / "first" / "submission.csv")
    first = FinishedRun.open(runs[0])
    history = first.history()
    rows = list(range(len(history.users)))
    with torch.no_grad():
        scores, seen = first.submission_scorer(history, True, torch.device("cpu"))(rows)
        top1 = best_first(scores.masked_fill(seen > 0, float("-inf")), 1)[1][:, 0].numpy()
    hidden = pd.DataFrame({"user": history.users, "item": np.asarray(first.item_ids)[top1]}).astype(
        "int64"
    )
    row = protocol["ceiling"](work, work / "saved", hidden, trials=3)
    assert row["members_alone"]["ease"] == 1.0 and row["recall@10"] == 1.0
    assert row["weights"] == {"ease": 1.0, "item_knn": 0.0} and row["trials"] == 3
    assert 0.0 <= row["members_alone"]["item_knn"] <= 1.0
    with pytest.raises(SystemExit, match="no re-rank of `best`"):
        protocol["ceiling"](work, tmp_path / "elsewhere", hidden, trials=1)
