"""Blend finished runs into one submission:

``python -m lightrec blend RUN_DIR RUN_DIR [...]`` or, with the latest finished run of each
config, ``python -m lightrec blend --latest ease recvae sasrec [--log-root saved/hydra_logs]``.

1. The runs must share the data file, the split and the item map (one sentence otherwise).
2. Each run's *selected* model (``best.ckpt``) scores the validation users from their
   training rows; scores are normalised per user (``--method zscore``: mean 0, spread 1
   over the items the user has not seen; ``rank``: ``1 / (60 + rank)``, reciprocal-rank
   fusion).
3. Weights on the simplex are chosen to maximise the runs' validation metric
   (``checkpoint.monitor``, e.g. ``val/ndcg@10``) of the weighted sum: an exhaustive grid
   for up to four runs, coordinate ascent beyond. Selection sees validation only.
4. The same weights combine the runs' *refit* models (``refit.ckpt``; a run trained with
   ``refit=false``, and every run under ``--no-refit``: the selected one), scored from
   every user's full history in the data file, into
   ``submission.csv`` (the contract of every other submission), with ``blend.json``
   beside it (runs, weights, method, validation metrics of each run and of the blend).

The chosen weights are printed, then the submission's path on the last line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightrec.combine.members import (
    MAX_USERS,
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
from lightrec.combine.weights import (
    METHODS,
    WeightSearch,
    Without,
    choose_weights,
    member_scores,
    normalise,
    weighted,
)
from lightrec.data.interactions import History
from lightrec.errors import LightrecError
from lightrec.runs import submission
from lightrec.runs.finished import FinishedRun
from lightrec.runs.scoring import Scorer, check_enough_unseen, check_top_k, recommend_topk
from lightrec.utils.console import refuse
from lightrec.utils.device import compute_device
from lightrec.utils.io import write_json
from lightrec.utils.path_utils import default_path, output_path

log = logging.getLogger(__name__)
BATCH_SIZE = 256  # users scored at once


def validation_parts(
    members: list[FinishedRun], method: str, max_users: int, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each member's normalised validation scores, and the validation targets (dense)."""
    parts, targets = [], None
    for m in members:
        dm = m.datamodule()
        users = validation_users(dm.valid_csr, max_users)  # the same for every member
        score = m.validation_scorer(dm, device)
        parts.append(member_scores(score, users, method, BATCH_SIZE))
        if targets is None:
            targets = torch.from_numpy(dm.valid_csr[users].toarray().astype(np.float32))
    assert targets is not None
    return parts, targets


def blend(
    run_dirs: Sequence[Member],
    out: Path | None = None,
    method: str = "zscore",
    use_refit: bool = True,
    max_users: int = MAX_USERS,
    top_k: int | None = None,
    member_seconds: Sequence[float | None] | None = None,
    out_root: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Choose weights on validation, apply them to the runs' refit models, write the
    submission; return its path and what ``blend.json`` records (with each member's value:
    the blend's validation metric without it, its weights chosen again)."""
    if method not in METHODS:
        raise LightrecError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    out = None if out is None else output_path(out)  # a bad --out before any run is read
    members = load_members(run_dirs)
    out = out or output_path(None, out_root or default_path("blends"))  # never a run's own
    k = top_k if top_k is not None else int(members[0].cfg.predict.top_k)
    check_top_k(k, len(members[0].item_ids), "--top-k" if top_k is not None else "predict.top_k")
    device = compute_device(members[0].cfg.trainer.accelerator)
    monitor = str(members[0].cfg.checkpoint.monitor).removeprefix("val/")
    metric_name, k_str = monitor.split("@")
    k_eval = int(k_str)
    parts, targets = validation_parts(members, method, max_users, device)
    search = WeightSearch(parts, targets, monitor, k_eval)
    singles = [search(np.eye(len(parts))[i]) for i in range(len(parts))]
    weights, best = choose_weights(search)
    value = []
    for j, name in enumerate(labels(members)):
        without = choose_weights(Without(search, j))[1] if len(parts) > 1 else 0.0
        value.append(
            {
                "member": name,
                "alone": round(singles[j], 6),
                "blend_without": round(without, 6),
                "marginal": round(best - without, 6),
            }
        )
    with_seconds(value, member_seconds)
    log.debug("weight search: %d user rankings over every item", search.full_rows)

    history = members[0].history()
    check_enough_unseen(history.csr, k, history.users)
    topk = _apply(members, weights, history, method, use_refit, k, device)
    submission.write(out, history.users, members[0].item_ids, topk)
    record = {
        "runs": describe(members),
        "weights": [round(float(w), 4) for w in weights],
        "method": method,
        "models": applied_models(members, use_refit),
        f"val/{monitor}": {"blend": round(best, 6), "runs": [round(v, 6) for v in singles]},
        "validation_users": int(targets.shape[0]),
        "member_value": value,
        "submission": str(out),
    }
    write_json(Path(out).parent / "blend.json", record)
    log.info(
        "blend of %d runs (%s): val %s %.4f, best single %.4f",
        len(members),
        metric_name,
        monitor,
        best,
        max(singles),
    )
    return Path(out), record


def _apply(
    members: list[FinishedRun],
    weights: np.ndarray,
    history: History,
    method: str,
    use_refit: bool,
    k: int,
    device: torch.device,
) -> np.ndarray:
    """Top-k of the weighted, normalised scores of every user's full history."""
    active = []  # (scorer, weight) of the runs with a weight
    for m, w in zip(members, weights, strict=True):
        if w > 0:
            active.append((m.submission_scorer(history, use_refit, device), float(w)))

    blended = blended_scorer(active, method)
    return recommend_topk(blended, len(history.users), k, BATCH_SIZE)


def blended_scorer(active: list[tuple[Scorer, float]], method: str) -> Scorer:
    """The blend of ``(scorer, weight)`` pairs, each scorer's scores normalised and kept in
    half precision exactly as the weight search kept them, so that the submission ranks the
    very scores whose metric chose the weights (equal ones in item order, both ways)."""

    def blended(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        parts, seen = [], None
        for score, w in active:
            scores, seen = score(rows)
            parts.append((w, normalise(scores, seen, method).half()))
        assert seen is not None
        return weighted(parts), seen

    return blended


def report_blend(runs: Sequence[Member], **kw: Any) -> int:
    """:func:`blend` for the command line: the weights, then the submission's path on the
    last line; exit code 2 with one sentence on a user error."""
    try:
        path, record = blend(runs, **kw)
    except LightrecError as e:
        return refuse(e)
    for run, w in zip(record["runs"], record["weights"], strict=True):
        print(f"weight {w:.2f}  {run}")
    monitor = next(k for k in record if k.startswith("val/"))
    print(member_table(record["member_value"], f"validation {monitor.removeprefix('val/')}"))
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec blend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(ap, "paths.blends", "choose the weights on")
    ap.add_argument("--method", choices=METHODS, default="zscore")
    a = ap.parse_intermixed_args(argv)  # runs before and after options (--bag A,B)
    logging.basicConfig(level=logging.WARNING)
    try:
        runs = chosen_runs(a)
    except LightrecError as e:
        return refuse(e)
    return report_blend(
        runs,
        out=a.out,
        method=a.method,
        use_refit=not a.no_refit,
        max_users=a.max_users,
        top_k=a.top_k,
    )


if __name__ == "__main__":
    sys.exit(main())
