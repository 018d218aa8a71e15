"""``python -m lightrec best [key=value ...]`` (``./run_best.sh``): train the members a recipe
names (``best.members``), then combine their latest finished runs (``best.combine``: a blend,
or the re-ranker)."""

from __future__ import annotations

import dataclasses
import time

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightrec.combine import blend, rerank
from lightrec.combine.members import Member
from lightrec.errors import LightrecError
from lightrec.jobs import Command, compose_job, parse, preflight, run_stage, user_error_message
from lightrec.training.resume import setup_differences
from lightrec.training.tune import as_tuned
from lightrec.utils.console import say
from lightrec.utils.path_utils import (
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
    try:
        plan = compose_job("pop", overrides).best  # the recipe's plan, read from any config
    except (HydraException, OmegaConfBaseException) as e:
        raise LightrecError(user_error_message(e) or str(e).splitlines()[0]) from None
    names = list(plan.members)
    if len(names) < 2 or plan.combine not in ("blend", "rerank"):
        raise LightrecError(
            f"best.members={names} and best.combine={plan.combine!r}: name two configs or more "
            "(for one: python -m lightrec both CONFIG) and combine with blend or rerank"
        )
    extra = OmegaConf.to_container(plan.overrides) or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise LightrecError("best.overrides must map a member to a list of key=value overrides")
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
    folders: list[str] = []
    seconds: list[float | None] = []
    for i, (command, root) in enumerate(zip(commands, log_roots, strict=True)):
        if i in kept:
            folders.append(kept[i])
            seconds.append(None)
            continue
        t0 = time.perf_counter()
        run_stage(command, "train")
        seconds.append(time.perf_counter() - t0)
        folders.append(str(latest_finished_run(root, command.config).root))
    members: list[Member] = []
    member_seconds: list[float | None] = []
    for slot in slots:
        mine, folders = folders[: len(slot)], folders[len(slot) :]
        took, seconds = seconds[: len(slot)], seconds[len(slot) :]
        members.append(mine[0] if len(mine) == 1 else mine)
        member_seconds.append(None if None in took else round(sum(t or 0.0 for t in took), 1))
    if plan.combine == "rerank":
        return rerank.report_rerank(
            members,
            max_users=plan.max_users,
            available_only=plan.available_only,
            member_seconds=member_seconds,
        )
    return blend.report_blend(members, max_users=plan.max_users, member_seconds=member_seconds)


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
