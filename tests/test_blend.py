"""Blending: weights chosen on validation (a useless run gets none), applied to the refit
models; the submission contract; runs of other data are refused in one sentence."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import check_submission, compose_cfg, cpu_overrides, run_cmd
from lightrec.combine import blend, members
from lightrec.combine import weights as weighting
from lightrec.errors import LightrecError
from lightrec.metrics import ranked_metric_sums
from lightrec.runs.scoring import top_items
from lightrec.serving import predict
from lightrec.training import fit as train


def toy_parts(n_users=300, n_items=50, seed=0):
    """One held-out item per user; run A's scores know it (plus noise), run B's are noise."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.zeros(n_users, n_items)
    targets[torch.arange(n_users), torch.randint(0, n_items, (n_users,), generator=g)] = 1.0
    seen = torch.zeros(n_users, n_items)
    good = targets * 1.5 + torch.randn(n_users, n_items, generator=g)
    noise = torch.randn(n_users, n_items, generator=g)
    parts = [weighting.normalise(s, seen, "zscore") for s in (good, noise)]
    return parts, targets


def _ndcg_by_hand(total: torch.Tensor, targets: torch.Tensor, k: int = 10) -> float:
    """NDCG@k written out per user: items sorted by (-score, item), the reference for the
    search's own ranking (one held-out item per user: IDCG is 1)."""
    gains = []
    for scores, target in zip(total.tolist(), targets.tolist(), strict=True):
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        gains.append(sum(1 / np.log2(r + 2) for r, i in enumerate(ranked) if target[i] > 0))
    return float(np.mean(gains))


def test_a_useless_run_gets_no_weight():
    parts, targets = toy_parts()
    search = weighting.WeightSearch(parts, targets, "ndcg@10", 10)
    weights, best = weighting.choose_weights(search)
    assert weights[1] <= 0.05 and weights.sum() == pytest.approx(1.0)
    # the value it chose on is the metric of those weights, ranked independently
    total = sum(float(w) * p.float() for w, p in zip(weights, parts, strict=True))
    assert best == pytest.approx(_ndcg_by_hand(total, targets), abs=1e-6)
    assert _ndcg_by_hand(parts[1], targets) < 0.5 * best  # the noise is far below


def test_two_complementary_runs_share_the_weight():
    """Each run knows the held-out item of half the users: the blend beats both."""
    parts, targets = toy_parts(seed=1)
    g = torch.Generator().manual_seed(2)
    half = torch.arange(targets.shape[0]) % 2 == 0
    a = targets * 3 * half[:, None] + torch.randn(targets.shape, generator=g)
    b = targets * 3 * ~half[:, None] + torch.randn(targets.shape, generator=g)
    seen = torch.zeros_like(targets)
    parts = [weighting.normalise(s, seen, "zscore") for s in (a, b)]
    search = weighting.WeightSearch(parts, targets, "ndcg@10", 10)
    weights, best = weighting.choose_weights(search)
    singles = [search(np.eye(2)[i]) for i in (0, 1)]
    assert 0.3 <= weights[0] <= 0.7 and best > max(singles) + 0.1


@pytest.mark.parametrize("method", ["zscore", "rank"])
def test_the_weight_search_ranks_as_if_over_every_item(method):
    """Each weighting's metric from the members' best items equals the one over the whole
    catalogue, equal scores included, also for the users whose top-k needs an item outside
    every member's best (ranked again over every item: without that, the metrics differ)."""
    g = torch.Generator().manual_seed(3)
    n_users, n_items = 400, 60
    targets = (torch.rand(n_users, n_items, generator=g) < 0.05).float()
    seen = (torch.rand(n_users, n_items, generator=g) < 0.2).float() * (1 - targets)
    # whole-number scores: many equal ones, ranked in item order both ways
    raw = [(targets * 2 + torch.randn(n_users, n_items, generator=g)).round() for _ in range(3)]
    parts = [weighting.normalise(s, seen, method).half() for s in raw]
    search = weighting.WeightSearch(parts, targets, "ndcg@10", 10, pool=10)
    for w in weighting.simplex_grid(3, 0.1):
        total = sum(float(x) * p.float() for x, p in zip(w, parts, strict=True) if x > 0)
        # the reference: every item sorted by (-score, item), in plain Python
        top = torch.tensor(
            [sorted(range(n_items), key=lambda i, r=row: (-r[i], i))[:10] for row in total.tolist()]
        )
        sums = ranked_metric_sums(top, targets, [10])
        assert search(w) == pytest.approx(float(sums["ndcg@10"] / sums["users"]), abs=1e-6)
    # both ways were taken: some users from their candidates alone, some over every item
    assert 0 < search.full_rows < n_users * len(weighting.simplex_grid(3, 0.1))


def test_the_submission_ranks_the_scores_validation_chose_on():
    """Two items whose blended z-scores differ below half precision: the weight search
    (half precision, ties in item order) ranks item 0 first; so must the submission (it
    blended full precision, and ranked item 1 first)."""
    a = torch.tensor([[2.0012, 2.0015, 0.0, 0.0, -1.0, -3.0]])  # equal in half precision
    b = torch.tensor([[1.0, 1.0, 0.5, 0.0, -1.0, -1.5]])
    seen = torch.zeros_like(a)
    scorers = [(lambda rows, s=s: (s, seen), 0.5) for s in (a, b)]
    parts = [weighting.normalise(s, seen, "zscore").half() for s in (a, b)]
    search = weighting.WeightSearch(parts, torch.tensor([[1.0, 0, 0, 0, 0, 0]]), "ndcg@1", 1)
    assert search(np.array([0.5, 0.5])) == 1.0  # validation: item 0 is the top-1
    top, _ = top_items(blend.blended_scorer(scorers, "zscore"), [0], 1, 1)
    assert top.tolist() == [[0]]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_simplex_grid_sums_to_one(n):
    grid = weighting.simplex_grid(n, 0.1)
    assert all(np.isclose(w.sum(), 1.0) and (w >= 0).all() for w in grid)
    assert len({tuple(np.round(w, 6)) for w in grid}) == len(grid)


@pytest.fixture
def two_runs(tmp_path, tiny_csv):
    runs = []
    for config in ("ease", "multi_vae_v2"):
        run_dir = tmp_path / "saved" / "hydra_logs" / config / "d" / "t"
        train.fit(compose_cfg(config, cpu_overrides(tmp_path, tiny_csv), run_dir))
        runs.append(run_dir)
    return runs


def test_blend_cli_writes_a_submission_and_prints_its_path_last(tmp_path, tiny_csv, two_runs):
    out = tmp_path / "blended" / "submission.csv"
    p = run_cmd(
        [sys.executable, "-m", "lightrec.combine.blend", *map(str, two_runs), "--out", str(out)],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == str(out)
    weights = [float(line.split()[1]) for line in lines if line.startswith("weight ")]
    assert "members (validation ndcg@10):" in p.stdout  # each member's value (issue 39)
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0, abs=0.01)
    check_submission(out, pd.read_csv(tiny_csv), k=10)
    record = json.loads((out.parent / "blend.json").read_text())
    assert record["models"] == ["refit", "refit"] and record["weights"] == weights
    assert record["validation_users"] == 40 and len(record["val/ndcg@10"]["runs"]) == 2
    alone = record["val/ndcg@10"]["runs"]  # without one of two members: the other alone
    assert [v["blend_without"] for v in record["member_value"]] == [alone[1], alone[0]]
    assert [v["alone"] for v in record["member_value"]] == alone


def test_blend_of_one_run_with_itself_is_that_run(tmp_path, tiny_csv, two_runs):
    """Same run twice: the submission is the run's own (refit) recommendation."""
    ease = two_runs[0]
    path, _ = blend.blend([str(ease), str(ease)], tmp_path / "b.csv")
    sub = pd.read_csv(path)
    ref_cfg = compose_cfg("ease", [*cpu_overrides(tmp_path, tiny_csv), f"run_dir={ease}"])
    pd.testing.assert_frame_equal(sub, pd.read_csv(predict.run(ref_cfg)))


def test_runs_of_other_data_are_refused(tmp_path, tiny_csv, two_runs):
    other = tmp_path / "other"
    cfg = compose_cfg(
        "ease", [*cpu_overrides(tmp_path, tiny_csv), "data.holdout=valid_and_test"], other
    )
    train.fit(cfg)
    with pytest.raises(LightrecError, match="differ in their split") as e:
        members.load_members([str(two_runs[0]), str(other)])
    assert "\n" not in str(e.value)


def test_a_run_without_a_refit_model_submits_its_selected_one(tmp_path, tiny_csv, two_runs):
    """The blend applies what each run's own predict applies: its refit model, or, trained
    with refit=false, its selected one (the main job trains SASRec and RecVAE that way)."""
    no_refit = tmp_path / "no_refit"
    train.fit(compose_cfg("ease", [*cpu_overrides(tmp_path, tiny_csv), "refit=false"], no_refit))
    runs = [str(two_runs[0]), str(no_refit)]
    path, record = blend.blend(runs, out=tmp_path / "mixed.csv")
    assert record["models"] == ["refit", "selected"]
    assert path.is_file()
    _, record = blend.blend(runs, out=tmp_path / "selected.csv", use_refit=False)
    assert record["models"] == ["selected", "selected"]


def test_blend_the_latest_run_of_each_config(tmp_path, tiny_csv, two_runs):
    out = tmp_path / "latest.csv"
    code = blend.main(
        [
            "--latest",
            "ease",
            "multi_vae_v2",
            "--log-root",
            str(tmp_path / "saved" / "hydra_logs"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads((out.parent / "blend.json").read_text())["runs"] == [str(r) for r in two_runs]
    assert blend.main(["--latest", "sasrec", "--log-root", str(tmp_path / "nothing")]) == 2
