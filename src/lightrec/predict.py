"""``run(cfg)``: load a finished training run and write its ``submission.csv``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lightrec.data.batches import CSRCollate, SequenceCollate
from lightrec.data.datasets import movielens_100k
from lightrec.data.recsys_data import full_history, read_interactions
from lightrec.recommend import check_enough_unseen, recommend_topk, write_submission
from lightrec.utils.path_utils import get_directories

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(ckpt_path: Path, run_cfg: DictConfig) -> torch.nn.Module:
    """Rebuild the run's model class from the checkpoint's plain hyper-parameters."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = get_class(run_cfg.model._target_)(**state["hyper_parameters"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def run(cfg: DictConfig) -> Path:
    """Recommend ``predict.top_k`` unseen items to every user of the data file, from the
    user's full history (every interaction in the file); return the submission's path."""
    paths = get_directories(cfg, "predict")
    run_cfg = OmegaConf.load(paths["config"])
    id_maps = json.loads(paths["id_maps"].read_text())
    device = pick_device()
    model = load_model(paths["ckpt"], run_cfg).to(device)

    data_path = cfg.data.path if cfg.data.path is not None else movielens_100k(cfg.data.data_dir)
    interactions = read_interactions(data_path, cfg.data.columns)
    history = full_history(interactions, id_maps["item_ids"])
    if history.n_unknown:
        log.warning("%d rows name items the model never saw; ignored", history.n_unknown)
    k = cfg.predict.top_k
    check_enough_unseen(history.csr, k, history.users)
    if run_cfg.data.view == "sequence":
        seqs = history.sequences(run_cfg.data.max_len, len(id_maps["item_ids"]) + 1)
        collate = SequenceCollate(seqs, history.csr)
    else:
        collate = CSRCollate(history.csr)
    n_users = len(history.users)
    topk = recommend_topk(model.score_batch, collate, n_users, k, cfg.predict.batch_size, device)
    write_submission(paths["submission"], history.users, id_maps["item_ids"], topk)
    log.info("wrote %s: %d users x %d items (checkpoint %s)",
             paths["submission"], n_users, k, paths["ckpt"])  # fmt: skip
    return paths["submission"]
