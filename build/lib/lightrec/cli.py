"""The one entry: ``python -m lightrec MODE [CONFIG] [-m] [key=value ...]``.

Every stage of every config goes through :func:`main`; ``run.sh``, the named scripts
(``train_multi_vae.py``, ``run_bert4rec.sh``, ...) and the ``lightrec`` command are thin
aliases of it. It parses the mode and hands the work on: a config mode's stages to
:mod:`lightrec.jobs` (a search to :mod:`lightrec.search`), ``best`` to
:mod:`lightrec.combine.best`, the other tools to their own ``main``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import TYPE_CHECKING

from lightrec.errors import LightrecError
from lightrec.utils import quiet
from lightrec.utils.console import EXIT_USER_ERROR, refuse

if TYPE_CHECKING:
    from lightrec import jobs

# each tool's own main; imported when its mode runs, so that `--help`, a bad mode and the
# lighter tools start without the training stack
TOOL_MAINS = {
    "blend": "lightrec.combine.blend",
    "export": "lightrec.serving.export",
    "recommend": "lightrec.serving.api",
    "rerank": "lightrec.combine.rerank",
    "report": "lightrec.analysis.report",
    "serve": "lightrec.serving.serve",
    "submission": "lightrec.runs.submission",
}

CONFIG_MODES = {
    "train": "train a config (a sweep or a search with -m)",
    "predict": "submission.csv from the latest finished run of a config (or run_dir=...)",
    "both": "train, then predict with the new run",
    "clean": "remove this toolkit's cache entries (lightrec-* in data_cache.cache_dir)",
    "clean-train": "clean, then train",
    "clean-both": "clean, then train and predict",
}


STAGES = {"train": ("train",), "predict": ("predict",), "both": ("train", "predict")}


TOOL_MODES = {
    "best": "train the recipe's members (best.members) and blend or re-rank them",
    "blend": "blend finished runs: blend RUN_DIR RUN_DIR ... (blend --help)",
    "rerank": "re-rank finished runs' candidates with a GBDT ranker (rerank --help)",
    "export": "a run's scorer as a torch.export program, checked (export --help)",
    "recommend": "a run's recommendations with scores, also for new histories (recommend --help)",
    "report": "the results table from finished runs (report --help)",
    "serve": "a run's model behind HTTP on 127.0.0.1: serve RUN_DIR [--port] (serve --help)",
    "submission": "hide items of a log, or score a submission (submission --help)",
}


def usage(default_config: str | None = None) -> str:
    width = max(map(len, {**CONFIG_MODES, **TOOL_MODES}))
    lines = [
        "usage: python -m lightrec MODE [CONFIG] [-m] [key=value ...]",
        "       python -m lightrec best [key=value ...]",
        "       python -m lightrec blend|export|recommend|rerank|report|serve|submission ARGS",
        "",
        "modes:",
        *(f"  {m:<{width}}  {what}" for m, what in {**CONFIG_MODES, **TOOL_MODES}.items()),
        "",
        "CONFIG   a file of configs/ without .yaml"
        + (f" (default: {default_config})" if default_config else ""),
        "-m       a Hydra sweep (key=a,b), or a search (hparams_search=<model>; resume=true)",
        "example  python -m lightrec both multi_vae_v3 data.path=my_log.csv seed=1",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, default_config: str | None = None) -> int:
    """Run a command line (``sys.argv[1:]`` by default); return the exit code. A user error
    is one ``error:`` sentence on standard error and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--default-config"] and len(argv) >= 2:  # the named run scripts
        default_config, argv = argv[1], argv[2:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(default_config), file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else EXIT_USER_ERROR
    mode, rest = argv[0], argv[1:]
    if mode in TOOL_MODES and mode != "best":
        return _tool(mode, rest)
    if mode not in CONFIG_MODES and mode != "best":
        return refuse(f"unknown mode {mode!r}\n{usage(default_config)}")
    if any(a in ("-h", "--help") for a in rest):
        print(usage(default_config))
        return 0
    quiet.silence()
    from lightrec import jobs

    try:
        if mode == "best":
            from lightrec.combine import best

            return best.run(rest)
        cmd = jobs.parse(argv, default_config)
        if cmd.mode.startswith("clean"):
            jobs.clean(cmd)
        for stage in STAGES.get(cmd.mode.removeprefix("clean-"), ()):
            _run_stage(cmd if stage == "train" else _without_resume(cmd), stage)
    except LightrecError as e:
        return refuse(e)
    return 0


def _without_resume(cmd: jobs.Command) -> jobs.Command:
    """The command with its ``resume=`` override dropped: in ``both``, the training stage
    resumes the run, and predict then uses it like any finished run."""
    from lightrec.jobs import drop_keys

    return dataclasses.replace(cmd, overrides=drop_keys(cmd.overrides, {"resume"}))


def _run_stage(cmd: jobs.Command, stage: str) -> None:
    """A stage of a config mode; a training with ``hparams_search`` is a search."""
    from lightrec import jobs, search

    if stage == "train" and "hparams_search" in cmd.given:
        if not cmd.multirun:
            raise LightrecError(
                f"a search runs with -m: python -m lightrec train {cmd.config} -m "
                "hparams_search=<file> [key=value ...]"
            )
        if code := search.run(cmd):
            sys.exit(code)
        return
    jobs.run_stage(cmd, stage)


def _tool(mode: str, args: list[str]) -> int:
    code: int = importlib.import_module(TOOL_MAINS[mode]).main(args)
    return code
