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
import itertools
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lightrec import submission
from lightrec.config_check import target_class
from lightrec.data.datasets import data_file
from lightrec.data.interactions import History
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.data.splits import SplitSpec
from lightrec.errors import LightrecError
from lightrec.metrics import exclude_seen, ranked_metric_sums
from lightrec.models.base import RecommenderModule
from lightrec.predict import load_config, load_history, load_model
from lightrec.recommend import (
    Scorer,
    batches,
    check_enough_unseen,
    check_top_k,
    model_scorer,
    recommend_topk,
)
from lightrec.train import build_datamodule
from lightrec.utils.device import compute_device
from lightrec.utils.io import unwritable, write_json
from lightrec.utils.path_utils import RunDir, default_log_root, latest_finished_run

log = logging.getLogger(__name__)
MAX_USERS = 20_000  # validation users the weights (or the ranker) learn from, by default
SEARCH_POOL = 100  # each member's best items per user that the weight search ranks first

METHODS = ("zscore", "rank")
RRF_K = 60.0  # reciprocal-rank fusion's usual constant


@dataclass
class Member:
    run: RunDir
    cfg: DictConfig
    item_ids: list


def load_members(run_dirs: list[str]) -> list[Member]:
    """The runs, checked to be finished and to share the data."""
    if len(run_dirs) < 2:
        raise LightrecError("blend needs at least two run folders")
    members = []
    for name in run_dirs:
        run = RunDir(Path(name).expanduser())
        if not run.finished:
            raise LightrecError(f"{run.root} is not a finished training run (no metrics.json)")
        ids = json.loads(run.id_maps.read_text())["item_ids"]
        cfg = load_config(run)
        try:  # a run folder is untrusted: only lightrec's classes are built from it
            target_class(cfg.model, "model.", RecommenderModule)
            target_class(cfg.data, "data.", RecSysDataModule)
        except LightrecError as e:
            raise LightrecError(f"run folder {run.root}: {e}") from None
        members.append(Member(run, cfg, ids))
    _check_same_data(members)
    return members


def applied_models(members: list[Member], use_refit: bool) -> list[str]:
    """Which model of each run a submission applies: ``refit`` or ``selected``."""
    return [
        "refit" if m.run.submission_ckpt(use_refit) == m.run.refit_ckpt else "selected"
        for m in members
    ]


def _data_identity(m: Member) -> dict[str, Any]:
    d = m.cfg.data
    trained_on = json.loads(m.run.metrics.read_text()).get("data", {}).get("file_md5")
    return {
        "data file": str(data_file(d.path, d.data_dir).resolve()),
        "data file's content when trained (MD5)": trained_on,
        "columns": OmegaConf.to_container(d.columns),
        "min_interactions": d.min_interactions,
        "split": SplitSpec.from_data_config(d),
    }


def _check_same_data(members: list[Member]) -> None:
    first = _data_identity(members[0])
    for m in members[1:]:
        other = _data_identity(m)
        for key, value in first.items():
            if None in (value, other[key]) and "MD5" in key:
                continue  # a run trained without the cache did not hash its file
            if other[key] != value:
                raise LightrecError(
                    f"runs {members[0].run.root} and {m.run.root} differ in their {key} "
                    f"({value} vs {other[key]}): blend only runs of the same data file and split"
                )
        if m.item_ids != members[0].item_ids:
            raise LightrecError(
                f"runs {members[0].run.root} and {m.run.root} have different item maps: "
                "blend only runs of the same data file and split"
            )


def member_datamodule(m: Member) -> RecSysDataModule:
    """A member's data as it was trained: prepared and set up, refused in one sentence when
    the file's content changed since (its validation rows would not be the run's)."""
    dm = build_datamodule(m.cfg)
    dm.prepare_data()
    dm.setup("fit")
    trained_on = json.loads(m.run.metrics.read_text()).get("data", {}).get("file_md5")
    if trained_on and dm.data_md5 and trained_on != dm.data_md5:
        raise LightrecError(
            f"the data file {dm.data_path} changed since run {m.run.root} was trained on it "
            "(its content MD5 differs): train the runs again on the file as it is"
        )
    return dm


def ranks_of(scores: torch.Tensor) -> torch.Tensor:
    """Each item's rank in its row (0: the highest score).

    >>> ranks_of(torch.tensor([[0.5, 2.0, 1.0]])).tolist()
    [[2, 0, 1]]
    """
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank


def normalise(scores: torch.Tensor, seen: torch.Tensor, method: str) -> torch.Tensor:
    """Per-user scores on one scale, seen items at -inf.

    >>> s = torch.tensor([[3.0, 1.0, 2.0, 9.0]]); seen = torch.tensor([[0, 0, 0, 1]])
    >>> [round(v, 3) for v in normalise(s, seen, "zscore")[0].tolist()]  # spread sqrt(2/3)
    [1.225, -1.225, 0.0, -inf]
    >>> [round(v * 60, 3) for v in normalise(s, seen, "rank")[0].tolist()]  # 1 / (60 + rank)
    [1.0, 0.968, 0.984, -inf]
    """
    scores = scores.float()
    unseen = seen <= 0
    if method == "zscore":
        n = unseen.sum(dim=1, keepdim=True).clamp(min=1)
        mean = scores.where(unseen, 0.0).sum(dim=1, keepdim=True) / n
        var = ((scores - mean).where(unseen, 0.0) ** 2).sum(dim=1, keepdim=True) / n
        out = (scores - mean) / var.sqrt().clamp(min=1e-12)
    elif method == "rank":
        out = 1.0 / (RRF_K + ranks_of(exclude_seen(scores.clone(), seen)).float())
    else:
        raise LightrecError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    return out.masked_fill(~unseen, float("-inf"))


def member_scores(score: Scorer, users: np.ndarray, method: str, batch_size: int) -> torch.Tensor:
    """Normalised scores (users, items) of one scorer, in half precision on the host."""
    out = [
        normalise(scores, seen, method).half().cpu()
        for _, scores, seen in batches(score, users.tolist(), batch_size)
    ]
    return torch.cat(out)


class WeightSearch:
    """The validation metric of any weighting of the members' normalised scores.

    A weighting's top-k is taken first among each user's candidates: the union of every
    member's best ``pool`` items. An item outside the union scores at most the weighted
    sum of each member's ``pool``-th best score; where the union's k-th best beats that
    bound, the union's top-k is the whole catalogue's, exactly (equal scores in item
    order, both ways). Only the other users are ranked over every item. A weighting then
    costs (users x members x pool), not (users x items): on three competition-sized runs
    and 20,000 users the blend took 75 s instead of 419 s (docs/BENCHMARKS.md).

    Args:
        parts: each member's normalised scores (users, items), seen items at -inf.
        targets: (users, items) binary, the validation items.
        metric, k: what to maximise, e.g. ``"ndcg@10"`` and 10.
    """

    def __init__(
        self,
        parts: list[torch.Tensor],
        targets: torch.Tensor,
        metric: str,
        k: int,
        pool: int = SEARCH_POOL,
    ) -> None:
        self.parts, self.targets, self.metric = parts, targets, metric
        n_items = parts[0].shape[1]
        self.k = min(k, n_items)
        size = min(max(pool, self.k), n_items)
        tops = [_top(p, size) for p in parts]
        # an item outside a member's best `size` scores at most its size-th best; nothing
        # is outside when `size` is the whole catalogue
        self.floors = [
            values[:, -1] if size < n_items else torch.full_like(values[:, -1], float("-inf"))
            for values, _ in tops
        ]
        items, _ = torch.cat([indices for _, indices in tops], dim=1).sort(dim=1)
        again = torch.zeros_like(items, dtype=torch.bool)
        again[:, 1:] = items[:, 1:] == items[:, :-1]  # an item in several members' best
        self.items = items
        self.candidates = [
            p.gather(1, items).float().masked_fill(again, float("-inf")) for p in parts
        ]
        self.full_rows = 0  # users ranked over every item so far (for the record)

    def __call__(self, weights: np.ndarray) -> float:
        active = [(float(w), j) for j, w in enumerate(weights) if w > 0]
        blended = sum(w * self.candidates[j] for w, j in active)
        bound = sum(w * self.floors[j] for w, j in active)
        assert isinstance(blended, torch.Tensor) and isinstance(bound, torch.Tensor)
        values, at = best_first(blended, self.k)
        top = self.items.gather(1, at)  # candidates are in item order: the same tie rule
        rows = torch.nonzero(~(values[:, -1] > bound)).squeeze(1)  # the bound may tie
        if len(rows):
            full = sum(w * self.parts[j][rows].float() for w, j in active)
            assert isinstance(full, torch.Tensor)
            top[rows] = best_first(full, self.k)[1]
            self.full_rows += len(rows)
        sums = ranked_metric_sums(top, self.targets, [self.k])
        return float(sums[self.metric] / sums["users"].clamp(min=1))


def best_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` highest scores and their columns, equal scores in column order (half
    precision ties often at the top; ``topk`` would break them either way).

    >>> best_first(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 2)[1].tolist()
    [[1, 2]]
    """
    values, columns = scores.topk(k, dim=1)
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    tied |= (scores >= values[:, -1:]).sum(dim=1) > k  # a tie across the cut
    if tied.any():  # only these rows need the (slower) stable sort
        rows = torch.nonzero(tied).squeeze(1)
        v, c = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], columns[rows] = v[:, :k], c[:, :k]
    return values, columns


def _top(part: torch.Tensor, size: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's best ``size`` scores and their items, ``chunk`` rows at a time in float32
    (the parts are kept in half precision)."""
    tops = [part[i : i + chunk].float().topk(size, dim=1) for i in range(0, len(part), chunk)]
    return torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops])


def simplex_grid(n: int, step: float) -> list[np.ndarray]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1.

    >>> [w.tolist() for w in simplex_grid(2, 0.5)]
    [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    """
    units = round(1 / step)
    grid = []
    for cut in itertools.combinations(range(units + n - 1), n - 1):
        bounds = (-1, *cut, units + n - 1)
        grid.append(np.array([bounds[i + 1] - bounds[i] - 1 for i in range(n)]) / units)
    return grid


def choose_weights(search: WeightSearch) -> tuple[np.ndarray, float]:
    """Weights maximising the blended validation metric, and that metric. Ties keep the
    earlier candidate; candidates start from each run alone."""
    n = len(search.parts)
    if n <= 4:
        candidates = simplex_grid(n, 0.05 if n <= 3 else 0.1)
        scored = [(search(w), -i, w) for i, w in enumerate(candidates)]
        best, _, weights = max(scored, key=lambda t: (t[0], t[1]))
        return weights, best
    singles = [search(np.eye(n)[i]) for i in range(n)]
    weights = np.eye(n)[int(np.argmax(singles))]
    best = max(singles)
    for _ in range(20):  # coordinate ascent: move weight towards one run at a time
        improved = False
        for i in range(n):
            for a in np.arange(0.05, 1.0001, 0.05):
                w = (1 - a) * weights + a * np.eye(n)[i]
                value = search(w)
                if value > best + 1e-12:
                    best, weights, improved = value, w, True
        if not improved:
            break
    return weights, best


def validation_parts(
    members: list[Member], method: str, max_users: int, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each member's normalised validation scores, and the validation targets (dense)."""
    parts, targets = [], None
    for m in members:
        dm = member_datamodule(m)
        if not dm.has_validation:
            raise LightrecError(f"run {m.run.root} has no validation split to choose weights on")
        users = np.flatnonzero(np.diff(dm.valid_csr.indptr) > 0)
        if len(users) > max_users:  # the same users for every member (same split)
            users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
        model = load_model(m.run.best_ckpt, m.cfg).to(device)
        collate = dm.scoring_collate("valid")
        parts.append(
            member_scores(
                model_scorer(model.score_batch, collate, device), users, method, batch_size
            )
        )
        if targets is None:
            targets = torch.from_numpy(dm.valid_csr[users].toarray().astype(np.float32))
    assert targets is not None
    return parts, targets


def output_path(out: Path | None, folder: str) -> Path:
    """Where a combiner (blend, rerank) writes its submission: ``--out``, or
    ``<folder>/<date>/<time>/submission.csv``; one sentence when ``--out`` is a folder or
    its folder cannot be written."""
    if out is None:
        return Path(folder) / datetime.now().strftime("%Y-%m-%d/%H-%M-%S") / "submission.csv"
    out = Path(out)
    if out.is_dir():
        raise LightrecError(
            f"--out {out} is a folder: name the file, e.g. {out / 'submission.csv'}"
        )
    if problem := unwritable(out.parent):
        raise LightrecError(f"--out {out}: its folder cannot be written ({problem})")
    return out


def add_run_arguments(ap: argparse.ArgumentParser, folder: str, users_for: str) -> None:
    """The arguments blend and rerank share: the runs, ``--latest``, ``--out``, ...; read
    the runs back with :func:`chosen_runs`."""
    ap.add_argument("runs", nargs="*", help="finished training run folders")
    ap.add_argument(
        "--latest",
        nargs="+",
        metavar="CONFIG",
        default=[],
        help="the latest finished run of each of these configs",
    )
    ap.add_argument("--log-root", default=default_log_root(), help="where --latest looks")
    ap.add_argument("--out", type=Path, help=f"submission path (default {folder}/<time>/)")
    ap.add_argument("--no-refit", action="store_true", help="use the selected models")
    ap.add_argument(
        "--max-users",
        type=int,
        default=MAX_USERS,
        help=f"validation users to {users_for} (a seeded sample)",
    )
    ap.add_argument("--top-k", type=int, help="items per user (default: the runs' predict.top_k)")


def chosen_runs(a: argparse.Namespace) -> list[str]:
    """The run folders given, then the latest finished run of each ``--latest`` config."""
    return [*a.runs, *(str(latest_finished_run(a.log_root, c).root) for c in a.latest)]


def blend(
    run_dirs: list[str],
    out: Path | None = None,
    method: str = "zscore",
    use_refit: bool = True,
    max_users: int = MAX_USERS,
    batch_size: int = 256,
    top_k: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Choose weights on validation, apply them to the runs' refit models, write the
    submission; return its path and what ``blend.json`` records."""
    if method not in METHODS:
        raise LightrecError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    out = output_path(out, "saved/blends")
    members = load_members(run_dirs)
    k = top_k if top_k is not None else int(members[0].cfg.predict.top_k)
    check_top_k(k, len(members[0].item_ids), "--top-k" if top_k is not None else "predict.top_k")
    device = compute_device(members[0].cfg.trainer.accelerator)
    monitor = str(members[0].cfg.checkpoint.monitor).removeprefix("val/")
    metric_name, k_str = monitor.split("@")
    k_eval = int(k_str)
    parts, targets = validation_parts(members, method, max_users, batch_size, device)
    search = WeightSearch(parts, targets, monitor, k_eval)
    singles = [search(np.eye(len(parts))[i]) for i in range(len(parts))]
    weights, best = choose_weights(search)
    log.debug("weight search: %d user rankings over every item", search.full_rows)

    history = load_history(members[0].cfg.data, members[0].item_ids)
    check_enough_unseen(history.csr, k, history.users)
    topk = _apply(members, weights, history, method, use_refit, k, batch_size, device)
    submission.write(out, history.users, members[0].item_ids, topk)
    record = {
        "runs": [str(m.run.root) for m in members],
        "weights": [round(float(w), 4) for w in weights],
        "method": method,
        "models": applied_models(members, use_refit),
        f"val/{monitor}": {"blend": round(best, 6), "runs": [round(v, 6) for v in singles]},
        "validation_users": int(targets.shape[0]),
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
    members: list[Member],
    weights: np.ndarray,
    history: History,
    method: str,
    use_refit: bool,
    k: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Top-k of the weighted, normalised scores of every user's full history."""
    active = []  # (scorer, weight) of the runs with a weight
    for m, w in zip(members, weights, strict=True):
        if w > 0:
            model = load_model(m.run.submission_ckpt(use_refit), m.cfg)
            collate = history.collate(model.data_view, m.cfg.data.max_len)
            active.append((model_scorer(model.to(device).score_batch, collate, device), float(w)))

    def blended(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        total, seen = None, None
        for score, w in active:
            scores, seen = score(rows)
            part = w * normalise(scores, seen, method)
            total = part if total is None else total + part
        assert total is not None and seen is not None
        return total, seen

    return recommend_topk(blended, len(history.users), k, batch_size)


def report_blend(runs: list[str], **kw: Any) -> int:
    """:func:`blend` for the command line: the weights, then the submission's path on the
    last line; exit code 2 with one sentence on a user error."""
    try:
        path, record = blend(runs, **kw)
    except LightrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for run, w in zip(record["runs"], record["weights"], strict=True):
        print(f"weight {w:.2f}  {run}")
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec blend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(ap, "saved/blends", "choose the weights on")
    ap.add_argument("--method", choices=METHODS, default="zscore")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        runs = chosen_runs(a)
    except LightrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
