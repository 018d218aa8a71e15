"""Trust, round four (issue 40): values that must be finite, a recipe's plan checked before
anything trains, run folders read as data."""

from __future__ import annotations

import pytest

from helpers import compose_cfg, cpu_overrides
from lightrec.combine import best
from lightrec.config.check import check_config
from lightrec.errors import LightrecError


@pytest.mark.parametrize(
    "config, override, message",
    [
        ("ease", "model.lam=inf", "model.lam=inf must be a finite number greater than 0"),
        ("ease", "tune.lam=[100.0,inf]", "tune.lam=inf must be a finite number"),
        ("multi_vae_v2", "model.dropout=nan", "model.dropout=nan must be a finite number"),
        ("multi_vae_v2", "model.lr=-inf", "model.lr=-inf must be a finite number"),
    ],
)
def test_non_finite_values_are_refused(config, override, message):
    """40.13: NaN passes every comparison and inf every lower bound; a value must be finite."""
    with pytest.raises(LightrecError, match=message.replace("[", r"\[")):
        check_config(compose_cfg(config, [override]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("best.bags={ease: 0}", "best.bags={'ease': 0} must be a mapping of strings to integers"),
        ("best.bags={ease: -1}", "best.bags={'ease': -1} must be"),
        ("best.bags={ease: x}", "best.bags={'ease': 'x'} must be"),
        ("best.bags={ease: 1.5}", "best.bags={'ease': 1.5} must be"),
        ("best.bags={typo: 3}", "best.bags.typo: typo is not one of best.members"),
        ('+best.overrides.typo=["seed=1"]', "best.overrides.typo: typo names no config"),
        ("+best.overrides.ease=3", "best.overrides=.* must be a mapping of strings to lists"),
        ("best.budget=10min", "best.budget='10min' must be"),
    ],
)
def test_a_bad_plan_is_refused_before_anything_trains(tmp_path, tiny_csv, override, message):
    """40.11: a bag's seed count, a member's overrides and the budget are checked against
    their annotations, and the members they name against best.members, before training."""
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "best.members=[ease,item_knn]", override]
    with pytest.raises(LightrecError, match=message.replace("[", r"\[").replace("{", r"\{")):
        best.run(overrides)
    assert not list(tmp_path.rglob("metrics.json"))  # nothing trained
