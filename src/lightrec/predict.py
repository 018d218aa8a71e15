"""``run(cfg)``: load a finished training run and write its ``submission.csv``."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightrec import submission
from lightrec.config_check import check_config, target_class
from lightrec.data.datasets import data_file
from lightrec.data.interactions import History, full_history, index_of, read_interactions
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule
from lightrec.progress import say
from lightrec.recommend import check_enough_unseen, check_top_k, model_scorer, recommend_topk
from lightrec.utils.device import compute_device
from lightrec.utils.io import remove_stale_temps
from lightrec.utils.path_utils import RunDir, get_directories, predict_checkpoint

log = logging.getLogger(__name__)


# keys added to the configs since a run folder may have been written, with the value that
# reproduces what such a run had
ADDED_KEYS = {"data.item_features": None}
# model arguments added since a checkpoint may have been written (its hyper_parameters lack
# them), with the value that reproduces it: SASRec and BERT4Rec trained with full CE
ADDED_MODEL_ARGS = {"loss": "ce", "num_negatives": 256, "negatives": "uniform", "gbce_t": 0.75}


def load_config(run: RunDir) -> DictConfig:
    """A run folder's config.yaml (a run written before a key existed gets the value that
    reproduces it, :data:`ADDED_KEYS`)."""
    cfg = OmegaConf.load(run.config)
    assert isinstance(cfg, DictConfig)
    for key, value in ADDED_KEYS.items():
        if OmegaConf.select(cfg, key, default="???") == "???":
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def load_model(ckpt_path: Path, run_cfg: DictConfig) -> RecommenderModule:
    """Rebuild the run's model class from the checkpoint's plain hyper-parameters; one
    sentence when the file is unreadable or holds another model. A run folder is untrusted
    input: only a lightrec model class is ever built from its config.yaml."""
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, garbage, not a checkpoint at all
        raise LightrecError(
            f"checkpoint {ckpt_path} cannot be read ({type(e).__name__}): it is corrupt or "
            "truncated; train the run again"
        ) from None
    try:
        cls = target_class(run_cfg.model, "model.", RecommenderModule)
    except LightrecError as e:
        raise LightrecError(f"run folder {Path(ckpt_path).parent.parent}: {e}") from None
    try:
        args = dict(state["hyper_parameters"])
        accepted = inspect.signature(cls).parameters
        for name, value in ADDED_MODEL_ARGS.items():
            if name in accepted and name not in args:
                args[name] = value
        model = cls(**args)
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        why = str(e).strip().splitlines()[0][:160]
        raise LightrecError(
            f"checkpoint {ckpt_path} does not hold the {cls.__name__} model its run folder's "
            f"config.yaml names ({type(e).__name__}: {why})"
        ) from None
    return model.eval()


def load_history(data_cfg: DictConfig, item_ids: list) -> History:
    """Every user's full history in the data file a ``data:`` block names, over a trained
    model's item map."""
    path = data_file(data_cfg.path, data_cfg.data_dir)
    history = full_history(read_interactions(path, data_cfg.columns), item_ids)
    if history.n_unknown:
        log.warning("%d rows name items the model never saw; ignored", history.n_unknown)
    return history


def predict_data(cfg: DictConfig, run_cfg: DictConfig) -> tuple[DictConfig, str]:
    """The data a predict scores: the run's own data file, unless this command names
    ``data.path`` (then that file, and the returned block is ``cfg.data``)."""
    named = HydraConfig.initialized() and any(
        str(o).split("=", 1)[0].lstrip("+~") == "data.path"
        for o in HydraConfig.get().overrides.task
    )
    run_file = data_file(run_cfg.data.path, run_cfg.data.data_dir)
    if not named:
        return run_cfg.data, f"the run's own data file {run_file}"
    mine = data_file(cfg.data.path, cfg.data.data_dir)
    if mine.resolve() == run_file.resolve():
        return run_cfg.data, f"the run's own data file {run_file}"
    return cfg.data, f"data file {mine} (the run was trained on {run_file})"


def describe_checkpoint(run: RunDir, ckpt: Path) -> str:
    """Which model a checkpoint is, in words (predict says which one it used)."""
    if ckpt == run.refit_ckpt:
        refit = json.loads(run.metrics.read_text()).get("refit", {})
        return (
            f"the refit model {ckpt} (trained on training + validation rows for "
            f"{refit.get('epochs', '?')} epochs)"
        )
    if ckpt == run.best_ckpt:
        why = "predict.use_refit=false" if run.refit_ckpt.is_file() else "the run has no refit"
        return f"the selected model {ckpt} (best on validation; {why})"
    return f"the checkpoint {ckpt}"


def run(cfg: DictConfig) -> Path:
    """Recommend ``predict.top_k`` unseen items to every user of the data file, from the
    user's full history (every interaction in the file); return the submission's path."""
    check_config(cfg)
    run_dir = get_directories(cfg, "predict")
    ckpt = predict_checkpoint(cfg, run_dir)
    run_cfg = load_config(run_dir)
    id_maps = json.loads(run_dir.id_maps.read_text())
    k = cfg.predict.top_k
    check_top_k(k, len(id_maps["item_ids"]))
    device = compute_device(cfg.trainer.accelerator)
    model = load_model(ckpt, run_cfg).to(device)
    which = describe_checkpoint(run_dir, ckpt)
    log.info("predicting with %s", which)

    data_cfg, which_data = predict_data(cfg, run_cfg)
    history = load_history(data_cfg, id_maps["item_ids"])
    if data_cfg is cfg.data:  # another file than the run's: say what differs
        new_users = int((index_of(id_maps["user_ids"], history.users) < 0).sum())
        say(
            f"predicting for {which_data}: {new_users:,} of its {len(history.users):,} users "
            f"were not in the run's training data; {history.n_unknown:,} rows name items the "
            "model does not know (ignored)"
        )
    check_enough_unseen(history.csr, k, history.users)
    collate = history.collate(model.data_view, run_cfg.data.max_len)
    n_users = len(history.users)
    score = model_scorer(model.score_batch, collate, device)
    topk = recommend_topk(score, n_users, k, cfg.predict.batch_size, cfg.progress)
    remove_stale_temps(run_dir.root)  # a killed predict's .submission.csv.*.tmp
    submission.write(run_dir.submission, history.users, id_maps["item_ids"], topk)
    log.info("wrote %s: %d users x %d items", run_dir.submission, n_users, k)
    say(f"wrote {run_dir.submission}: {n_users:,} users x {k} items of {which_data}, with {which}")
    return run_dir.submission
