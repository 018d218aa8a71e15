"""The second stage: re-rank the members' candidates with a GBDT ranker on side features.

``python -m lightrec rerank RUN_DIR RUN_DIR [...]`` or ``--latest ease recvae ...``:

1. The runs must share the data file, the split and the item map (as for ``blend``).
2. **Candidates**: for each user, the union of every member's top ``--candidates`` unseen
   items (z-scored per user, as the blend normalises). ``--share-candidates``: as many in
   all, shared out on validation to the members whose next items hold the most validation
   items no other member holds (chosen by the users the ranker's check does not hold back):
   the candidates reach more (84% of the validation items instead of 68% on MovieLens-100K)
   but the submission scored lower on MovieLens-100K and Amazon Beauty (docs/RESULTS.md),
   so it is not the default.
3. **Features** of each (user, candidate): each member's z-score and rank and their mean;
   the item's popularity, all-time and over the latest 10% of rows, and the user's activity
   (each as log(1 + count / the stage's mean), so that the submission's larger history does
   not shift them from what the ranker learned on validation), and how recent the user's
   last row is (its quantile among all rows); per categorical side field (genres, directors,
   writers; ``data.item_features``) the share of the user's history with the item's values
   and the share of the item's values the user has seen; per numeric field (year) the
   item's value, and its difference from the mean and the latest of the user's history.
4. **Training**, on validation only: the members' *selected* models score the validation
   users from their training rows; labels are the validation items. A LightGBM
   ``lambdarank`` ranker of small trees with users as groups; a fifth of the users are
   held back, and on them the ranker (its tree count chosen by early stopping on the rest)
   must beat the blend of the members' z-scores (weights chosen on the rest), or the
   submission applies the blend (:mod:`lightrec.combine.ranker`).
5. **Submission**: the members' *refit* models (a run without one, and every run under
   ``--no-refit``: the selected one) score every user from the full data file; the ranker
   (or the blend) orders their candidates; top-k is written like every submission, with
   ``rerank.json`` (runs, features and their gain, the share of validation items the
   candidates reach, the trees, the held-back Recall@10 among the candidates of the
   ranker, the blend, each member and their mean, and which was applied) and
   ``ranker.txt`` (LightGBM's text model) beside it.

``--available-only``: candidates whose release year (the numeric side field ``year`` or
``years``) is after the year of the user's last row are dropped (an item cannot be watched
before it exists). The ranker never sees a test or hidden item: labels come from the
validation rows, features from the training rows (tests/test_rerank.py proves it by
changing the test rows).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.combine.features import (
    Context,
    choose_counts,
    context,
    feature_names,
    latest_rows,
    reach_of,
    stage_data,
    target_ranks,
)
from lightrec.combine.members import (
    MAX_USERS,
    SAMPLE_SEED,
    Member,
    add_run_arguments,
    applied_models,
    chosen_runs,
    describe,
    labels,
    load_members,
    member_table,
    validation_users,
    with_seconds,
)
from lightrec.combine.ranker import apply_ranker, fit_ranker, split_held_back
from lightrec.data.interactions import History
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.data.splits import TRAIN
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule
from lightrec.runs import submission
from lightrec.runs.finished import FinishedRun
from lightrec.runs.scoring import Scorer, check_top_k
from lightrec.utils.console import refuse
from lightrec.utils.device import compute_device
from lightrec.utils.io import write_json, write_text
from lightrec.utils.path_utils import default_path, output_path

log = logging.getLogger(__name__)
CANDIDATES = 50  # each member's top items per user (on average, when shared out)
COUNT_STEPS = 5  # the steps of a member's count when shared out: CANDIDATES / 5 items each
BATCH_SIZE = 256  # users whose candidates are built at once


def validation_context(
    members: list[FinishedRun], device: torch.device, item_features: str | None, recency: bool
) -> tuple[Context, RecSysDataModule]:
    """The validation stage: the members' selected models on the training rows; the side
    information is ``item_features`` or the first member's ``data.item_features``."""
    first: RecSysDataModule | None = None
    scorers = []
    for m in members:
        dm = m.datamodule()
        first = first or dm
        scorers.append(m.validation_scorer(dm, device))
    assert first is not None
    dm = first
    if item_features is not None:
        dm.item_features = item_features
    a = dm.arrays
    assert a is not None
    train = a["split"] == TRAIN
    user, item, time = a["user"][train], a["item"][train], a["time"][train]
    ctx = context(dm.train_csr, scorers, user, item, time, dm.side_features())
    if recency:
        model = members[0].model(members[0].folder.best_ckpt, device)
        ctx.recent = recent_scorer(members[0], model, user, item, time, dm.num_users, device)
    return ctx, dm


def recent_scorer(
    member: FinishedRun,
    model: RecommenderModule,
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    n_users: int,
    device: torch.device,
) -> Scorer:
    """``model`` scoring each user (row) from the user's latest ``RECENT_ITEMS`` rows alone:
    the hidden set holds each user's latest items, and a static member weighs a whole
    history alike."""
    keep = latest_rows(user, item, time)
    recent = History(user[keep], item[keep], time[keep], np.arange(n_users), model.num_items, 0)
    return member.scorer(recent, model, device)


def candidate_counts(
    ctx: Context,
    users: np.ndarray,
    targets: sp.csr_matrix,
    n_candidates: int,
    seed: int,
    per_member: bool,
) -> tuple[list[int], dict[str, float] | None]:
    """Each member's candidate count: ``n_candidates`` each, or (``per_member``, two members
    or more) as many in all shared out on validation (:func:`choose_counts`: the most
    validation items among the candidates) by the users the ranker's check does not hold
    back. Returns the counts and, when chosen, the reach on those users at equal counts
    and at the chosen ones."""
    n_members = len(ctx.scorers)
    equal = [n_candidates] * n_members
    if not per_member or n_members < 2:
        return equal, None
    held, _ = split_held_back(users, seed)
    ranks = target_ranks(ctx, users[~np.isin(users, held)], targets, BATCH_SIZE)
    n_items = targets.shape[1]
    step = max(1, n_candidates // COUNT_STEPS)
    counts = choose_counts(ranks, n_candidates * n_members, step, min(n_items, 4 * n_candidates))
    reach = {"equal": round(reach_of(ranks, equal), 6), "chosen": round(reach_of(ranks, counts), 6)}
    return counts, reach


def rerank(
    run_dirs: Sequence[Member],
    out: Path | None = None,
    n_candidates: int = CANDIDATES,
    use_refit: bool = True,
    available_only: bool = False,
    max_users: int = MAX_USERS,
    top_k: int | None = None,
    seed: int = SAMPLE_SEED,
    item_features: str | None = None,
    member_seconds: Sequence[float | None] | None = None,
    out_root: str | None = None,
    recency: bool = True,
    per_member: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Train the ranker on validation, apply it to the runs' refit models, write the
    submission; return its path and what ``rerank.json`` records."""
    out = None if out is None else output_path(out)  # a bad --out before any run is read
    if n_candidates < 1:
        raise LightrecError(f"--candidates {n_candidates} must be at least 1")
    if top_k is not None:
        check_top_k(top_k, sys.maxsize, "--top-k")  # before any run is read
    members = load_members(run_dirs)
    out = out or output_path(None, out_root or default_path("reranks"))  # never a run's own
    k = top_k if top_k is not None else int(members[0].cfg.predict.top_k)
    n_items = len(members[0].item_ids)
    check_top_k(k, n_items, "--top-k" if top_k is not None else "predict.top_k")
    n_candidates = min(n_candidates, n_items)
    device = compute_device(members[0].cfg.trainer.accelerator)

    ctx, dm = validation_context(members, device, item_features, recency)
    if available_only and ctx.side.release_year() is None:
        raise LightrecError(
            "--available-only needs a numeric release-year side field, year or years "
            "(data.item_features: a years.tsv, or a year column)"
        )
    users = validation_users(dm.valid_csr, max_users, seed)
    counts, reach = candidate_counts(ctx, users, dm.valid_csr, n_candidates, seed, per_member)
    data = stage_data(ctx, users, counts, available_only, BATCH_SIZE, dm.valid_csr)
    names = feature_names(len(members), ctx)
    compare = {"mean_z": names.index("mean_z")}
    compare.update({label: names.index(f"m{j}_z") for j, label in enumerate(labels(members))})
    reached = data["reached"]
    ranker, chosen, check = fit_ranker(data, seed, compare, users)
    del data, ctx
    with_seconds(check["member_value"], member_seconds)

    history = members[0].history()
    scorers = [m.submission_scorer(history, use_refit, device) for m in members]
    user, item, time = history.rows()
    apply_ctx = context(history.csr, scorers, user, item, time, dm.side_features())
    if recency:
        model = members[0].model(members[0].checkpoint(use_refit), device)
        apply_ctx.recent = recent_scorer(
            members[0], model, user, item, time, len(history.users), device
        )
    topk = apply_ranker(
        apply_ctx, chosen, len(history.users), counts, available_only, k, BATCH_SIZE
    )
    submission.write(out, history.users, members[0].item_ids, topk)
    write_text(out.parent / "ranker.txt", ranker.model_to_string())
    importance = ranker.feature_importance(importance_type="gain")
    record = {
        "runs": describe(members),
        "models": applied_models(members, use_refit),
        "candidates_per_member": dict(zip(labels(members), counts, strict=True)),
        "candidates_chosen": reach,  # per-member counts chosen on the non-held-back users
        "available_only": available_only,
        "features": names,
        "gain": {n: round(float(g), 2) for n, g in zip(names, importance, strict=True)},
        "validation_users": int(len(users)),
        "candidates_reach": reached,  # the share of validation items among the candidates
        "ranker_check": check,
        "submission": str(out),
    }
    write_json(out.parent / "rerank.json", record)
    return out, record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec rerank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(ap, "paths.reranks", "train the ranker on")
    ap.add_argument("--candidates", type=int, default=CANDIDATES, help="top items per member")
    ap.add_argument(
        "--available-only",
        action="store_true",
        help="drop items released after the user's last activity year",
    )
    ap.add_argument(
        "--seed", type=int, default=SAMPLE_SEED, help="the users', the folds' and the ranker's seed"
    )
    ap.add_argument(
        "--share-candidates",
        action="store_true",
        help="share --candidates x members out on validation instead of as many per member",
    )
    ap.add_argument(
        "--no-recency",
        action="store_true",
        help="leave out the feature of the first run scoring each user's latest items alone",
    )
    ap.add_argument(
        "--item-features",
        help="side information to use (default: the first run's data.item_features)",
    )
    a = ap.parse_intermixed_args(argv)  # runs before and after options (--bag A,B)
    logging.basicConfig(level=logging.WARNING)
    try:
        runs = chosen_runs(a)
    except LightrecError as e:
        return refuse(e)
    return report_rerank(
        runs,
        out=a.out,
        n_candidates=a.candidates,
        use_refit=not a.no_refit,
        available_only=a.available_only,
        max_users=a.max_users,
        top_k=a.top_k,
        seed=a.seed,
        item_features=a.item_features,
        recency=not a.no_recency,
        per_member=a.share_candidates,
    )


def report_rerank(runs: Sequence[Member], **kw: Any) -> int:
    """:func:`rerank` for the command line: what the candidates reach and the ranker's
    held-back check, then the submission's path on the last line; exit code 2 with one
    sentence on a user error."""
    try:
        path, record = rerank(runs, **kw)
    except LightrecError as e:
        return refuse(e)
    check = record["ranker_check"]
    held = ", ".join(f"{k} {v:.4f}" for k, v in check["held_back_recall@10"].items())
    shared = record.get("candidates_chosen")
    counts = ", ".join(f"{k} {v}" for k, v in record["candidates_per_member"].items())
    if shared:
        counts += (
            f"; shared out on validation: {shared['chosen']:.1%} of the items of the users "
            f"it chose on, {shared['equal']:.1%} at equal counts"
        )
    print(
        f"candidates ({counts}): {record['candidates_reach']:.1%} of the validation items; ranker: "
        f"{check['trees']} trees; on {check['held_back_users']} held-back validation users "
        f"(Recall@10 among the candidates) {held}; the ranker's margin over the blend "
        f"{check['gain_over_blend']:+.4f}, over the best member ({check['best_member']}) "
        f"{check['gain_over_best_member']:+.4f}: the submission applies {applied(check)}"
    )
    print(member_table(check["member_value"], "held-back Recall@10 among the candidates"))
    print(path)
    return 0


def applied(check: dict[str, Any]) -> str:
    """What the submission applies, in words."""
    if check["applied"] in ("ranker", "blend"):
        return "the " + check["applied"]
    return f"the member {check['applied']} alone"


if __name__ == "__main__":
    sys.exit(main())
