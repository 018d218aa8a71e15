"""The explicit-rating path behind notebooks/matrix_factorization_basics.ipynb."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lightrec.analysis import explicit as ex


@pytest.fixture(scope="module")
def ratings():
    """Rank-2 preferences plus noise, 200 users x 100 items, 40 % observed."""
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(200, 2)), rng.normal(size=(100, 2))
    full = np.clip(3 + p @ q.T + 0.3 * rng.normal(size=(200, 100)), 1, 5)
    u, i = np.nonzero(rng.random((200, 100)) < 0.4)
    df = pd.DataFrame({"user": u, "item": i, "rating": full[u, i].astype(np.float32)})
    return ex.split_ratings(df, seed=0)


def test_split_is_a_partition(ratings):
    parts = [ratings.train, ratings.valid, ratings.test]
    assert [len(p) for p in parts] == [
        round(0.8 * 8000 / 8000 * sum(map(len, parts))),
        *[len(p) for p in parts[1:]],
    ]
    keys = pd.concat(parts)[["user", "item"]]
    assert not keys.duplicated().any()


def test_full_rank_svd_reproduces_the_filled_block(ratings):
    train, _, _, _ = ex.dense_block(ratings, 50, 40)
    full = ex.truncated_svd(train, [40])[40]
    seen = ~np.isnan(train)
    assert np.allclose(full[seen], np.clip(train[seen], 1, 5), atol=1e-8)
    low = ex.truncated_svd(train, [2])[2]
    assert not np.allclose(low[seen], train[seen])


def test_biased_mf_learns_low_rank_ratings(ratings):
    base = ex.baseline_rmse(ratings)["mean + user + item bias"]
    fit = ex.train_biased_mf(ratings, dim=8, lr=2e-2, reg=0.01, max_epochs=60, patience=5)
    assert fit.test_rmse < 0.8 * base
    best = fit.history.valid_rmse.min()
    assert np.isclose(fit.history.valid_rmse[fit.best_epoch], best)


def test_autorec_learns_and_ignores_unobserved_entries(ratings):
    base = ex.baseline_rmse(ratings)["global mean"]
    fit = ex.train_autorec(ratings, hidden=32, lr=1e-2, batch_size=8, max_epochs=150, patience=15)
    assert fit.test_rmse < 0.8 * base
    x = torch.tensor([[4.0, 0.0, 2.0]])
    pred_a, pred_b = torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[3.0, 5.0, 2.0]])
    assert ex.masked_mse(pred_a, x, x > 0) == ex.masked_mse(pred_b, x, x > 0) == 0.5
