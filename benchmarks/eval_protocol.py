"""Accuracy under the hidden-last-item protocol, as a user would run it.

``python benchmarks/eval_protocol.py --config multi_vae_v2 --seeds 1 2 3``

1. Hide each user's last MovieLens-100K interaction (``lightrec.submission hide``).
2. For each seed: ``./run_multi_vae.sh both CONFIG data.path=TRAIN seed=N``, then score the
   submission on the hidden items; record the run's fit time and the command's wall time.
3. In the same run, the reference: EASE (Steck 2019) in plain numpy on the same file,
   lambda chosen on each user's last training item, then refit on the whole file.

Prints one JSON line per run and a markdown table (mean over seeds, ratio to EASE).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.datasets import movielens_100k
from lightrec.submission import hide_last, score

ROOT = Path(__file__).resolve().parents[1]


def ease_topk(train: pd.DataFrame, lam: float, k: int = 10) -> pd.DataFrame:
    users, u = np.unique(train["user"], return_inverse=True)
    items, i = np.unique(train["item"], return_inverse=True)
    X = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(len(users), len(items)))
    X.data[:] = 1.0
    G = (X.T @ X).toarray()
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    B[np.diag_indices_from(B)] = 0.0
    S = X @ B
    S[X.toarray() > 0] = -np.inf
    top = np.argsort(-S, axis=1)[:, :k]
    return pd.DataFrame({"user": np.repeat(users, k), "item": items[top.ravel()]})


def ease_reference(
    train: pd.DataFrame, grid=(50, 100, 200, 300, 500, 800)
) -> tuple[float, pd.DataFrame]:
    inner, val = hide_last(train)
    best = max(grid, key=lambda lam: score(ease_topk(inner, lam), val)["ndcg@10"])
    return best, ease_topk(train, best)


def protocol_files(work: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The protocol's training file (each user's last interaction removed) and the hidden
    rows; the file is written once into ``work``."""
    log = pd.read_csv(movielens_100k(ROOT / "data"))
    train, hidden = hide_last(log)
    train_csv = work / "train.csv"
    if not train_csv.exists():
        work.mkdir(parents=True, exist_ok=True)
        train.to_csv(train_csv, index=False)
    return train_csv, train, hidden


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="multi_vae_v2")
    ap.add_argument("--script", default="run_multi_vae.sh")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--work", default="benchmarks/.work/protocol")
    ap.add_argument(
        "--files-only",
        action="store_true",
        help="write the protocol's training file, print its path and stop",
    )
    ap.add_argument("overrides", nargs="*", help="extra hydra overrides for the runs")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    train_csv, train, hidden = protocol_files(work)
    if a.files_only:
        print(train_csv)
        return

    t = time.perf_counter()
    lam, ease_sub = ease_reference(train)
    ease = {"model": "EASE (numpy reference)", "lambda": lam, **score(ease_sub, hidden)}
    ease["wall_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(ease), flush=True)

    rows = []
    for seed in a.seeds:
        log_root = work / "saved" / f"seed{seed}"
        cmd = [
            str(ROOT / a.script),
            "both",
            a.config,
            f"data.path={train_csv}",
            f"seed={seed}",
            f"data.data_dir={ROOT / 'data'}",
            f"paths.log_root={log_root}",
            f"paths.predict_log_root={work / 'predict_logs'}",
            *a.overrides,
        ]
        t = time.perf_counter()
        subprocess.run(
            cmd,
            check=True,
            cwd=work,
            env={**os.environ, "LIGHTREC_VENV": sys.prefix},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - t
        # largest resident set of any process the command started, over the runs so far
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        metrics_path = max(log_root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
        m = json.loads(metrics_path.read_text())
        s = score(pd.read_csv(metrics_path.parent / "submission.csv"), hidden)
        row = {
            "model": a.config,
            "seed": seed,
            **s,
            "val_ndcg@10": m["val"]["ndcg@10"],
            "best_epoch": m["best_epoch"],
            "epochs": m["epochs_trained"],
            "fit_s": m["fit_time_s"],
            "wall_s": round(wall, 1),
            "peak_rss_mb_so_far": round(peak_mb),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    df = pd.DataFrame(rows)
    mean, std = df["recall@10"].mean(), df["recall@10"].std(ddof=0)
    print("\n| model | Recall@10 (hidden last item) | NDCG@10 | fit s | wall s |")
    print("|---|---|---|---|---|")
    print(
        f"| EASE numpy reference, lambda {lam} | {ease['recall@10']:.4f} | {ease['ndcg@10']:.4f} "
        f"| | {ease['wall_s']} |"
    )
    print(
        f"| {a.config}, seeds {', '.join(map(str, a.seeds))} | {mean:.4f} ± {std:.4f} "
        f"(per seed {', '.join(f'{v:.4f}' for v in df['recall@10'])}) | {df['ndcg@10'].mean():.4f} "
        f"| {df['fit_s'].mean():.1f} | {df['wall_s'].mean():.1f} |"
    )
    print(f"\nratio {a.config} / EASE Recall@10: {mean / ease['recall@10']:.3f}")


if __name__ == "__main__":
    main()
