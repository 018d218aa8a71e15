"""The one rule for where a process computes (training's closed-form fits, predict, blend):
the GPU only when trainer.accelerator allows one and there is one."""

from __future__ import annotations

import torch

from lightrec.utils import device


def test_a_gpu_is_used_only_when_the_accelerator_allows_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.compute_device("cpu") == torch.device("cpu")  # predict used to take the GPU
    assert device.compute_device("auto") == torch.device("cuda:1")  # this process's own GPU
    assert device.compute_device("gpu") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.compute_device("auto") == torch.device("cpu")
