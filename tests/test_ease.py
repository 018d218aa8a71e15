"""EASE and Popularity: closed form, memory guard, the competition split, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from helpers import build_model, compose_cfg, cpu_overrides
from lightrec.data.splits import TEST, TRAIN, VALID, competition_split, last_n_random_m
from lightrec.errors import LightrecError
from lightrec.serving import predict
from lightrec.training import fit as train


def test_closed_form_equals_least_squares_with_zero_diagonal():
    rng = np.random.default_rng(0)
    X = (rng.random((60, 12)) < 0.3).astype(np.float64)
    lam = 2.5
    model = build_model("ease", num_items=12, lam=lam, dtype="float64")
    model.fit_closed_form(sp.csr_matrix(X))
    B = model.B.double().numpy()
    assert np.allclose(np.diag(B), 0.0)
    for j in range(12):  # ridge regression of item j on every other item
        others = [i for i in range(12) if i != j]
        A = X[:, others]
        b = np.linalg.solve(A.T @ A + lam * np.eye(11), A.T @ X[:, j])
        assert np.allclose(B[others, j], b, atol=1e-5)


def test_float32_and_float64_agree():
    X = sp.random(200, 40, density=0.2, random_state=1, format="csr")
    a = build_model("ease", num_items=40, lam=10.0, dtype="float32")
    b = build_model("ease", num_items=40, lam=10.0, dtype="float64")
    a.fit_closed_form(X)
    b.fit_closed_form(X)
    assert torch.allclose(a.B, b.B, atol=1e-4)


def test_memory_guard_stops_before_allocating():
    # float64 on the CPU: the one n x n it inverts in place (80 GB) and B's float32 copy
    model = build_model("ease", num_items=100_000)
    with pytest.raises(
        LightrecError, match=r"100,000 items needs about 120\.0 GB .*free on the CPU"
    ):
        model.fit_closed_form(sp.csr_matrix((10, 100_000), dtype=np.float32))
    assert model.B.numel() == 0  # nothing was allocated


def test_the_budget_key_is_an_optional_cap():
    model = build_model("ease", num_items=2_000, memory_budget_gb=0.01)
    with pytest.raises(LightrecError, match=r"over model.memory_budget_gb=0.01"):
        model.fit_closed_form(sp.csr_matrix((10, 2_000), dtype=np.float32))


def test_a_27k_item_catalogue_fits_an_80_gb_gpu(monkeypatch):
    """MovieLens-20M's 26,744 items in float32 need 5.7 GB: the guard asks the GPU what is
    free (the old guard assumed float64 and a fixed 8 GB budget, and refused)."""
    from lightrec.models import item_item

    monkeypatch.setattr(item_item, "available_bytes", lambda device: 80 * 10**9)
    model = build_model("ease", num_items=26_744)
    model.check_fit_memory(torch.device("cuda"), torch.float32)  # no error
    monkeypatch.setattr(item_item, "available_bytes", lambda device: 4 * 10**9)
    with pytest.raises(LightrecError, match="5.7 GB .* over 4.0 GB free on the CUDA"):
        model.check_fit_memory(torch.device("cuda"), torch.float32)


def test_the_cpu_fit_inverts_in_the_gram_matrix_own_memory():
    """EASE's CPU fit holds one n x n (the Gram matrix, inverted by LAPACK in place), so a
    23,715-item catalogue fits in 6.8 GB where the Gram matrix and a Cholesky factor beside
    it took two (and scipy's sparse product a third)."""
    from lightrec.models.ease import ease_weights, gram_matrix

    rng = np.random.default_rng(3)
    X = sp.csr_matrix((rng.random((300, 130)) < 0.1).astype(np.float32))
    for dtype in (torch.float64, torch.float32):
        gram = gram_matrix(X, torch.device("cpu"), dtype)
        assert torch.equal(gram, torch.from_numpy((X.T @ X).toarray()).to(dtype))
        reference = gram.clone()
        reference.diagonal().add_(4.0)
        p = torch.linalg.inv(reference)
        expected = -p / p.diagonal()
        expected.diagonal().zero_()
        address = gram.data_ptr()
        b = ease_weights(gram, 4.0)
        assert b.data_ptr() == address  # no second n x n
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        assert torch.allclose(b, expected, atol=tol), dtype


def test_a_not_positive_definite_float32_gram_is_one_sentence():
    from lightrec.models.ease import spd_inverse_

    with pytest.raises(LightrecError, match="not positive definite .* model.dtype=float64"):
        spd_inverse_(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_item_item_models_score_csr_histories_without_the_dense_product(monkeypatch):
    """Scores of CSR batches are sums of B's rows (nnz x I operations), equal to ``x @ B``;
    the dense product is never called for them."""
    from lightrec.data.batches import CSRCollate

    rng = np.random.default_rng(4)
    dense_x = (rng.random((80, 30)) < 0.2).astype(np.float32)
    dense_x[5] = 0  # a user with no history
    X = sp.csr_matrix(dense_x)
    for name, extra in [("ease", {}), ("higher_order_ease", {"pairs": 10, "min_support": 2})]:
        model = build_model(name, num_items=30, **extra)
        model.fit_closed_form(X)
        batch = CSRCollate(X)(list(range(80)))
        dense = model.scores(torch.from_numpy(X.toarray()))

        def no_dense_product(x):
            raise AssertionError("the dense product ran")

        monkeypatch.setattr(model, "scores", no_dense_product)
        got, seen = model.score_batch(batch)
        assert torch.allclose(got, dense, atol=1e-5), name
        assert torch.equal(seen, torch.from_numpy(X.toarray())), name
        if name == "ease":
            assert not got[5].any()  # no history, no score


def test_popularity_ranks_by_training_users():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    pop = build_model("pop", num_items=4)
    pop.fit_closed_form(X)
    assert pop.counts.tolist() == [1.0, 3.0, 0.0, 1.0]


def test_last_n_random_m_by_hand():
    user = np.array([0] * 8 + [1] * 2)
    mask = last_n_random_m(user, n=2, m=3, seed=0)
    assert mask[6:8].all() and mask[:6].sum() == 3  # last 2 + 3 of the 6 earlier
    assert mask[8:].tolist() == [False, True]  # user 1 keeps one row
    assert np.array_equal(mask, last_n_random_m(user, n=2, m=3, seed=0))
    split = competition_split(user, "valid_and_test", n=1, m=1, seed=0)
    assert (split[:8] == TEST).sum() == 2 and (split[:8] == VALID).sum() == 2
    assert split[7] == TEST and (split[:8] == TRAIN).sum() == 4


def test_ease_run_and_predict(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "data.holdout=valid_and_test"]
    cfg = compose_cfg("ease", overrides, run_dir)
    score = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert score == metrics["val"]["ndcg@10"]
    for part in ("val", "test"):
        assert {f"{m}@{k}" for m in ("recall", "ndcg", "hit", "coverage") for k in (10, 20)} <= set(
            metrics[part]
        )
    assert metrics["fit_time_s"] > 0
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["state_dict"]["B"].shape == (30, 30)
    sub = pd.read_csv(predict.run(cfg))
    assert (sub.groupby("user").size() == 10).all()


def test_the_refit_fits_while_the_selected_model_holds_no_matrix(tmp_path, tiny_csv, monkeypatch):
    """One n x n model in memory at a time: the selected EASE gives B up (it is in best.ckpt)
    while the refit fits its own, and has it back afterwards."""
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    seen_during_refit = []
    real_refit = train._refit
    made = []
    real_build = train.build_model

    def build(cfg, num_items):
        made.append(real_build(cfg, num_items))
        return made[-1]

    def refit(*args, **kw):
        seen_during_refit.append(made[0].B.numel())
        return real_refit(*args, **kw)

    monkeypatch.setattr(train, "build_model", build)
    monkeypatch.setattr(train, "_refit", refit)
    result = train.fit(compose_cfg("ease", cpu_overrides(tmp_path, tiny_csv), run_dir))
    assert seen_during_refit == [0]
    selected = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert torch.equal(result.model.B, selected["state_dict"]["B"])
    assert result.model.B.shape == (30, 30)


def test_competition_split_through_the_data_module(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    overrides = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.split_strategy=last_n_random_m",
        "data.last_n=1",
        "data.random_m=2",
    ]
    train.run(compose_cfg("pop", overrides, run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["valid"] == 40 * 3  # 3 held-out items for each of 40 users


def _swap_test_items(csv, out):
    """The same log with every user's last (test) item replaced by another item."""
    log = pd.read_csv(csv)
    last = log.sort_values(["user", "time"]).groupby("user").tail(1).index
    log.loc[last, "item"] = (log.loc[last, "item"] + 15) % 30
    log = log.drop_duplicates(["user", "item"], keep="last")
    log.to_csv(out, index=False)
    return out


@pytest.mark.parametrize("config", ["multi_vae_v2", "ease"])
def test_test_items_never_influence_model_selection(tmp_path, tiny_csv, config):
    """Swap every test item for another: everything selected on validation must stay
    identical (epochs, weights, validation metrics); only test metrics may change."""
    results = []
    for name, csv in (("a", tiny_csv), ("b", _swap_test_items(tiny_csv, tmp_path / "b.csv"))):
        run_dir = tmp_path / name
        ov = [
            *cpu_overrides(tmp_path, csv),
            "data.holdout=valid_and_test",
            "trainer.max_epochs=4",
            "data.min_interactions=1",
            "data_cache.use_cache=false",
        ]
        score = train.run(compose_cfg(config, ov, run_dir))
        state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results.append((score, state, metrics))
    (sa, wa, ma), (sb, wb, mb) = results
    assert sa == sb and ma["val"] == mb["val"] and ma["best_epoch"] == mb["best_epoch"]
    for k in wa["state_dict"]:
        assert torch.equal(wa["state_dict"][k], wb["state_dict"][k]), k
    assert ma["test"] != mb["test"]  # the swap did change what test sees


def test_the_gpu_gram_by_row_blocks_is_exactly_scipys():
    """The GPU fit's X^T X (dense products of user blocks, run here on the CPU) is the exact
    co-occurrence count matrix, whatever the block size."""
    from lightrec.models.ease import gram_by_row_blocks

    rng = np.random.default_rng(0)
    x = sp.random(103, 37, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    x.data[:] = 1.0
    want = (x.T @ x).toarray()
    for rows in (1, 10, 103, None):
        got = gram_by_row_blocks(x, torch.device("cpu"), rows=rows)
        assert np.array_equal(got.numpy(), want), rows
