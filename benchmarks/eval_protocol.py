"""Accuracy on a hidden set of MovieLens-100K, as a user would run it.

``python benchmarks/eval_protocol.py --configs ease multi_vae_v2 sasrec --seeds 1 2 3
--blend ease sasrec``: the hidden-last-item protocol. With ``--random-m 4 recipe=competition``
the competition-style protocol: each user's last item plus 4 random earlier ones hidden, the
runs validating the same way (docs/RESULTS.md has both tables and their commands).

1. Hide each user's last MovieLens-100K interaction, plus ``--random-m`` random earlier ones
   (``lightrec submission hide --n 1 --m M --seed 0``).
2. For each seed and config: ``./run.sh both CONFIG data.path=TRAIN seed=N`` (the
   run selects on each user's last remaining item, then refits on everything, as shipped),
   and score its submission on the hidden items. From the same run, a second predict with
   ``predict.use_refit=false`` scores the selected model without refit: the two rows are the
   same training run under the two conditions.
3. ``--blend``: for each seed, ``python -m lightrec blend`` over that seed's runs of the
   named configs (weights on validation, applied to the refit models), scored the same way.
   ``--rerank``: the same runs re-ranked (``python -m lightrec rerank``), with and without
   ``--available-only``. ``--best``: the shipped one-command pipeline
   (``./run.sh best <overrides>``, e.g. ``recipe=competition``), trained and scored per seed.
   ``--rerank-again OPTIONS``: an earlier ``--best``'s members re-ranked with other options.
   ``--ceiling TRIALS``: a bound, not a result: those members' best weighting chosen on the
   hidden rows themselves.
4. In the same invocation, the reference: EASE (Steck 2019) in plain numpy on the same file,
   lambda chosen on a validation set hidden from the training file the same way (seed 1),
   then refit on the whole file.

Prints one JSON line per submission and a markdown table (means over seeds).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.datasets import movielens_100k
from lightrec.runs.submission import hide, score

ROOT = Path(__file__).resolve().parents[1]
RUN = [str(ROOT / "run.sh")]  # ./run.sh MODE CONFIG ..., as a user runs every config
ITEMS = ROOT / "data" / "ml-100k" / "items.csv"  # side information: genres, release year


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
    train: pd.DataFrame, random_m: int, grid=(50, 100, 200, 300, 500, 800), last_n: int = 1
) -> tuple[float, pd.DataFrame]:
    inner, val = hide(train, n=last_n, m=random_m, seed=1)
    best = max(grid, key=lambda lam: score(ease_topk(inner, lam), val)["ndcg@10"])
    return best, ease_topk(train, best)


def protocol_files(
    work: Path, random_m: int, data: Path | None = None, last_n: int = 1
) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """The protocol's training file (each user's last interaction and ``random_m`` random
    earlier ones removed from ``data``, MovieLens-100K by default) and the hidden rows; the
    file is written once into ``work``."""
    log = pd.read_csv(data or movielens_100k(ROOT / "data"))
    train, hidden = hide(log, n=last_n, m=random_m, seed=0)
    train_csv = work / "train.csv"
    if not train_csv.exists():
        work.mkdir(parents=True, exist_ok=True)
        train.to_csv(train_csv, index=False)
    return train_csv, train, hidden


def call(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "LIGHTREC_VENV": sys.prefix}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def latest_run(root: Path) -> Path:
    return max(root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime).parent


def rerank_row(
    work: Path, runs: list[str], out: Path, options: list[str], hidden: pd.DataFrame
) -> dict:
    """``rerank`` of ``runs`` with ``options`` into ``out``, scored on the hidden rows, with
    what its check chose."""
    wall = call([*RUN, "rerank", *runs, "--out", str(out), *options], work)
    check = json.loads((out.parent / "rerank.json").read_text())["ranker_check"]
    return {
        "condition": "refit",
        **score(pd.read_csv(out), hidden),
        "trees": check["trees"],
        "applied": check["applied"],
        "held_back": check["held_back_recall@10"],
        "wall_s": round(wall, 1),
    }


def as_read(ids) -> np.ndarray:
    """Ids as a submission file read back gives them (numbers where they all parse), so that
    a submission built in memory joins the hidden rows as a written one would."""
    text = pd.Series(list(ids), name="id").to_csv(index=False)
    return pd.read_csv(io.StringIO(text))["id"].to_numpy()


def best_members(work: Path, best_root: Path) -> list:
    """The members (run folders, in their order) of the newest ``best`` re-rank under
    ``best_root``."""
    found = {
        r: json.loads(r.read_text())["runs"]
        for r in (work / "saved" / "reranks").rglob("rerank.json")
    }
    mine = [r for r, runs in found.items() if all(Path(x).is_relative_to(best_root) for x in runs)]
    if not mine:
        raise SystemExit(f"no re-rank of `best` under {best_root}: run --best first")
    return found[max(mine, key=lambda r: r.stat().st_mtime)]


def rerank_again(work: Path, best_root: Path, options: list[str], hidden: pd.DataFrame) -> dict:
    """The members of the newest ``best`` re-rank under ``best_root`` re-ranked again with
    ``options`` (in their order, so the features are the same columns), scored on the hidden
    rows."""
    runs = best_members(work, best_root)
    out = work / "again" / best_root.parent.name / "submission.csv"
    return {
        "model": "rerank again " + " ".join(options),
        **rerank_row(work, runs, out, options, hidden),
    }


def ceiling(work: Path, best_root: Path, hidden: pd.DataFrame, trials: int, seed: int = 0) -> dict:
    """A bound, **not a result**: the best weighting of the ``best`` members' per-user
    z-scores (their refit models, as the submission applies them) chosen on the hidden rows
    themselves: each member alone, then ``trials`` random weightings (Dirichlet, seeded).
    A blend of these members chosen on validation is not expected to pass it on this hidden
    set; a ranker can, by ordering each user's candidates as no one weighting does."""
    import torch

    from lightrec.combine.members import labels, load_members
    from lightrec.combine.weights import member_scores, weighted
    from lightrec.runs.scoring import best_first

    members = load_members(best_members(work, best_root))
    names = labels(members)
    history = members[0].history()
    rows = np.arange(len(history.users))
    z = []  # seen items at -inf in every part: the same history for every member
    for m in members:
        scorer = m.submission_scorer(history, True, torch.device("cpu"))
        with torch.no_grad():
            z.append(member_scores(scorer, rows, "zscore", 1024))
    users, items = as_read(history.users), as_read(members[0].item_ids)

    def scored(weights: np.ndarray) -> dict:
        # the blend's own sum and top-K, over the parts with a weight
        total = weighted([(float(w), zj) for w, zj in zip(weights, z, strict=True) if w > 0])
        top = best_first(total, 10)[1].numpy()
        sub = pd.DataFrame({"user": np.repeat(users, 10), "item": items[top.ravel()]})
        return score(sub, hidden)

    one_hot = np.eye(len(z))
    alone = [scored(w) for w in one_hot]
    first = int(np.argmax([r["recall@10"] for r in alone]))
    best_w, best = one_hot[first], alone[first]
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        w = rng.dirichlet(np.full(len(z), 0.5))
        r = scored(w)
        if r["recall@10"] > best["recall@10"]:
            best_w, best = w, r
    return {
        "model": "ceiling: the members' best weighting chosen on the hidden rows (a bound)",
        "condition": "refit",
        **best,
        "weights": dict(zip(names, np.round(best_w, 3).tolist(), strict=True)),
        "members_alone": {name: r["recall@10"] for name, r in zip(names, alone, strict=True)},
        "trials": trials,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", nargs="*", default=["multi_vae_v2"], help="none: --best only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--blend", nargs="*", default=[], help="configs to blend, per seed")
    ap.add_argument(
        "--rerank", action="store_true", help="also re-rank the --blend configs' runs, per seed"
    )
    ap.add_argument(
        "--best", action="store_true", help="also run ./run.sh best with the overrides, per seed"
    )
    ap.add_argument(
        "--last-n",
        type=int,
        default=1,
        help="each user's latest items hidden (give the runs data.last_n=N too)",
    )
    ap.add_argument(
        "--random-m",
        type=int,
        default=0,
        help="random earlier items hidden per user beside the last (0: the last item only)",
    )
    ap.add_argument(
        "--rerank-again",
        metavar="OPTIONS",
        help="re-rank each seed's `--best` members (an earlier --best's runs in --work) again "
        "with these rerank options ('' for none), and score that submission: a combiner's "
        "change compared on the same members, without training them again (options that "
        "begin with a dash after an equals sign: --rerank-again=--no-refit)",
    )
    ap.add_argument(
        "--ceiling",
        type=int,
        metavar="TRIALS",
        help="a bound, not a result: each seed's `--best` members' best weighting chosen on "
        "the hidden rows themselves (each member alone, then TRIALS random weightings)",
    )
    ap.add_argument("--work", help="default benchmarks/.work/protocol[-m<M>]")
    ap.add_argument("--data", type=Path, help="a user,item,time CSV (default: MovieLens-100K)")
    ap.add_argument(
        "--items", type=Path, help="its side information (default: MovieLens-100K's items.csv)"
    )
    ap.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the numpy EASE reference (dense matrices: too big past ~10k items)",
    )
    ap.add_argument(
        "--files-only",
        action="store_true",
        help="write the protocol's training file, print its path and stop",
    )
    ap.add_argument("overrides", nargs="*", help="extra hydra overrides for the runs")
    a = ap.parse_args()
    default_work = "benchmarks/.work/protocol" + (f"-m{a.random_m}" if a.random_m else "")
    work = Path(a.work or default_work).resolve()
    train_csv, train, hidden = protocol_files(work, a.random_m, a.data, a.last_n)
    items = a.items or (ITEMS if a.data is None else None)
    if a.files_only:
        print(train_csv)
        return

    if not a.no_reference:
        t = time.perf_counter()
        lam, ease_sub = ease_reference(train, a.random_m, last_n=a.last_n)
        reference = {"model": f"EASE numpy reference, lambda {lam}", **score(ease_sub, hidden)}
        reference["wall_s"] = round(time.perf_counter() - t, 2)
        print(json.dumps(reference), flush=True)

    rows = []
    for seed in a.seeds:
        seed_root = work / "saved" / f"seed{seed}"
        for config in a.configs:
            log_root = seed_root / config
            common = [
                f"data.path={train_csv}",
                f"seed={seed}",
                f"data.data_dir={ROOT / 'data'}",
                f"paths.log_root={log_root}",
                f"paths.predict_log_root={work / 'predict_logs'}",
                f"data.item_features={items or 'none'}",
                *a.overrides,
            ]
            wall = call([*RUN, "both", config, *common], work)
            run = latest_run(log_root)
            m = json.loads((run / "metrics.json").read_text())
            refit_sub = pd.read_csv(run / "submission.csv")
            call([*RUN, "predict", config, *common, "predict.use_refit=false"], work)
            selected_sub = pd.read_csv(run / "submission.csv")
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            for condition, sub in (("refit", refit_sub), ("selected", selected_sub)):
                row = {
                    "model": config,
                    "condition": condition,
                    "seed": seed,
                    **score(sub, hidden),
                    "val_ndcg@10": m["val"]["ndcg@10"],
                    "best_epoch": m["best_epoch"],
                    "epochs": m["epochs_trained"],
                    "fit_s": m["fit_time_s"],
                    "refit_s": m.get("refit", {}).get("fit_time_s"),
                    "wall_s": round(wall, 1),
                    "peak_rss_mb_so_far": round(peak_mb),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        if a.blend:
            out = work / "blends" / f"seed{seed}" / "submission.csv"
            runs = [str(latest_run(seed_root / c)) for c in a.blend]
            wall = call([*RUN, "blend", *runs, "--out", str(out)], work)
            record = json.loads((out.parent / "blend.json").read_text())
            row = {
                "model": "blend of " + " + ".join(a.blend),
                "condition": "refit",
                "seed": seed,
                **score(pd.read_csv(out), hidden),
                "weights": record["weights"],
                "wall_s": round(wall, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        if a.rerank:
            runs = [str(latest_run(seed_root / c)) for c in a.blend]
            for extra in ([], ["--available-only"]):
                out = work / "reranks" / f"seed{seed}{''.join(extra)}" / "submission.csv"
                row = {
                    "model": "rerank of " + " + ".join(a.blend) + " ".join(["", *extra]),
                    "seed": seed,
                    **rerank_row(work, runs, out, extra, hidden),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        if a.best:
            best_root = seed_root / "best"
            common = [
                f"data.path={train_csv}",
                f"seed={seed}",
                f"data.data_dir={ROOT / 'data'}",
                f"paths.log_root={best_root}",
                f"data.item_features={items or 'none'}",
                *a.overrides,
            ]
            t0 = time.perf_counter()
            done = subprocess.run(
                [*RUN, "best", *common],
                cwd=work,
                env={**os.environ, "LIGHTREC_VENV": sys.prefix},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"failed: ./run.sh best\n{done.stderr[-3000:]}")
            sub_path = Path(done.stdout.strip().splitlines()[-1])
            sub_path = sub_path if sub_path.is_absolute() else work / sub_path
            row = {
                "model": "./run.sh best " + " ".join(a.overrides),
                "condition": "refit",
                "seed": seed,
                **score(pd.read_csv(sub_path), hidden),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

        if a.rerank_again is not None:
            row = rerank_again(work, seed_root / "best", shlex.split(a.rerank_again), hidden)
            rows.append({**row, "seed": seed})
            print(json.dumps(rows[-1]), flush=True)

        if a.ceiling is not None:
            row = ceiling(work, seed_root / "best", hidden, a.ceiling)
            rows.append({**row, "seed": seed})
            print(json.dumps(rows[-1]), flush=True)

    df = pd.DataFrame(rows)
    print("\n| model | condition | Recall@10 mean ± sd (per seed) | NDCG@10 | fit s | refit s |")
    print("|---|---|---|---|---|---|")
    if not a.no_reference:
        print(
            f"| {reference['model']} | refit | {reference['recall@10']:.4f} | "
            f"{reference['ndcg@10']:.4f} | | |"
        )
    for (model, condition), g in df.groupby(["model", "condition"], sort=False):
        per_seed = ", ".join(f"{v:.4f}" for v in g["recall@10"])
        fit = f"{g['fit_s'].mean():.1f}" if "fit_s" in g and g["fit_s"].notna().all() else ""
        refit = (
            f"{g['refit_s'].mean():.1f}"
            if condition == "refit" and "refit_s" in g and g["refit_s"].notna().all()
            else ""
        )
        print(
            f"| {model} | {condition} | {g['recall@10'].mean():.4f} ± "
            f"{g['recall@10'].std(ddof=0):.4f} ({per_seed}) | {g['ndcg@10'].mean():.4f} | "
            f"{fit} | {refit} |"
        )


if __name__ == "__main__":
    main()
