"""The contracts every shipped model config keeps, each test parametrised over
``helpers.CONTRACT`` (one line per config): save/load, resume, device batches, refit and
data parallelism. A shipped config that is not in CONTRACT fails here."""

from __future__ import annotations

import json
import sys

import pytest
import pytorch_lightning as pl
import torch

from helpers import (
    CONFIGS,
    CONTRACT,
    SignalAt,
    compose_cfg,
    cpu_overrides,
    free_port,
    is_closed_form,
    make_log,
    only_metrics,
    run_cmd,
    same_numbers,
    swap_last,
)
from lightrec.data.batches import DeviceBatches, history_rows
from lightrec.models import multi_vae, recvae
from lightrec.models.sparse_input import Histories
from lightrec.runs import finished
from lightrec.training import fit as train
from lightrec.training.resume import RunInterrupted
from lightrec.utils.path_utils import RunDir

GRADIENT = [c for c in CONTRACT if not is_closed_form(c)]
# data parallelism: one config of each way a run trains is launched on two processes (each
# launch is two interpreters, 15-20 s). Every closed-form model trains one way (each process
# fits alone, then evaluates its share of users; the fits are tested in-process), and the
# MultiVAE configs are one class.
DDP = ["ease", "multi_vae_v2", "recvae", "bert4rec_v2", "sasrec"]


def training_path(config: str) -> str:
    """How a config's runs train: closed form, or its model class's own training step."""
    return "closed form" if is_closed_form(config) else compose_cfg(config, []).model._target_


def tiny(tmp_path, csv, config: str, *extra: str) -> list[str]:
    """The config's contract overrides on ``csv``, everything inside ``tmp_path``."""
    return [*cpu_overrides(tmp_path, csv), *CONTRACT[config], *extra]


def all_scores(model, dm) -> torch.Tensor:
    """Scores of every user from the training history, (users, items)."""
    batch = dm.scoring_collate("valid")(list(range(dm.num_users)))
    with torch.no_grad():
        return model.eval().score_batch(batch)[0]


def test_every_shipped_config_is_in_the_contract_tests():
    assert sorted(CONTRACT) == CONFIGS


@pytest.mark.parametrize("config", list(CONTRACT))
def test_reloaded_checkpoints_give_the_trained_models_scores(tmp_path, tiny_csv, config):
    """The model in memory after training and its reloaded last.ckpt score every user
    identically; the reloaded best.ckpt reproduces metrics.json's validation numbers."""
    run_dir = tmp_path / "run"
    cfg = compose_cfg(config, tiny(tmp_path, tiny_csv, config), run_dir)
    in_memory = {}

    class KeepLastWeights(pl.Callback):
        def on_fit_end(self, trainer, pl_module):
            in_memory.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    result = train.fit(cfg, extra_callbacks=[KeepLastWeights()])
    run = RunDir(run_dir)
    model_cfg = finished.load_config(run)
    trained = result.model
    if in_memory:  # gradient models: the last epoch's weights, as they were in memory
        trained.load_state_dict(in_memory)
    reloaded = finished.load_model(run.last_ckpt, model_cfg)
    assert torch.equal(
        all_scores(trained, result.datamodule), all_scores(reloaded, result.datamodule)
    )
    best = finished.load_model(run.best_ckpt, model_cfg)
    val = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    ).validate(best, result.datamodule, verbose=False)
    metrics = json.loads(run.metrics.read_text())
    assert {k.removeprefix("val/"): round(v, 6) for k, v in val[0].items()} == metrics["val"]


@pytest.mark.parametrize("config", list(CONTRACT))
def test_a_stopped_run_resumes_to_the_same_numbers(tmp_path, tiny_csv, config):
    """Gradient models: stopped in the middle of epoch 3, resumed from the last whole epoch.
    Closed-form models: stopped after their fit (no metrics.json yet). Either way the resumed
    run ends with the numbers of the run left alone."""
    ov = tiny(
        tmp_path,
        tiny_csv,
        config,
        "data.batch_size=8",
        "trainer.max_epochs=5",
        "data.holdout=valid_and_test",
    )
    whole = train.fit(compose_cfg(config, ov, tmp_path / "whole")).metrics
    run = RunDir(tmp_path / "cut")
    if is_closed_form(config):
        train.fit(compose_cfg(config, ov, run.root))
        run.metrics.unlink()
    else:
        with pytest.raises(RunInterrupted) as stop:
            train.fit(compose_cfg(config, ov, run.root), extra_callbacks=[SignalAt(epoch=2)])
        assert stop.value.signal_name == "SIGINT" and stop.value.run == run
        assert not run.metrics.exists()
        assert torch.load(run.last_ckpt, weights_only=True)["epoch"] == 1  # the last whole one
    resumed = train.fit(compose_cfg(config, [*ov, f"resume={run.root}"], tmp_path / "x")).metrics
    assert resumed["resumed"] == (0 if is_closed_form(config) else 1)
    same_numbers(whole, resumed)


@pytest.mark.parametrize("config", GRADIENT)
def test_device_batches_train_exactly_like_host_batches(tmp_path, tiny_csv, config, monkeypatch):
    """Training batches built on the device (data.on_device): the same training as batches
    sliced on the host, step for step, shown on the CPU (the path runs on any device).

    The autoencoders read a host slice's non-zeros and a device batch's dense rows: the same
    function with other dropout draws (tests/test_sparse_input.py). Here both read dense
    rows, so what is compared is the batches themselves."""
    for module in (multi_vae, recvae):
        monkeypatch.setattr(
            module, "histories", lambda batch, n, **_: Histories(history_rows(batch, n))
        )
    results = {}
    for on_device in (False, True):
        ov = tiny(
            tmp_path,
            tiny_csv,
            config,
            "data.batch_size=8",
            "trainer.max_epochs=3",
            "data.holdout=valid_and_test",
            f"data.on_device={on_device}",
        )
        fit = train.fit(compose_cfg(config, ov, tmp_path / str(on_device)))
        if on_device:
            assert isinstance(fit.datamodule.train_dataloader(), DeviceBatches)
        results[on_device] = fit
    host, device = results[False], results[True]
    for key in ("best_epoch", "global_steps", "val", "test"):
        assert host.metrics[key] == device.metrics[key], key
    assert host.metrics["refit"]["test"] == device.metrics["refit"]["test"]
    for name, weights in host.model.state_dict().items():
        assert torch.equal(weights, device.model.state_dict()[name]), name


@pytest.mark.parametrize("config", list(CONTRACT))
def test_refit_never_sees_a_test_item(tmp_path, config):
    """Swap every test item for another: the refit model (weights, epochs) is identical;
    only its test metrics change."""
    log = make_log()
    fits = []
    for name, variant in (("a", log), ("b", swap_last(log, from_end=0))):
        csv = tmp_path / f"{name}.csv"
        variant.to_csv(csv, index=False)
        ov = tiny(
            tmp_path,
            csv,
            config,
            "data.holdout=valid_and_test",
            "data.min_interactions=1",
            "data_cache.use_cache=false",
        )
        fits.append(train.fit(compose_cfg(config, ov, tmp_path / name)))
    a, b = fits
    wa = torch.load(a.run.refit_ckpt, weights_only=True)["state_dict"]
    wb = torch.load(b.run.refit_ckpt, weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = a.metrics["refit"], b.metrics["refit"]
    assert (ra["epochs"], ra["global_steps"]) == (rb["epochs"], rb["global_steps"])
    assert ra["epochs"] == (0 if is_closed_form(config) else a.metrics["best_epoch"] + 1)
    assert ra["test"] != rb["test"]


def test_every_training_path_is_launched_on_two_processes():
    assert {training_path(c) for c in CONTRACT} == {training_path(c) for c in DDP}


@pytest.mark.parametrize("config", DDP)
def test_trains_on_two_processes(tmp_path, config):
    """Data parallelism (DDP on 2 CPU processes, gloo): the whole run, refit included, with
    every user evaluated once (41 users: the processes score 21 and 20)."""
    csv = tmp_path / "log.csv"
    make_log(n_users=41).to_csv(csv, index=False)
    p = run_cmd(
        [
            sys.executable,
            "-m",
            "lightrec",
            "train",
            config,
            *tiny(tmp_path, csv, config, "data.batch_size=8", "data.holdout=valid_and_test"),
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "progress=none",
        ],
        cwd=tmp_path,
        env={"MASTER_PORT": str(free_port())},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    m = only_metrics(tmp_path / "saved" / "hydra_logs")
    assert m["data"]["valid"] == 41
    assert m["refit"]["epochs"] == (0 if is_closed_form(config) else m["best_epoch"] + 1)
    assert 0.0 <= m["test"]["ndcg@10"] <= 1.0
