"""The explicit-rating path, for the matrix-factorisation notebook: predict a user's 1-5
rating of an item and measure RMSE.

Three models on one 80/10/10 random split of the ratings: truncated SVD of a dense block,
biased matrix factorisation (Koren et al. 2009) trained with Adam, and a rating
autoencoder (I-AutoRec, Sedhain et al. 2015) trained with a masked MSE. The two trained
models stop early on validation RMSE and keep their best weights; test RMSE is computed
once at the end.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lightrec.data.datasets import movielens_100k
from lightrec.errors import LightrecError


@dataclass
class Ratings:
    """Encoded ratings: ``user``, ``item`` (0-based ints) and ``rating`` arrays per split."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    item_ids: list = field(default_factory=list)


def load_ratings(data_dir: str | Path = "data") -> pd.DataFrame:
    """MovieLens-100K as ``user,item,rating`` with 0-based contiguous ids."""
    path = movielens_100k(data_dir)
    df = pd.read_csv(path)
    if "rating" not in df.columns:
        raise LightrecError(
            f"{path} has no rating column (prepared by an older lightrec): delete "
            f"{path.parent} and run again to prepare it with ratings"
        )
    return encode(df[["user", "item", "rating"]])


def encode(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["user"] = pd.factorize(out["user"], sort=True)[0]
    out["item"] = pd.factorize(out["item"], sort=True)[0]
    out["rating"] = out["rating"].astype(np.float32)
    return out


def split_ratings(df: pd.DataFrame, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> Ratings:
    """A seeded random split of the rating rows.

    >>> df = pd.DataFrame({"user": range(10), "item": range(10), "rating": [3.0] * 10})
    >>> r = split_ratings(df, seed=1)
    >>> (len(r.train), len(r.valid), len(r.test))
    (8, 1, 1)
    """
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(df))
    a = int(round(fractions[0] * len(df)))
    b = a + int(round(fractions[1] * len(df)))
    parts = [
        df.iloc[order[s]].reset_index(drop=True) for s in (slice(0, a), slice(a, b), slice(b, None))
    ]
    train, valid, test = parts
    return Ratings(train, valid, test, int(df.user.max()) + 1, int(df.item.max()) + 1)


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2)))


def baseline_rmse(r: Ratings) -> dict[str, float]:
    """Test RMSE of the global mean and of the mean plus damped user and item biases."""
    mu = r.train.rating.mean()
    bu = (r.train.rating - mu).groupby(r.train.user).sum() / (r.train.groupby("user").size() + 5)
    resid = r.train.rating - mu - r.train.user.map(bu).fillna(0)
    bi = resid.groupby(r.train.item).sum() / (r.train.groupby("item").size() + 5)
    pred = mu + r.test.user.map(bu).fillna(0) + r.test.item.map(bi).fillna(0)
    return {
        "global mean": rmse(np.full(len(r.test), mu), r.test.rating),
        "mean + user + item bias": rmse(pred.clip(1, 5), r.test.rating),
    }


# ---------------------------------------------------------------- truncated SVD


def dense_block(r: Ratings, n_users: int = 200, n_items: int = 200):
    """The most active users x the most rated items (by training counts) as dense matrices:
    ``(train, test, users, items)`` with NaN where there is no rating."""
    users = r.train.user.value_counts().index[:n_users].to_numpy()
    items = r.train.item.value_counts().index[:n_items].to_numpy()
    out = []
    for part in (r.train, r.test):
        m = np.full((len(users), len(items)), np.nan, dtype=np.float64)
        sel = part[part.user.isin(users) & part.item.isin(items)]
        ui = pd.Index(users).get_indexer(sel.user)
        ii = pd.Index(items).get_indexer(sel.item)
        m[ui, ii] = sel.rating
        out.append(m)
    return out[0], out[1], users, items


def truncated_svd(train_block: np.ndarray, ranks: list[int]) -> dict[int, np.ndarray]:
    """Rank-k reconstructions of a block whose missing entries are filled with each user's
    mean (centred by it before the SVD, added back after), for every k in ``ranks``."""
    user_mean = np.nanmean(train_block, axis=1, keepdims=True)
    centred = np.nan_to_num(train_block - user_mean, nan=0.0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    return {k: np.clip(user_mean + (u[:, :k] * s[:k]) @ vt[:k], 1, 5) for k in ranks}


def block_rmse(pred: np.ndarray, test_block: np.ndarray) -> float:
    seen = ~np.isnan(test_block)
    return rmse(pred[seen], test_block[seen])


# ---------------------------------------------------------------- trained models


class BiasedMF(nn.Module):
    """r_ui = mu + b_u + b_i + p_u . q_i"""

    def __init__(self, n_users: int, n_items: int, dim: int, mu: float) -> None:
        super().__init__()
        self.p, self.q = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        self.bu, self.bi = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        for e in (self.p, self.q):
            nn.init.normal_(e.weight, std=0.05)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)
        self.mu = mu

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        dot = (self.p(u) * self.q(i)).sum(-1)
        return self.mu + self.bu(u).squeeze(-1) + self.bi(i).squeeze(-1) + dot


class AutoRec(nn.Module):
    """I-AutoRec: an item's vector of ratings by all users -> sigmoid hidden -> the same
    vector. Only observed entries enter the loss (:func:`masked_mse`)."""

    def __init__(self, n_users: int, hidden: int) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(n_users, hidden), nn.Linear(hidden, n_users)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.sigmoid(self.enc(x)))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed entries only; unobserved ones (zeros in the input)
    contribute nothing, whatever the model predicts there.

    >>> p, t = torch.tensor([[1.0, 9.0]]), torch.tensor([[2.0, 0.0]])
    >>> masked_mse(p, t, t > 0).item()
    1.0
    """
    diff = (pred - target) * observed
    return diff.pow(2).sum() / observed.sum().clamp(min=1)


@dataclass
class Fit:
    model: nn.Module
    history: pd.DataFrame  # epoch, train_rmse, valid_rmse
    best_epoch: int
    test_rmse: float


def _early_stopping_loop(model, epoch_fn, valid_fn, test_fn, max_epochs, patience) -> Fit:
    best, best_state, best_epoch, rows, bad = np.inf, None, -1, [], 0
    for epoch in range(max_epochs):
        train_rmse = epoch_fn()
        valid_rmse = valid_fn()
        rows.append((epoch, train_rmse, valid_rmse))
        if valid_rmse < best - 1e-5:
            best, best_state, best_epoch, bad = (
                valid_rmse,
                copy.deepcopy(model.state_dict()),
                epoch,
                0,
            )
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    hist = pd.DataFrame(rows, columns=["epoch", "train_rmse", "valid_rmse"])
    return Fit(model, hist, best_epoch, test_fn())


def train_biased_mf(
    r: Ratings,
    dim: int = 32,
    lr: float = 5e-3,
    weight_decay: float = 0.0,
    reg: float = 0.05,
    batch_size: int = 2048,
    max_epochs: int = 100,
    patience: int = 5,
    seed: int = 0,
) -> Fit:
    """Adam on the squared error plus ``reg`` x the squared norms of the rows in the batch;
    early stopping on validation RMSE."""
    torch.manual_seed(seed)
    t = {
        k: (
            torch.tensor(np.array(d.user)),
            torch.tensor(np.array(d.item)),
            torch.tensor(np.array(d.rating)),
        )
        for k, d in (("train", r.train), ("valid", r.valid), ("test", r.test))
    }
    model = BiasedMF(r.n_users, r.n_items, dim, float(r.train.rating.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def predict(u, i):
        model.eval()
        with torch.no_grad():
            return model(u, i).clamp(1, 5).numpy()

    def epoch_fn():
        model.train()
        u, i, y = t["train"]
        perm, total = torch.randperm(len(y)), 0.0
        for s in range(0, len(y), batch_size):
            b = perm[s : s + batch_size]
            pred = model(u[b], i[b])
            err = (pred - y[b]).pow(2).mean()
            penalty = reg * (model.p(u[b]).pow(2).sum(-1) + model.q(i[b]).pow(2).sum(-1)).mean()
            opt.zero_grad()
            (err + penalty).backward()
            opt.step()
            total += err.item() * len(b)
        return float(np.sqrt(total / len(y)))

    def score(split):
        u, i, y = t[split]
        return rmse(predict(u, i), y.numpy())

    return _early_stopping_loop(
        model, epoch_fn, lambda: score("valid"), lambda: score("test"), max_epochs, patience
    )


def train_autorec(
    r: Ratings,
    hidden: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    max_epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
) -> Fit:
    """I-AutoRec with a masked MSE and Adam; early stopping on validation RMSE. Validation and
    test ratings are read off the reconstruction of each item's *training* vector."""
    torch.manual_seed(seed)
    x = torch.zeros(r.n_items, r.n_users)
    cols = [torch.from_numpy(np.array(r.train[c])) for c in ("item", "user", "rating")]
    x[cols[0], cols[1]] = cols[2].float()
    observed = x > 0
    model = AutoRec(r.n_users, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    mu = float(r.train.rating.mean())
    rated = observed.any(dim=1).numpy()  # items with training ratings

    def epoch_fn():
        model.train()
        perm, se, n = torch.randperm(r.n_items), 0.0, 0
        for s in range(0, r.n_items, batch_size):
            b = perm[s : s + batch_size]
            loss = masked_mse(model(x[b]), x[b], observed[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            k = int(observed[b].sum())
            se, n = se + loss.item() * k, n + k
        return float(np.sqrt(se / max(n, 1)))

    def score(part: pd.DataFrame) -> float:
        model.eval()
        with torch.no_grad():
            full = model(x).clamp(1, 5).numpy()
        i, u = part.item.to_numpy(), part.user.to_numpy()
        pred = np.where(rated[i], full[i, u], mu)  # an item never rated in training: the mean
        return rmse(pred, part.rating.to_numpy())

    return _early_stopping_loop(
        model, epoch_fn, lambda: score(r.valid), lambda: score(r.test), max_epochs, patience
    )
