"""A closed-form model's knobs chosen on the run's own validation, inside the run.

A closed form fits in seconds, so instead of values pinned on one dataset (EASE's lambda
chosen on MovieLens-100K), the run fits each combination of its config's ``tune:`` grid on
the training rows, scores it on validation by ``checkpoint.monitor`` (the recipe's, so it
is the hidden set's rehearsal), and trains the best (the first of equals). The chosen
values go into the run's config.yaml and ``metrics.json`` (``tuned``), and into the log.
A knob the command line sets (a user's override, a search trial's value, a recipe's
``best.overrides``) is not tuned: it is taken as given.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightrec.config.build import build_model
from lightrec.config.check import is_closed_form
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.models.base import ClosedFormModule
from lightrec.training.stage import trainer
from lightrec.utils.console import say
from lightrec.utils.device import compute_device
from lightrec.utils.memory import release_free_memory

log = logging.getLogger(__name__)


def given_keys() -> set[str]:
    """The config keys this job's own command line sets (none outside a Hydra job)."""
    if not HydraConfig.initialized():
        return set()
    return {str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def grid(cfg: DictConfig, given: set[str] | None = None) -> dict[str, list]:
    """The knobs to tune and their values: the config's ``tune:`` grid, less the knobs the
    command line sets (``given``; by default this job's own)."""
    wanted = OmegaConf.to_container(cfg.tune, resolve=True) if cfg.tune is not None else {}
    wanted = wanted or {}
    assert isinstance(wanted, dict)
    given = given_keys() if given is None else given
    return {str(k): list(v) for k, v in wanted.items() if "model." + str(k) not in given}


def as_tuned(cfg: DictConfig, given: set[str] | None = None) -> None:
    """``cfg.tune`` reduced to the knobs a run of it tunes: what its config.yaml records, so
    that two runs' settings compare (``best resume=true``)."""
    knobs = grid(cfg, given)
    cfg.tune = OmegaConf.create(knobs) if knobs and _tunes(cfg) else None


def _tunes(cfg: DictConfig) -> bool:
    return is_closed_form(cfg)


def tune(cfg: DictConfig, dm: RecSysDataModule) -> dict[str, Any] | None:
    """Choose the grid's best values on validation and write them into ``cfg.model``;
    return what ``metrics.json`` records (None when there is nothing to tune)."""
    as_tuned(cfg)
    tuned = OmegaConf.to_container(cfg.tune) if cfg.tune is not None else {}
    assert isinstance(tuned, dict)
    knobs: dict[str, list] = {str(k): list(v) for k, v in tuned.items()}
    if not knobs or not dm.has_validation:
        cfg.tune = None  # nothing was tuned: the run's config says so
        return None
    monitor, mode = str(cfg.checkpoint.monitor), str(cfg.checkpoint.mode)
    sign = 1.0 if mode == "max" else -1.0
    # in a list, as `shared`: emptied before the final fit (the closure keeps its cell alive)
    evaluators = [trainer(cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)]
    device = compute_device(cfg.trainer.accelerator)
    tried: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    first = build_model(cfg, dm.num_items).to(device)
    assert isinstance(first, ClosedFormModule)
    shared = [first.tuning_state(dm.train_csr)]  # e.g. EASE's Gram matrix, once for all

    def evaluate(values: dict[str, Any]) -> float:
        candidate = build_model(_with(cfg, values), dm.num_items).to(device)
        assert isinstance(candidate, ClosedFormModule)
        candidate.fit_candidate(dm.train_csr, shared[0])
        value = float(evaluators[0].validate(candidate, datamodule=dm, verbose=False)[0][monitor])
        candidate.release_weights()  # its n x n goes now: the evaluator keeps a reference
        del candidate
        tried.append({**values, monitor: round(value, 6)})
        return sign * value

    open_ended = set(type(first).OPEN_ENDED)
    del first
    searched = search(knobs, evaluate, open_ended)
    extended = searched.extended
    shared.clear()  # the final fit has the memory to itself
    evaluators.clear()  # and the trainer, with what its last validation holds, goes too
    gc.collect()  # a trainer's reference cycles hold the last candidate until collected
    release_free_memory()  # and what validation left in the allocator goes back to the OS
    best = max(
        range(len(tried)), key=lambda n: (sign * tried[n][monitor], -_place(knobs, tried[n]))
    )
    chosen = {k: tried[best][k] for k in knobs}
    how = f"the best of {len(tried)} tried"
    if searched.interpolated is not None:
        (name,) = knobs
        chosen = {name: searched.interpolated}
        how = (
            f"the vertex in log scale of the best of {len(tried)} tried, {name}="
            f"{tried[best][name]}, and its neighbours"
        )
    for key, value in chosen.items():
        OmegaConf.update(cfg, f"model.{key}", value)
    seconds = time.perf_counter() - t0
    shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
    grid_size = len(list(itertools.product(*knobs.values())))
    at_edge = _at_edge(knobs, chosen)
    if extended and chosen[next(iter(knobs))] == extended[-1]:  # still improving at the last
        at_edge = list(knobs)  # step past the grid: the best may lie further still
    edge = f"; past the grid's edge: {extended}" if extended else ""
    edge += (
        f"; at the grid's edge ({', '.join(at_edge)}): widen tune: to look past it"
        if at_edge
        else ""
    )
    say(
        f"tuned {cfg.model_name} on validation: {shown} ({monitor} {tried[best][monitor]:.4f}, "
        f"{how} of a grid of {grid_size}{edge}, "
        f"{seconds:.0f} s)"
    )
    record: dict[str, Any] = {
        "chosen": chosen,
        "monitor": monitor,
        "tried": tried,
        "seconds": round(seconds, 1),
    }
    if searched.interpolated is not None:
        record["interpolated"] = True  # chosen between tried values, not one of them
    if at_edge:
        record["at_grid_edge"] = at_edge
    return record


def _at_edge(knobs: dict[str, list], chosen: dict[str, Any]) -> list[str]:
    """The knobs whose chosen value is their grid's first or last of 2 or more (numbers)."""
    edge = []
    for name, values in knobs.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(set(numbers)) > 1 and chosen[name] in (min(numbers), max(numbers)):
            edge.append(name)
    return edge


EXTEND = 3  # steps a one-knob search may take past its grid's edge while the score improves
BRACKET = 5  # an open-ended knob's grid of this many values or more is bracketed, not ternary


@dataclass
class Searched:
    """What a search found beyond the values it evaluated: the values tried past the grid's
    edge, and a value interpolated between the best evaluated and its neighbours (None when
    the best evaluated is the choice)."""

    extended: list[Any] = field(default_factory=list)
    interpolated: Any = None


def search(
    knobs: dict[str, list],
    evaluate: Callable[[dict[str, Any]], float],
    open_ended: set[str] | frozenset[str] = frozenset(),
) -> Searched:
    """Call ``evaluate`` (higher is better) on the grid's values the search needs.

    Several knobs: every combination. One numeric knob: its validation score is taken as
    unimodal in the knob (a regulariser's, a neighbourhood's size). A knob of ``open_ended``
    (any positive value is valid: a regulariser) with a grid of ``BRACKET`` values or more
    is bracketed: three grid values spread evenly in log scale, then, while the best is the
    outermost evaluated, a value outward by the three's own spacing (past the grid's edge
    ``EXTEND`` times at most); once the best has an evaluated neighbour on each side, the
    choice is the vertex of the parabola through the three in log scale, kept within half
    a step of the best (3 fits of EASE's 8 lambdas when the best is inside: a curve this
    flat at its top is found as well by a vertex as by more fits). Otherwise a ternary
    search of the sorted grid (about ``2 log_1.5(n)`` fits), and an open-ended knob whose
    best is the grid's first or last value goes on past it the same way.

    >>> seen = []
    >>> def f(v):
    ...     seen.append(v["lam"])
    ...     return -abs(v["lam"] - 300)
    >>> search({"lam": [50, 100, 200, 300, 500, 1000, 2000, 5000]}, f), sorted(seen)
    (Searched(extended=[], interpolated=None), [100, 200, 300, 500, 1000])
    >>> seen.clear()
    >>> def g(v):  # a parabola in log scale, at its top at 300
    ...     seen.append(v["lam"])
    ...     return -math.log(v["lam"] / 300) ** 2
    >>> search({"lam": [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 5000.0]}, g, {"lam"})
    Searched(extended=[], interpolated=300.0)
    >>> sorted(seen)
    [100.0, 500.0, 2000.0]
    >>> search({"lam": [100.0, 200.0, 400.0]}, lambda v: -abs(v["lam"] - 1000.0), {"lam"})
    Searched(extended=[800.0, 1600.0], interpolated=None)
    """
    names = list(knobs)
    values = knobs[names[0]] if len(names) == 1 else []
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(names) > 1 or not numeric or len(set(values)) < 3:
        for combo in itertools.product(*knobs.values()):
            evaluate(dict(zip(names, combo, strict=True)))
        return Searched()
    name = names[0]
    grid = sorted(set(values))
    memo: dict[Any, float] = {}

    def f(value: Any) -> float:
        if value not in memo:
            memo[value] = evaluate({name: value})
        return memo[value]

    open_knob = name in open_ended and grid[0] > 0
    if open_knob and len(grid) >= BRACKET:
        return _bracket(grid, f, memo)
    lo, hi = 0, len(grid) - 1
    while hi - lo > 2:
        third = (hi - lo) // 3
        a, b = lo + third, hi - third
        if f(grid[a]) < f(grid[b]):
            lo = a + 1
        elif f(grid[a]) > f(grid[b]):
            hi = b - 1
        else:
            lo, hi = a, b
    best = max(grid[lo : hi + 1], key=lambda v: (f(v), -v))
    extended: list[Any] = []
    if open_knob and best in (grid[0], grid[-1]):
        value = best
        for _ in range(EXTEND):
            value = _past(grid, value, downward=best == grid[0])
            if value in memo:
                break
            extended.append(value)
            if f(value) <= memo[best]:
                break
            best = value
    return Searched(extended)


def _past(grid: list, value: Any, downward: bool) -> Any:
    """The next value past an edge of ``grid``, a step of the grid's edge ratio from ``value``."""
    step = grid[1] / grid[0] if downward else grid[-1] / grid[-2]
    value = value / step if downward else value * step
    integral = all(isinstance(v, int) for v in grid)
    return max(1, round(value)) if integral else round(value, 6)


def _bracket(grid: list, f: Callable[[Any], float], memo: dict[Any, float]) -> Searched:
    """``search``'s bracketing of an open-ended knob's grid (positive values, 5 or more)."""
    logs = [math.log(v) for v in grid]
    picks = sorted(
        {
            min(range(len(grid)), key=lambda n: abs(logs[n] - logs[0] - q * (logs[-1] - logs[0])))
            for q in (1 / 6, 1 / 2, 5 / 6)  # three values spread evenly in log scale
        }
    )
    if len(picks) < 3:
        picks = [0, len(grid) // 2, len(grid) - 1]
    low, middle, high = (grid[n] for n in picks)
    for n in picks:
        f(grid[n])
    integral = all(isinstance(v, int) for v in grid)
    extended: list[Any] = []
    while True:
        points = sorted(memo)
        best = max(points, key=lambda v: (memo[v], -v))
        place = points.index(best)
        if 0 < place < len(points) - 1:
            break  # bracketed
        # outward by the first three's own spacing, past the grid's edge if need be
        value = _rounded(best / (middle / low) if place == 0 else best * (high / middle), integral)
        if len(extended) >= EXTEND or value in memo or value <= 0:
            return Searched(extended)  # the best is the outermost: no vertex past it
        if not grid[0] <= value <= grid[-1]:
            extended.append(value)
        f(value)
    x = [math.log(v) for v in points[place - 1 : place + 2]]
    y = [memo[v] for v in points[place - 1 : place + 2]]
    num = (x[1] - x[0]) ** 2 * (y[1] - y[2]) - (x[1] - x[2]) ** 2 * (y[1] - y[0])
    den = (x[1] - x[0]) * (y[1] - y[2]) - (x[1] - x[2]) * (y[1] - y[0])
    vertex = x[1] - 0.5 * num / den if den != 0 else x[1]
    vertex = min(max(vertex, (x[0] + x[1]) / 2), (x[1] + x[2]) / 2)  # within half a step
    value = _rounded(math.exp(vertex), integral)
    if value in memo:  # evaluated already, so no better than the best: the best it is
        return Searched(extended)
    return Searched(extended, value)


def _rounded(value: float, integral: bool) -> Any:
    """Two significant digits (243.7 -> 240.0), or the nearest positive integer."""
    return max(1, round(value)) if integral else float(f"{value:.2g}")


def _place(knobs: dict[str, list], row: dict[str, Any]) -> float:
    """A tried row's order among equals: its place in the grid (first of equals), and a
    value past the grid's edge after every grid value."""
    combos = list(itertools.product(*knobs.values()))
    key = tuple(row[k] for k in knobs)
    return combos.index(key) if key in combos else len(combos)


def _with(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    changed = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(changed, f"model.{key}", value)
    return changed
