"""``python -m lightrec best [key=value ...]`` (``./run_best.sh``): train the members a recipe
names (``best.members``), then combine their latest finished runs (``best.combine``: a blend,
or the re-ranker)."""

from __future__ import annotations

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightrec.combine import blend, rerank
from lightrec.errors import LightrecError
from lightrec.jobs import Command, compose_job, parse, preflight, run_stage, user_error_message
from lightrec.training.resume import setup_differences
from lightrec.utils.console import say
from lightrec.utils.path_utils import finished_runs, latest_finished_run, unfinished_runs


def run(overrides: list[str]) -> int:
    """Train each member the recipe names (``best.members``; overrides reach every one, after
    the recipe's own ``best.overrides`` for that member), then combine their latest finished
    runs (``best.combine``); the submission's path is the last line printed."""
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
    members = [
        parse(["train", name, *map(str, extra.get(name, [])), *overrides], None) for name in names
    ]
    done = _resume_plan(members) if "resume" in members[0].given else set()
    log_roots = [  # every member checked before any trains
        compose_job(m.config, m.overrides).paths.log_root
        if i in done
        else preflight(m, "train").paths.log_root
        for i, m in enumerate(members)
    ]
    for i, member in enumerate(members):
        if i not in done:
            run_stage(member, "train")
    runs = [
        str(latest_finished_run(root, m.config).root)
        for root, m in zip(log_roots, members, strict=True)
    ]
    if plan.combine == "rerank":
        args = [*runs, "--max-users", str(plan.max_users)]
        return rerank.main(args + (["--available-only"] if plan.available_only else []))
    return blend.report_blend(runs, max_users=plan.max_users)


def _resume_plan(members: list[Command]) -> set[int]:
    """``best ... resume=true`` after an interruption: a member with an unfinished run
    resumes it, one whose latest finished run was trained with the member's settings now is
    kept (and combined), any other trains afresh (a finished run of other settings is said
    and left alone). Returns the members kept as they are."""
    kept: set[int] = set()
    for i, member in enumerate(members):
        cfg = compose_job(member.config, member.overrides)
        if cfg.resume in (False, None):
            return kept
        if cfg.resume is not True:
            raise LightrecError("best resumes with resume=true (each member finds its own run)")
        root, name = cfg.paths.log_root, cfg.model_name
        if unfinished_runs(root, name):
            continue
        finished = finished_runs(root, name)
        differ = setup_differences(cfg, finished[-1]) if finished else {}
        if finished and not differ:
            say(f"best: {name} already finished with these settings ({finished[-1].root}); kept")
            kept.add(i)
            continue
        if finished:
            key, (then, now) = next(iter(differ.items()))
            say(
                f"best: {name}'s latest finished run {finished[-1].root} was trained with "
                f"{key}={then!r}, not {now!r}: training it afresh"
            )
        member.overrides.append("resume=false")  # no run of these settings: train it
    return kept
