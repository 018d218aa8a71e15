"""What a run leaves in TensorBoard beyond its curves, so runs can be compared there.

- HPARAMS: the run's hyper-parameters (``model.*``, batch size, sequence length, epochs,
  precision, seed, refit, the split as one value) with its final metrics as
  ``final/val_recall@10``, ``final/test_ndcg@10``, ``final/refit_test_recall@10`` ...: a
  sweep becomes a sortable table. Written once, at
  the end (:class:`RunLogger` keeps Lightning from writing a metric-less set at the start).
- TEXT: the resolved config of the run, under the tag ``config``.
- PROJECTOR: the item embeddings of the selected model (``item_embeddings()``: the item
  table of BERT4Rec and SASRec, the decoder rows of MultiVAE and RecVAE), labelled with the
  titles of an ``items.csv`` next to the data file (the built-in MovieLens-100K has one),
  else with the item ids.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec.data.batches import SEQUENCE
from lightrec.data.datasets import data_file, item_table
from lightrec.data.splits import SplitSpec
from lightrec.models.base import RecommenderModule

# what HPARAMS shows besides the model's own hyper-parameters: what people tune, and the
# split (one value); TensorBoard sorts them by name and shows the first few, so plumbing
# (paths, evaluation batch sizes, checkpoint keys) is left to the TEXT tab's config
TRAINING_HPARAMS = ("data.batch_size", "trainer.max_epochs", "trainer.precision")
NOT_HPARAMS = ("model._target_", "model.num_items", "model.exclude_seen", "model.eval_ks")


class RunLogger(TensorBoardLogger):
    """TensorBoard logger whose hyper-parameters are written by :func:`write_summary` at the
    end of the run, with the final metrics (Lightning's call at the start is ignored: a
    second, metric-less set would hide them)."""

    def log_hyperparams(
        self, params: Any, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        if metrics is not None:
            super().log_hyperparams(params, metrics, step)


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyper-parameters as flat, TensorBoard-friendly values."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    flat = {
        **_flat(plain["model"], "model"),
        **_flat(plain["data"], "data"),
        **_flat(plain["trainer"], "trainer"),
    }
    out: dict[str, Any] = {
        k: v for k, v in flat.items() if k.startswith("model.") and k not in NOT_HPARAMS
    }
    out.update({k: flat[k] for k in TRAINING_HPARAMS if k in flat})
    if plain["data"]["view"] == SEQUENCE:
        out["data.max_len"] = plain["data"]["max_len"]
    out.update(
        model_name=plain["model_name"],
        seed=plain["seed"],
        refit=plain["refit"],
        refit_average_epochs=plain.get("refit_average_epochs", 0),
        split=SplitSpec.from_data_config(plain["data"]).describe(),
    )
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in out.items()}


def _flat(d: Mapping, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``final/val_recall@10``, ``final/test_...``, ``final/refit_test_...`` from metrics.json."""
    out = {}
    for part, values in (
        ("val", metrics.get("val")),
        ("test", metrics.get("test")),
        ("refit_test", (metrics.get("refit") or {}).get("test")),
    ):
        for name, value in (values or {}).items():
            out[f"final/{part}_{name}"] = float(value)
    return out


def write_summary(
    logger: TensorBoardLogger,
    cfg: DictConfig,
    metrics: Mapping[str, Any],
    model: RecommenderModule,
    item_ids: list,
) -> None:
    """HPARAMS (with the final metrics), the config as TEXT, item embeddings for PROJECTOR."""
    writer = logger.experiment
    yaml = OmegaConf.to_yaml(cfg, resolve=True)
    writer.add_text(
        "config", "\n".join("    " + line for line in yaml.splitlines())
    )  # a code block
    logger.log_hyperparams(hparams(cfg), final_metrics(metrics))
    embeddings = model.item_embeddings()
    if embeddings is not None:
        table = item_table(data_file(cfg.data.path, cfg.data.data_dir), item_ids)
        titles = table["title"] if table is not None else None
        labels = [
            _label(titles.iloc[i] if titles is not None else None, item_ids[i])
            for i in range(len(item_ids))
        ]
        step = int(metrics.get("best_epoch", 0))
        # A resumed run writes the same projection again: replace it (torch's writer keeps
        # the old one and warns) rather than keep two.
        shutil.rmtree(Path(writer.log_dir) / f"{step:05}" / "items", ignore_errors=True)
        writer.add_embedding(
            embeddings.detach().float().cpu(), metadata=labels, tag="items", global_step=step
        )
    writer.flush()


def _label(title: Any, item_id: Any) -> str:
    text = title if isinstance(title, str) and title else str(item_id)
    return " ".join(text.split())  # no tabs or new lines in the projector's metadata
