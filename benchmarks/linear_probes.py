"""Two probes of the linear family on a protocol's training file, in plain numpy, choosing on
validation only and scoring the hidden rows once (docs/history/RESULTS-log.md, "Linear probes").

``python benchmarks/linear_probes.py hybrid [--data CSV] [--random-m M]``: the user+item
EASE hybrid, ``(1 - w) z(x_u B) + w z(A X)_u`` (item EASE ``B``, user-user EASE ``A``, a
z-score per user), against item EASE alone; lambdas and ``w`` chosen on validation.

``python benchmarks/linear_probes.py ials-fold-in [--data CSV] [--random-m M]``: the
``implicit`` library's iALS user factors against the ridge fold-in of its item factors
that ``lightrec.models.ials`` scores with, on validation, for a few settings.

The hidden set is the protocol's (each user's last item plus ``M`` random earlier ones,
hide seed 0; validation the same way from the rest, seed 1), MovieLens-100K by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.datasets import movielens_100k
from lightrec.runs.submission import hide, score

ROOT = Path(__file__).resolve().parents[1]


def matrix(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    users, u = np.unique(df.user, return_inverse=True)
    items, i = np.unique(df.item, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(df)), (u, i)), shape=(len(users), len(items)))
    x.data[:] = 1.0
    return users, items, x


def ease(gram: np.ndarray, lam: float) -> np.ndarray:
    g = gram.copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def top10(s: np.ndarray, x: sp.csr_matrix, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    s = s.copy()
    s[x.toarray() > 0] = -np.inf
    top = np.argsort(-s, axis=1)[:, :10]
    return pd.DataFrame({"user": np.repeat(users, 10), "item": items[top.ravel()]})


def z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def hybrid_lists(df: pd.DataFrame, combos: list[tuple]) -> dict[tuple, pd.DataFrame]:
    users, items, x = matrix(df)
    xd = x.toarray()
    item_b = {lam: ease((x.T @ x).toarray(), lam) for lam in {c[0] for c in combos}}
    user_a = {lam: ease((x @ x.T).toarray(), lam) for lam in {c[1] for c in combos if c[1]}}
    out = {}
    for lam_i, lam_u, w in combos:
        s = xd @ item_b[lam_i]
        if lam_u:
            s = (1 - w) * z(s) + w * z(user_a[lam_u] @ xd)
        out[(lam_i, lam_u, w)] = top10(s, x, users, items)
    return out


def probe_hybrid(train: pd.DataFrame, hidden: pd.DataFrame, m: int) -> None:
    inner, val = hide(train, n=1, m=m, seed=1)
    combos: list[tuple] = [(lam, None, 0.0) for lam in (50, 100, 200, 300, 500, 1000)]
    combos += [
        (li, lu, w) for li in (100, 300, 500) for lu in (10, 50, 200, 1000) for w in (0.2, 0.4, 0.6)
    ]
    on_val = {c: score(s, val)["recall@10"] for c, s in hybrid_lists(inner, combos).items()}
    item_only = max((c for c in on_val if c[1] is None), key=on_val.__getitem__)
    both = max(on_val, key=on_val.__getitem__)
    for name, c in (("item EASE", item_only), ("user+item hybrid", both)):
        print(f"{name} {c}: validation Recall@10 {on_val[c]:.4f}")
    for c, s in hybrid_lists(train, [item_only, both]).items():
        print(f"hidden set {c}: {score(s, hidden)}")


def probe_fold_in(train: pd.DataFrame, m: int) -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    inner, val = hide(train, n=1, m=m, seed=1)
    users, items, x = matrix(inner)
    x32 = x.astype(np.float32)
    for factors, reg, alpha in ((32, 0.1, 1.0), (64, 0.1, 1.0), (128, 1.0, 5.0)):
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=factors, regularization=reg, alpha=alpha, iterations=15, random_state=1
            )
            als.fit(x32, show_progress=False)
        y = als.item_factors.astype(np.float64)
        own = score(top10(als.user_factors @ y.T, x, users, items), val)["recall@10"]
        folded = {}
        for lam in (0.1, 1.0, 10.0, 100.0):
            b = y @ np.linalg.solve(y.T @ y + lam * np.eye(factors), y.T)
            folded[lam] = score(top10(x @ b, x, users, items), val)["recall@10"]
        print(
            f"factors {factors}, regularization {reg}, alpha {alpha}: the library's user "
            f"factors {own:.4f}; fold-in by lambda {folded}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("probe", choices=["hybrid", "ials-fold-in"])
    ap.add_argument("--data", type=Path, help="user,item,time CSV (default: MovieLens-100K)")
    ap.add_argument("--random-m", type=int, default=4)
    a = ap.parse_args()
    log = pd.read_csv(a.data or movielens_100k(ROOT / "data"))
    train, hidden = hide(log, n=1, m=a.random_m, seed=0)
    if a.probe == "hybrid":
        probe_hybrid(train, hidden, a.random_m)
    else:
        probe_fold_in(train, a.random_m)


if __name__ == "__main__":
    main()
