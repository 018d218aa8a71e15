"""``run(cfg)``: a finished training run's ``submission.csv`` (``python -m lightrec predict``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lightrec.config.check import check_config
from lightrec.data.datasets import data_file
from lightrec.data.interactions import index_of
from lightrec.runs import submission
from lightrec.runs.finished import FinishedRun, describe_checkpoint
from lightrec.runs.scoring import check_enough_unseen, check_top_k, recommend_topk, without_items
from lightrec.utils.console import say
from lightrec.utils.device import compute_device
from lightrec.utils.io import remove_stale_temps
from lightrec.utils.path_utils import get_directories, predict_checkpoint

log = logging.getLogger(__name__)


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


def run(cfg: DictConfig) -> Path:
    """Recommend ``predict.top_k`` unseen items to every user of the data file, from the
    user's full history (every interaction in the file); return the submission's path.
    Items of the model that the run's own file no longer has (it was edited) are left out,
    and said; on another file (new users) the model's whole catalogue is ranked."""
    check_config(cfg)
    folder = get_directories(cfg, "predict")
    finished = FinishedRun.open(folder)
    ckpt = predict_checkpoint(cfg, folder)  # the user's own ckpt_path=, else the run's rule
    k = cfg.predict.top_k
    check_top_k(k, len(finished.item_ids))
    device = compute_device(cfg.trainer.accelerator)
    model = finished.model(ckpt, device)
    which = describe_checkpoint(finished, ckpt)
    log.info("predicting with %s", which)

    data_cfg, which_data = predict_data(cfg, finished.cfg)
    history = finished.history(data_cfg)
    if data_cfg is cfg.data:  # another file than the run's: say what differs
        new_users = int((index_of(finished.user_ids, history.users) < 0).sum())
        say(
            f"predicting for {which_data}: {new_users:,} of its {len(history.users):,} users "
            f"were not in the run's training data; {history.n_unknown:,} rows name items the "
            "model does not know (ignored)"
        )
    score = finished.scorer(history, model, device)
    absent = np.flatnonzero(np.diff(history.csr.tocsc().indptr) == 0)
    if data_cfg is cfg.data:  # another file (new users): the model's whole catalogue ranks
        absent = absent[:0]
    if len(absent):  # the run's own file, edited since training: its dropped items go
        say(
            f"{len(absent):,} of the model's {len(finished.item_ids):,} items are not in "
            f"{which_data}: left out of the recommendations"
        )
        score = without_items(score, absent)
    check_enough_unseen(history.csr, k, history.users, len(absent))
    n_users = len(history.users)
    topk = recommend_topk(score, n_users, k, cfg.predict.batch_size, cfg.progress)
    remove_stale_temps(folder.root)  # a killed predict's .submission.csv.*.tmp
    submission.write(folder.submission, history.users, finished.item_ids, topk)
    log.info("wrote %s: %d users x %d items", folder.submission, n_users, k)
    say(f"wrote {folder.submission}: {n_users:,} users x {k} items of {which_data}, with {which}")
    return folder.submission
