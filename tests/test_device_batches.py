"""Training batches built on the device (data.on_device): the same training as batches sliced
on the host, step for step, shown on the CPU (the path runs on any device)."""

from __future__ import annotations

import torch

from helpers import dm_for
from lightrec.data.batches import DeviceBatches


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
