"""Every shipped config composes, and every key the code reads is present."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import CONFIGS, compose_cfg


def test_there_are_model_configs():
    assert {"multi_vae", "multi_vae_v2"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_resolves(name):
    cfg = compose_cfg(name, [])
    missing = OmegaConf.missing_keys(cfg)
    assert missing == {"model.num_items"}, missing  # filled from the data, never typed
    assert cfg.model_name == name
    assert get_class(cfg.model._target_)
    assert get_class(cfg.data._target_)
    assert cfg.checkpoint.monitor.startswith("val/")


def test_issue_hyper_parameters():
    v1, v2 = compose_cfg("multi_vae", []), compose_cfg("multi_vae_v2", [])
    assert (v1.model.hidden_dims, v1.model.dropout, v1.model.kl_cap, v1.model.anneal_steps) == (
        [400, 200],
        0.6,
        0.5,
        10000,
    )
    assert (v2.model.hidden_dims, v2.model.dropout, v2.model.kl_cap, v2.model.anneal_steps) == (
        [600, 200],
        0.5,
        0.2,
        20000,
    )
    assert v2.early_stopping.patience == 20


def test_unknown_key_is_an_error():
    with pytest.raises(Exception, match="Could not override .model.dropuot."):
        compose_cfg("multi_vae_v2", ["model.dropuot=0.1"])
