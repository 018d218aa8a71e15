"""``python -m lightrec best [key=value ...]`` (``./run_best.sh``): train the members a recipe
names (``best.members``), then combine their latest finished runs (``best.combine``: a blend,
or the re-ranker)."""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightrec.combine import blend, rerank
from lightrec.combine.members import Member
from lightrec.config.check import Best, is_closed_form
from lightrec.config.values import check_value
from lightrec.errors import LightrecError
from lightrec.jobs import Command, compose_job, parse, preflight, run_stage, user_error_message
from lightrec.params import Duration
from lightrec.training.resume import setup_differences
from lightrec.training.tune import as_tuned
from lightrec.utils.console import say
from lightrec.utils.path_utils import (
    CONFIG_DIR,
    finished_runs,
    latest_finished_run,
    quote_override,
    unfinished_runs,
)


def run(overrides: list[str]) -> int:
    """Train each member the recipe names (``best.members``; overrides reach every one, after
    the recipe's own ``best.overrides`` for that member; ``best.bags`` trains a member on
    several seeds, combined as one), then combine their runs (``best.combine``); the
    submission's path is the last line printed."""
    code: int = _combined(train_members(overrides), report=True)
    return code


def combine(trained: Trained) -> tuple[Path, dict[str, Any]]:
    """The trained members combined as the plan says: the submission's path and the record
    (``rerank.json`` or ``blend.json``); a user error raises."""
    result: tuple[Path, dict[str, Any]] = _combined(trained, report=False)
    return result


def _combined(trained: Trained, report: bool) -> Any:
    """The plan's combiner on the trained members: its command-line report (an exit code)
    or, for Python callers, its result."""
    plan, composed = trained.plan, trained.composed
    kw: dict[str, Any] = {"max_users": plan.max_users, "member_seconds": trained.seconds}
    if plan.combine == "rerank":
        fn: Any = rerank.report_rerank if report else rerank.rerank
        kw.update(available_only=plan.available_only, out_root=str(composed.paths.reranks))
    else:
        fn = blend.report_blend if report else blend.blend
        kw.update(out_root=str(composed.paths.blends))
    return fn(trained.members, **kw)


@dataclasses.dataclass
class Trained:
    """What :func:`train_members` trained: the members (a run folder, or a bag's folders),
    their training seconds (None: kept from before), the plan and the composed config."""

    members: list[Member]
    seconds: list[float | None]
    plan: DictConfig
    composed: DictConfig


def train_members(overrides: list[str], exits: bool = True) -> Trained:
    """The recipe's members, trained (``exits=False``: errors raise, for Python callers)."""
    try:
        composed = compose_job("pop", overrides)
        plan = composed.best  # the recipe's plan, read from any config
    except (HydraException, OmegaConfBaseException) as e:
        raise LightrecError(user_error_message(e) or str(e).splitlines()[0]) from None
    names = list(plan.members)
    if len(names) < 2 or plan.combine not in ("blend", "rerank"):
        raise LightrecError(
            f"best.members={names} and best.combine={plan.combine!r}: name two configs or more "
            "(for one: python -m lightrec both CONFIG) and combine with blend or rerank"
        )
    check_plan(plan)
    extra = OmegaConf.to_container(plan.overrides) or {}
    assert isinstance(extra, dict)
    bags = dict(plan.bags) if plan.bags is not None else {}
    slots = [
        _seeds(parse(["train", name, *map(str, extra.get(name, [])), *overrides], None), bags)
        for name in names
    ]
    commands = [c for slot in slots for c in slot]
    kept = _resume_plan(commands) if "resume" in commands[0].given else {}
    log_roots = [  # every member checked before any trains
        compose_job(c.config, c.overrides).paths.log_root
        if i in kept
        else preflight(c, "train").paths.log_root
        for i, c in enumerate(commands)
    ]
    budget = Budget(plan.budget)
    folders: list[str | None] = [None] * len(commands)
    seconds: list[float | None] = [None] * len(commands)
    for i in budget.order(commands):
        if i in kept:
            folders[i] = kept[i]
            continue
        command = budget.within(commands[i])
        if command is None:
            continue
        t0 = time.perf_counter()
        claimed = run_stage(command, "train", exits)  # this job's own folder (issue 40.12)
        seconds[i] = time.perf_counter() - t0
        if claimed is None:  # a folder the command line chose (hydra.run.dir=...)
            claimed = latest_finished_run(log_roots[i], command.config).root
        folders[i] = str(claimed)
    members: list[Member] = []
    member_seconds: list[float | None] = []
    for slot in slots:
        mine, folders = folders[: len(slot)], folders[len(slot) :]
        took, seconds = seconds[: len(slot)], seconds[len(slot) :]
        done = [f for f in mine if f is not None]
        if not done:
            continue  # a member the budget left out
        members.append(done[0] if len(done) == 1 else done)
        kept_one = any(f is not None and t is None for f, t in zip(mine, took, strict=True))
        member_seconds.append(None if kept_one else round(sum(t or 0.0 for t in took), 1))
    if len(members) < 2:
        raise LightrecError(
            f"best.budget={plan.budget} left time for {len(members)} member(s): combining "
            "needs two; give a larger budget"
        )
    return Trained(members, member_seconds, plan, composed)


def check_plan(plan: DictConfig) -> None:
    """``best.bags``, ``best.overrides`` and ``best.budget`` against their annotations
    (:class:`lightrec.config.check.Best`), a bag's member one of ``best.members`` and an
    override's a config: refused in one sentence before anything trains (issue 40.11)."""
    hints = typing.get_type_hints(Best)
    plain = OmegaConf.to_container(plan, resolve=True)
    assert isinstance(plain, dict)
    for key in ("bags", "overrides", "budget"):
        check_value(plain.get(key), hints[key], f"best.{key}")
    for name in plain.get("bags") or {}:
        if name not in plan.members:
            raise LightrecError(
                f"best.bags.{name}: {name} is not one of best.members {list(plan.members)}"
            )
    for name in plain.get("overrides") or {}:  # a recipe's, for a member the user left out
        if not (CONFIG_DIR / f"{name}.yaml").is_file():
            raise LightrecError(f"best.overrides.{name}: {name} names no config of configs/")


COMBINE_SHARE = 0.15  # of best.budget, kept for combining the members (the ranker's fits)
MIN_MEMBER_SECONDS = 10  # a gradient member given less than this is skipped instead


class Budget:
    """``best.budget``: the trainings in the order they run (closed forms first: seconds
    each, and the strongest members of every set measured; then the rest as the recipe
    lists them), each gradient training given what is left of the budget (less
    ``COMBINE_SHARE`` for combining) as its ``trainer.max_time``, halved for a training that
    refits (the limit bounds its selection and its refit each), and a training with no
    time left skipped, and said. Without a budget: the recipe's order, nothing changed."""

    def __init__(self, budget: str | None) -> None:
        self.total = None if budget is None else Duration.seconds(budget)
        self.start = time.perf_counter()

    def order(self, commands: list[Command]) -> list[int]:
        if self.total is None:
            return list(range(len(commands)))
        closed = [_closed_form(c) for c in commands]
        return sorted(range(len(commands)), key=lambda i: (not closed[i], i))

    def within(self, command: Command) -> Command | None:
        """``command`` with its time limit, or None when the budget has none left for it."""
        if self.total is None:
            return command
        left = self.total * (1 - COMBINE_SHARE) - (time.perf_counter() - self.start)
        if _closed_form(command):
            if left > 0:
                return command
        elif left >= MIN_MEMBER_SECONDS * (2 if _refits(command) else 1):
            cfg = compose_job(command.config, command.overrides)
            if cfg.refit:  # max_time bounds the selection and the refit each: half apiece
                left /= 2
            if cfg.trainer.max_time is not None:
                left = min(left, Duration.seconds(str(cfg.trainer.max_time)))
            limit = f"trainer.max_time={Duration.of(left)}"
            kept = [o for o in command.overrides if not o.startswith("trainer.max_time=")]
            return dataclasses.replace(command, overrides=[*kept, limit])
        say(f"best.budget: no time left for {command.config}: combined without it")
        return None


def _refits(command: Command) -> bool:
    return bool(compose_job(command.config, command.overrides).refit)


def _closed_form(command: Command) -> bool:
    return is_closed_form(compose_job(command.config, command.overrides))


def _seeds(member: Command, bags: dict[str, int]) -> list[Command]:
    """The member's trainings: one, or for a bagged member one per seed, from its seed on."""
    k = int(bags.get(member.config, 1))
    if k == 1:
        return [member]
    first = int(compose_job(member.config, member.overrides).seed)
    return [
        dataclasses.replace(member, overrides=[*member.overrides, f"seed={first + n}"])
        for n in range(k)
    ]


def _resume_plan(commands: list[Command]) -> dict[int, str]:
    """``best ... resume=true`` after an interruption: each training continues an unfinished
    run of its settings, keeps a finished run of its settings (combined as it is), or trains
    afresh (a finished run of other settings is said and left alone). Returns the kept
    trainings' run folders by their place."""
    kept: dict[int, str] = {}
    for i, command in enumerate(commands):
        cfg = compose_job(command.config, command.overrides)
        if cfg.resume in (False, None):
            return kept
        if cfg.resume is not True:
            raise LightrecError("best resumes with resume=true (each member finds its own run)")
        as_tuned(cfg, command.given)  # the knobs its run would tune, as its config.yaml says
        root, name = cfg.paths.log_root, cfg.model_name
        same = [r for r in reversed(unfinished_runs(root, name)) if not setup_differences(cfg, r)]
        if same:  # continue it in its own folder
            command.overrides.append(f"resume={quote_override(str(same[0].root))}")
            continue
        finished = finished_runs(root, name)
        match = [r for r in reversed(finished) if not setup_differences(cfg, r)]
        if match:
            say(f"best: {name} already finished with these settings ({match[0].root}); kept")
            kept[i] = str(match[0].root)
            continue
        if finished:
            key, (then, now) = next(iter(setup_differences(cfg, finished[-1]).items()))
            say(
                f"best: {name}'s latest finished run {finished[-1].root} was trained with "
                f"{key}={then!r}, not {now!r}: training it afresh"
            )
        command.overrides.append("resume=false")  # no run of these settings: train it
    return kept
