"""The product against shared/bench's reference loops, side by side, in one session.

``python benchmarks/bench_gpu.py --reference PATH [--scale 1.0] [--which vae,bert,...]``

Runs the reference loops of ``--reference`` (``gpu_reference.py``, kept outside this
repository: the product never depends on it) and the same work
through the product, on the same device, then prints one JSON line per part and a markdown
table of the ratios (product / reference; under 1.0 is faster):

- ``vae``: a MultiVAE epoch at MovieLens-20M's shape (136,677 users x 20,108 items, 10M
  interactions, batch 500, [600, 200]) through RecSysDataModule and the MultiVAE
  LightningModule under ``pytorch_lightning.Trainer`` (validation, logging and checkpoints
  off, as in the reference), fp32 and bf16-mixed; median epoch after a warm-up epoch.
- ``bert``: a BERT4Rec epoch (138,493 users x 26,744 items, sequences up to 200, batch 256).
- ``sasrec``: the shipped SASRec's epoch at BERT4Rec's shape, for each ``model.loss``
  (``ce``, ``sampled_softmax``; no reference loop: absolute times).
- ``ease``: the EASE fit on 20,108 items, and the top-10 of every user (seen items out).
- ``predict``: ``predict_ease.py`` as a user runs it, for 138,493 users x 26,744 items of a
  20M-row CSV, wall time with Python's start-up (the target: at most 15 s on one GPU).

Both sides draw their data the same way (the reference's generators). Runs on the CPU too
(``--scale 0.01`` checks the code paths in a minute); the figures that count are a GPU's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from common import ROOT, shipped_config
from lightrec.data.batches import CSRCollate
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.runs.scoring import model_scorer, recommend_topk
from lightrec.training.fit import build_datamodule, build_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("gpu_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync()
        self.t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync()
        self.times.append(time.perf_counter() - self.t)


def with_arrays(
    config: str,
    overrides: list[str],
    user: np.ndarray,
    item: np.ndarray,
    n_users: int,
    n_items: int,
) -> tuple[RecSysDataModule, object]:
    """The shipped config's data module holding these interactions (no CSV), all training."""
    cfg = shipped_config(
        config,
        [
            "data.split_strategy=none",
            "data.min_interactions=1",
            "data_cache.use_cache=false",
            *overrides,
        ],
    )
    dm = build_datamodule(cfg)
    dm.arrays = {
        "user": user.astype(np.int32),
        "item": item.astype(np.int32),
        "time": np.arange(len(user)),
        "split": np.zeros(len(user), dtype=np.int8),
    }
    dm.meta = {"user_ids": list(range(n_users)), "item_ids": list(range(n_items)), "stats": {}}
    dm.setup("fit")
    return dm, cfg


def epochs(dm: RecSysDataModule, cfg, precision: str, n: int) -> float:
    """Median epoch time after a warm-up epoch, through the full Lightning stack."""
    pl.seed_everything(0, verbose=False)
    model = build_model(cfg, dm.num_items)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=n,
        accelerator="auto",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    return statistics.median(timer.times[1:])


def product_vae(ref, scale: float, n: int) -> dict:
    n_users, n_items, nnz = int(136677 * scale), int(20108 * max(scale, 0.05)), int(10e6 * scale)
    crow, cols, lengths = ref.synth_csr(n_users, n_items, nnz, "cpu")
    user = np.repeat(np.arange(n_users), lengths.numpy())
    dm, cfg = with_arrays(
        "multi_vae_v2",
        [
            "data.batch_size=500",
            "model.hidden_dims=[600,200]",
            "model.lr=0.001",
            "model.anneal_steps=200000",
        ],
        user,
        cols.numpy(),
        n_users,
        n_items,
    )
    return {
        f"vae_epoch_s_{name}": round(epochs(dm, cfg, precision, n), 4)
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed"))
    }


def sequence_log(scale: float, max_len: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(user, item, n_users, n_items)`` of ML-20M's shape (138,493 users x 26,744 items,
    lognormal lengths around 144, clipped to 5..max_len, Zipf-like items), as the reference
    draws BERT4Rec's."""
    n_users, n_items = int(138493 * scale), int(26744 * max(scale, 0.05))
    rng = np.random.default_rng(1)
    raw = np.exp(0.9 * rng.standard_normal(n_users))
    lengths = np.clip(np.round(raw / raw.mean() * 144), 5, max_len).astype(np.int64)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.9
    item = rng.choice(n_items, size=int(lengths.sum()), p=p / p.sum())
    return np.repeat(np.arange(n_users), lengths), item, n_users, n_items


def product_bert(ref, scale: float, n: int) -> dict:
    max_len = 200
    user, item, n_users, n_items = sequence_log(scale, max_len)
    # the reference's model: bert4rec_v2's architecture, BERT's dropout everywhere
    dm, cfg = with_arrays(
        "bert4rec_v2",
        [
            "data.batch_size=256",
            f"data.max_len={max_len}",
            "model.dropout=0.1",
            "model.attn_dropout=null",
            "model.last_item_prob=0.0",
            "model.weight_decay=0.0",
        ],
        user,
        item,
        n_users,
        n_items,
    )
    return {
        f"bert_epoch_s_{name}": round(epochs(dm, cfg, precision, n), 4)
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed"))
    }


SASREC_LOSSES = ("ce", "sampled_softmax")


def product_sasrec(scale: float, n: int) -> dict:
    """The shipped SASRec's epoch at ML-20M's shape (sequences up to 200, batch 128) with
    each ``model.loss`` (256 negatives for the sampled ones), fp32 and bf16-mixed. No
    reference loop exists for it: the figures stand alone, beside full CE's."""
    max_len = 200
    user, item, n_users, n_items = sequence_log(scale, max_len)
    dm, shipped = with_arrays("sasrec", [f"data.max_len={max_len}"], user, item, n_users, n_items)
    out = {}
    for loss in SASREC_LOSSES:  # one data module: the loss is the model's alone
        cfg = OmegaConf.merge(shipped, {"model": {"loss": loss}})
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            out[f"sasrec_{loss}_epoch_s_{name}"] = round(epochs(dm, cfg, precision, n), 4)
    return out


def product_ease(ref, scale: float) -> dict:
    n_users, n_items, nnz = int(136677 * scale), int(20108 * max(scale, 0.05)), int(10e6 * scale)
    crow, cols, lengths = ref.synth_csr(n_users, n_items, nnz, "cpu")
    user = np.repeat(np.arange(n_users), lengths.numpy())
    dm, cfg = with_arrays(
        "ease", ["model.lam=500", "model.dtype=float32"], user, cols.numpy(), n_users, n_items
    )
    model = build_model(cfg, dm.num_items).to(DEVICE)
    sync()
    t = time.perf_counter()
    model.fit_closed_form(dm.train_csr)
    sync()
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    score = model_scorer(model.score_batch, CSRCollate(dm.train_csr), torch.device(DEVICE))
    recommend_topk(score, n_users, 10, 4096)
    sync()
    return {
        "ease_fit_s": round(fit_s, 3),
        "ease_score_all_users_s": round(time.perf_counter() - t, 3),
    }


def product_predict(scale: float, work: Path) -> dict:
    """predict_ease.py for every user of a 20M-row log, as a user runs it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synth import synth_log

    rows = int(20_000_000 * scale)
    csv = work / f"predict_{rows}.csv"
    if not csv.exists():
        synth_log(rows, users=int(138_493 * scale), items=int(26_744 * max(scale, 0.05))).to_csv(
            csv, index=False
        )
    common = [
        f"data.path={csv}",
        f"paths.log_root={work / 'runs'}",
        "progress=none",
        f"paths.predict_log_root={work / 'predict_logs'}",
        f"data_cache.cache_dir={work / 'cache'}",
        "data.split_strategy=none",
        "refit=false",
        "model.dtype=float32",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "train_ease.py"), *common],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "predict_ease.py"), *common],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return {"predict_all_users_wall_s": round(time.perf_counter() - t, 2), "predict_rows": rows}


RATIOS = [  # (what, product key, reference key)
    ("MultiVAE epoch fp32, batch 500", "vae_epoch_s_fp32", "vae_epoch_s_fp32"),
    ("MultiVAE epoch bf16-mixed", "vae_epoch_s_bf16", "vae_epoch_s_bf16"),
    ("BERT4Rec epoch fp32", "bert_epoch_s_fp32", "bert_epoch_s_fp32"),
    ("BERT4Rec epoch bf16-mixed", "bert_epoch_s_bf16", "bert_epoch_s_bf16"),
    ("EASE fit", "ease_fit_s", "ease_fit_s"),
    ("EASE top-10 for all users", "ease_score_all_users_s", "ease_score_all_users_s"),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--which", default="vae,bert,sasrec,ease,predict")
    ap.add_argument("--epochs", type=int, default=4, help="product epochs per setting (1 warm-up)")
    ap.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="the reference loops' file (gpu_reference.py; not part of this repository)",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/.work/gpu")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True  # as the reference
    torch.backends.cudnn.allow_tf32 = True
    ref = load_reference(a.reference)
    which = a.which.split(",")
    reference: dict = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
    }
    product: dict = {}
    a.work.mkdir(parents=True, exist_ok=True)
    for part in which:
        if part in ("vae", "bert", "ease"):
            getattr(ref, f"bench_{part}")(a.scale, DEVICE, reference)
            print(json.dumps({"reference": part, **reference}), flush=True)
        if part == "vae":
            product.update(product_vae(ref, a.scale, a.epochs))
        elif part == "bert":
            product.update(product_bert(ref, a.scale, a.epochs))
        elif part == "sasrec":
            product.update(product_sasrec(a.scale, a.epochs))
        elif part == "ease":
            product.update(product_ease(ref, a.scale))
        elif part == "predict":
            product.update(product_predict(a.scale, a.work))
        print(json.dumps({"product": part, **product}), flush=True)

    print(
        f"\n{reference['device']}, torch {reference['torch']}, Lightning "
        f"{reference['pytorch_lightning']}, scale {a.scale}\n"
    )
    print("| ML-20M shape | reference loop | lightrec | ratio |")
    print("|---|---|---|---|")
    for what, mine, theirs in RATIOS:
        if mine in product and theirs in reference:
            p, r = product[mine], reference[theirs]
            print(f"| {what} | {r:.3f} s | {p:.3f} s | {p / r:.2f} |")
    for loss in SASREC_LOSSES:
        for name in ("fp32", "bf16"):
            key = f"sasrec_{loss}_epoch_s_{name}"
            if key in product:
                ratio = product[key] / product[f"sasrec_ce_epoch_s_{name}"]
                print(
                    f"| SASRec epoch {loss} {name} | | {product[key]:.3f} s | {ratio:.2f} of CE |"
                )
    if "predict_all_users_wall_s" in product:
        print(
            f"| predict, every user, wall with start-up | (target 15 s) | "
            f"{product['predict_all_users_wall_s']:.1f} s | |"
        )


if __name__ == "__main__":
    main()
