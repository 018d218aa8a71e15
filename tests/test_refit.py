"""The refit stage: the selected setup trained again on training + validation rows, never on
a test row; predict uses it and says so."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from helpers import CONTRACT, build_model, compose_cfg, cpu_overrides, make_log, swap_last
from lightrec.runs import finished
from lightrec.runs.scoring import model_scorer, recommend_topk
from lightrec.serving import predict
from lightrec.training import fit as train
from lightrec.utils.path_utils import RunDir


def fit(tmp_path, name: str, log: pd.DataFrame, *extra: str):
    csv = tmp_path / f"{name}.csv"
    log.to_csv(csv, index=False)
    config = extra[0] if extra and not extra[0].count("=") else "multi_vae_v2"
    ov = [
        *cpu_overrides(tmp_path, csv),
        "data.holdout=valid_and_test",
        "data.min_interactions=1",
        "data_cache.use_cache=false",
        *[e for e in extra if "=" in e],
    ]
    ov += CONTRACT[config]
    return train.fit(compose_cfg(config, ov, tmp_path / name))


def refit_state(result) -> dict:
    return torch.load(result.run.refit_ckpt, weights_only=True)["state_dict"]


@pytest.mark.parametrize("config", ["multi_vae_v2", "ease"])
def test_refit_trains_on_the_validation_items(tmp_path, config):
    """Swap every validation item: the selected epoch count is kept fixed, and the refit
    model changes, because it learned from the validation rows."""
    log = make_log()
    extra = ["trainer.max_epochs=1"]  # one epoch: the selection cannot differ
    a = fit(tmp_path, "a", log, config, *extra)
    b = fit(tmp_path, "b", swap_last(log, from_end=1), config, *extra)
    assert (
        a.metrics["refit"]["train_rows"] == a.metrics["data"]["train"] + a.metrics["data"]["valid"]
    )
    if config == "multi_vae_v2":
        assert a.metrics["refit"]["epochs"] == b.metrics["refit"]["epochs"]
    wa, wb = refit_state(a), refit_state(b)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_ease_refit_is_ease_on_training_and_validation_rows(tmp_path):
    result = fit(tmp_path, "a", make_log(), "ease")
    dm = result.datamodule
    lam = result.metrics["tuned"]["chosen"]["lam"]  # chosen on validation, in the run
    tried = sorted(t["lam"] for t in result.metrics["tuned"]["tried"])
    assert lam in tried or (result.metrics["tuned"]["interpolated"] and tried[0] < lam < tried[-1])
    by_hand = build_model("ease", num_items=dm.num_items, lam=lam, dtype="float64")
    by_hand.fit_closed_form(sp.csr_matrix(dm.train_csr + dm.valid_csr))
    assert torch.allclose(refit_state(result)["B"].double(), by_hand.B.double(), atol=1e-5)


def test_refit_trains_for_the_selected_epochs(tmp_path):
    result = fit(tmp_path, "a", make_log(), "multi_vae_v2", "trainer.max_epochs=6")
    m = result.metrics
    steps_per_epoch = -(-40 // 16)  # 40 users, batches of 16
    assert m["refit"]["epochs"] == m["best_epoch"] + 1
    assert m["refit"]["global_steps"] == (m["best_epoch"] + 1) * steps_per_epoch
    assert set(m["refit"]["test"]) == set(m["test"])
    saved = json.loads(result.run.metrics.read_text())
    assert saved["refit"] == m["refit"] and saved["val"] == m["val"]


def test_no_refit_without_validation_or_when_switched_off(tmp_path, tiny_csv):
    for name, extra in (("none", ["data.split_strategy=none"]), ("off", ["refit=false"])):
        cfg = compose_cfg("ease", [*cpu_overrides(tmp_path, tiny_csv), *extra], tmp_path / name)
        result = train.fit(cfg)
        assert "refit" not in result.metrics and not result.run.refit_ckpt.exists()


def topk_of(ckpt, run: RunDir, cfg) -> list:
    model = finished.load_model(ckpt, finished.load_config(run))
    history = finished.load_history(cfg.data, json.loads(run.id_maps.read_text())["item_ids"])
    score = model_scorer(model.score_batch, history.collate("csr", 0), torch.device("cpu"))
    top = recommend_topk(score, len(history.users), 10, 64)
    return top.ravel().tolist()


def test_predict_uses_the_refit_model_and_says_so(tmp_path, tiny_csv, caplog):
    run_dir = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "t"
    cfg = compose_cfg("multi_vae_v2", cpu_overrides(tmp_path, tiny_csv), run_dir)
    train.fit(cfg)
    run = RunDir(run_dir)
    with caplog.at_level(logging.INFO, logger="lightrec.serving.predict"):
        sub = pd.read_csv(predict.run(cfg))
    assert "the refit model" in caplog.text and "refit.ckpt" in caplog.text
    assert sub.item.tolist() == topk_of(run.refit_ckpt, run, cfg)
    assert topk_of(run.refit_ckpt, run, cfg) != topk_of(run.best_ckpt, run, cfg)

    no_refit = compose_cfg(
        "multi_vae_v2", [*cpu_overrides(tmp_path, tiny_csv), "predict.use_refit=false"]
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightrec.serving.predict"):
        sub = pd.read_csv(predict.run(no_refit))
    assert "the selected model" in caplog.text
    assert sub.item.tolist() == topk_of(run.best_ckpt, run, cfg)
    assert np.isfinite(sub.item).all()


def test_epoch_average_is_the_mean_of_the_last_epochs_weights():
    """Weights 1..5 at the ends of epochs 0..4; averaging the last 3 gives 4, and an integer
    buffer is left as it was. Without the averaging the weight would stay 5."""
    from types import SimpleNamespace

    from lightrec.training.callbacks import EpochAverage

    module = torch.nn.Linear(2, 1, bias=False)
    module.register_buffer("steps", torch.tensor(7))
    avg = EpochAverage(3, max_epochs=5)
    for epoch in range(5):
        with torch.no_grad():
            module.weight.fill_(epoch + 1.0)
            module.steps.fill_(epoch)
        avg.on_train_epoch_end(SimpleNamespace(current_epoch=epoch), module)
    assert avg.apply(module) == 3
    assert torch.equal(module.weight, torch.full((1, 2), 4.0))
    assert int(module.steps) == 4


def test_refit_averages_its_last_epochs_when_asked(tmp_path):
    """``refit_average_epochs=2``: the refit checkpoint holds the mean of its last two epochs'
    weights, which differs from the last epoch's (``refit_average_epochs=0``, same seed)."""
    log = make_log()
    plain = fit(tmp_path, "plain", log, "multi_vae_v2", "trainer.max_epochs=4")
    avg = fit(
        tmp_path, "avg", log, "multi_vae_v2", "trainer.max_epochs=4", "refit_average_epochs=2"
    )
    assert plain.metrics["best_epoch"] == avg.metrics["best_epoch"] >= 1
    assert plain.metrics["refit"]["averaged_epochs"] == 0
    assert avg.metrics["refit"]["averaged_epochs"] == 2
    a, b = refit_state(plain), refit_state(avg)
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_a_time_budget_ends_the_selection_and_the_refit_trains_what_it_chose(tmp_path):
    """``trainer.max_time`` ends the selection (here long before ``max_epochs`` or the
    patience would); the run finishes with its best validated epoch, and the refit trains
    that many epochs even when they take longer than the budget (min_epochs binds it)."""
    result = fit(
        tmp_path,
        "a",
        make_log(),
        "multi_vae_v2",
        "trainer.max_epochs=100000",
        "early_stopping.patience=100000",
        "trainer.max_time=00:00:00:02",
    )
    m = result.metrics
    assert 1 <= m["epochs_trained"] < 100000
    assert m["refit"]["epochs"] == m["best_epoch"] + 1
    assert json.loads(result.run.metrics.read_text())["refit"] == m["refit"]
