"""``python -m lightrec export RUN_DIR --out scorer.pt2 [--check 100]``: a finished run's
scorer (model input -> scores for every item) as a ``torch.export`` program that runs
without lightrec (``torch.export.load(path).module()(x)``; TorchScript is deprecated in
torch 2.13), any batch size, and a check that it ranks like the toolkit.

The scorer's input is the model's own view: history rows ``(B, I)`` of 0/1 floats (item
index ``i`` is ``item_ids[i]``, saved beside it as ``<out>.items.json``) for the CSR view
(EASE, ADMM-SLIM, ItemKNN, RP3beta, MultiVAE, RecVAE, Popularity), or token sequences
``(B, L)`` for SASRec and BERT4Rec (0 = padding, item index + 1, most recent last; ``L`` =
the run's ``data.max_len``). It returns raw scores: drop the items a user has seen before
taking the top K. The check scores ``--check`` users of the run's data file both ways and
compares their top 10 over unseen items.

Load only programs you exported yourself (lightrec never loads one from a run folder).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from lightrec.data.batches import SEQUENCE
from lightrec.errors import LightrecError
from lightrec.metrics import exclude_seen
from lightrec.models.base import RecommenderModule
from lightrec.runs.scoring import best_first
from lightrec.serving.api import Run, load_run
from lightrec.utils.console import refuse
from lightrec.utils.io import atomic_write
from lightrec.utils.path_utils import output_path


class Scorer(torch.nn.Module):
    """``forward(x) -> scores``: the model's :meth:`scores_from`, a module to export."""

    def __init__(self, model: RecommenderModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.scores_from(x).float()


def model_input(run: Run, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, seen)`` of the run's users ``rows``: what an exported scorer reads, built
    by the toolkit's own collate."""
    batch = run.finished.inputs(run.history, run.model)(rows)
    seen = torch.from_numpy(run.history.csr[rows].toarray())
    if run.model.data_view == SEQUENCE:
        return batch["seq"], seen
    return seen.float(), seen


def export(run: Run, out: Path) -> Path:
    """Export the run's scorer (CPU, the batch size free) and save it atomically, with its
    item ids."""
    model = copy.deepcopy(run.model).cpu().eval()
    # what Lightning's own to_torchscript() sets: a module with no Trainer may be traced
    model._jit_is_scripting = True
    example, _ = model_input(run, [0, min(1, len(run.history.users) - 1)])
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.export.export(
            Scorer(model).eval(), (example,), dynamic_shapes={"x": {0: batch}}
        )
    atomic_write(out, lambda f: torch.export.save(program, f), binary=True)
    atomic_write(Path(f"{out}.items.json"), lambda f: json.dump(run.item_ids, f))
    return out


def check(run: Run, path: Path, n_users: int = 100, k: int = 10) -> int:
    """How many of ``n_users`` users' top ``k`` differ between the exported scorer and the
    toolkit (0 when the export is faithful). Batches of another size than the trace's."""
    scorer = torch.export.load(str(path)).module()
    users = np.arange(min(n_users, len(run.history.users)))
    expected = run.recommend(users=run.history.users[users].tolist(), k=k)
    want = expected["item"].to_numpy().reshape(len(users), k)
    ids = np.asarray(run.item_ids, dtype=object)
    differ = 0
    for start in range(0, len(users), 64):
        rows = users[start : start + 64].tolist()
        x, seen = model_input(run, rows)
        with torch.no_grad():
            top = best_first(exclude_seen(scorer(x).float(), seen), k)[1].numpy()
        differ += int((ids[top] != want[start : start + len(rows)]).any(axis=1).sum())
    return differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("run_dir", help="a finished training run folder")
    ap.add_argument("--out", required=True, type=Path, help="the program to write (.pt2)")
    ap.add_argument("--check", type=int, default=100, help="users to compare (0: no check)")
    a = ap.parse_args(argv)
    try:
        out = output_path(a.out, ".")  # a folder, or one that cannot be written: one sentence
        run = load_run(a.run_dir)
        export(run, out)
        if a.check:
            differ = check(run, a.out, a.check)
            if differ:
                raise LightrecError(
                    f"the exported scorer {a.out} ranks {differ} of {a.check} users' top 10 "
                    "differently from the toolkit: do not use it"
                )
    except LightrecError as e:
        return refuse(e)
    checked = f"; the same top 10 as the toolkit for {a.check} users" if a.check else ""
    print(f"wrote {a.out} and {a.out}.items.json{checked}")
    return 0
