"""Every shipped config composes, binds to the classes it names, and is the one source of
the values those classes get."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from helpers import CONFIG_DIR, CONFIGS, block, compose_cfg
from lightrec.config.check import check_config


def test_there_are_model_configs():
    assert {"multi_vae", "multi_vae_v2", "bert4rec_v2", "ease", "pop"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_resolves(name):
    cfg = compose_cfg(name, [])
    missing = OmegaConf.missing_keys(cfg)
    assert missing == {"model.num_items"}, missing  # filled from the data, never typed
    assert cfg.model_name == name
    assert cfg.checkpoint.monitor.startswith("val/")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("part", ["model", "data"])
def test_every_block_binds_to_its_target(name, part):
    """torchtune-style: the YAML block is exactly the constructor's argument list, so an
    unknown or a missing key fails here, not at run time."""
    args = block(name, part)
    cls = get_class(args.pop("_target_"))
    signature = inspect.signature(cls)
    signature.bind(**args)  # raises TypeError on an unknown or a missing argument


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("part", ["model", "data"])
def test_constructors_have_no_defaults_of_their_own(name, part):
    """The YAML is the one source of defaults: a default in the signature would be a second,
    silent configuration for anyone who builds the class without the config."""
    cls = get_class(block(name, part)["_target_"])
    with_default = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.default is not inspect.Parameter.empty
    ]
    assert with_default == [], with_default


def test_arguments_from_other_blocks_are_visible_in_the_yaml():
    cfg = compose_cfg("ease", ["eval.exclude_seen=false", "data_cache.use_cache=false"])
    assert cfg.model.exclude_seen is False and cfg.data.use_cache is False


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


RECIPES = sorted(p.stem for p in (CONFIG_DIR / "recipe").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_member_composes_with_its_overrides_and_passes_the_check(recipe):
    """What ``best`` trains under each recipe: every member's config with the recipe's own
    overrides for it, composed and checked as the training would check it."""
    plan = compose_cfg("pop", [f"recipe={recipe}"]).best
    assert set(plan.overrides) <= set(plan.members), "overrides for a member it never trains"
    for member in plan.members:
        cfg = compose_cfg(member, [f"recipe={recipe}", *plan.overrides.get(member, [])])
        check_config(cfg)


def test_the_laptop_recipe_is_the_competition_recipe_within_a_time_budget():
    laptop = compose_cfg("recvae", ["recipe=competition_laptop"])
    full = compose_cfg("recvae", ["recipe=competition"])
    assert laptop.data == full.data and laptop.checkpoint == full.checkpoint  # same validation
    assert laptop.best.combine == full.best.combine == "rerank"
    assert set(laptop.best.members) <= set(full.best.members)
    assert laptop.best.max_users < full.best.max_users
    for vae in ("multi_vae_v2", "recvae"):  # each VAE trains within a time budget, not refit
        assert "refit=false" in laptop.best.overrides[vae]
        assert any(o.startswith("trainer.max_time=") for o in laptop.best.overrides[vae])
    assert "ease" not in laptop.best.overrides and "ease" not in full.best.overrides  # tuned
    assert compose_cfg("ease", ["recipe=competition_laptop"]).tune.lam  # in the run


def test_the_main_job_trains_sasrec_on_sampled_softmax_and_its_laptop_recipe_adds_budgets():
    laptop = compose_cfg("sasrec", ["recipe=last_item_laptop"])
    full = compose_cfg("sasrec", ["recipe=last_item"])
    assert compose_cfg("sasrec", []).model.loss == "ce"  # SASRec alone keeps full CE
    assert "model.loss=sampled_softmax" in full.best.overrides.sasrec  # the main job's
    assert laptop.data == full.data and laptop.checkpoint == full.checkpoint
    assert list(laptop.best.members) == list(full.best.members)
    for m in ("sasrec", "recvae"):  # the main job's overrides, plus a time budget
        extra = [o for o in laptop.best.overrides[m] if o not in full.best.overrides[m]]
        assert len(extra) == 1 and extra[0].startswith("trainer.max_time="), extra
