"""Training batches built on the device (data.on_device): the same training as batches sliced
on the host, step for step, shown on the CPU (the path runs on any device)."""

from __future__ import annotations

import pytest
import torch

from helpers import compose_cfg, cpu_overrides, dm_for
from lightrec import train
from lightrec.data.batches import DeviceBatches

TINY = {
    "multi_vae_v2": [],
    "recvae": ["model.hidden_dim=16", "model.latent_dim=4"],
    "bert4rec_v2": ["data.max_len=8", "model.hidden_size=16", "trainer.min_epochs=1"],
    "sasrec": ["data.max_len=8", "model.hidden_size=16"],
}


@pytest.mark.parametrize("config", list(TINY))
def test_device_batches_train_exactly_like_host_batches(tmp_path, tiny_csv, config):
    results = {}
    for on_device in (False, True):
        ov = [
            *cpu_overrides(tmp_path, tiny_csv),
            "data.batch_size=8",
            "trainer.max_epochs=3",
            "data.holdout=valid_and_test",
            f"data.on_device={on_device}",
            *TINY[config],
        ]
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


def test_device_batches_hold_the_training_rows(tmp_path, tiny_csv):
    dm = dm_for(tiny_csv, tmp_path, batch_size=16)
    users = torch.arange(40).numpy()
    dense = torch.from_numpy(dm.train_csr.toarray()).to(torch.uint8)
    batches = list(DeviceBatches(dense, users, 16, "input_dense"))
    assert [len(b["users"]) for b in batches] == [16, 16, 8]
    for b in batches:
        want = torch.from_numpy(dm.train_csr[b["users"].numpy()].toarray()).to(torch.uint8)
        assert torch.equal(b["input_dense"], want)
    assert sorted(torch.cat([b["users"] for b in batches]).tolist()) == list(range(40))
