"""lightrec from Python (a notebook): train, combine, rehearse and score without the shell.

The same jobs the command line runs (composition, checks, run folders, cache, refit, seeds),
called in this process: a user error raises :class:`~lightrec.errors.LightrecError` with the
sentence the command line prints, never ``sys.exit``; Ctrl-C (a notebook's interrupt) raises
``KeyboardInterrupt`` and leaves the run resumable with the same call and ``resume=True``.
Nothing changes the working directory, and Hydra's global state is cleared around each job,
so calls follow one another in one kernel, a failed one included.

>>> import lightrec
>>> train, hidden = lightrec.hide(
...     pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [5, 6, 7, 5, 8], "time": [1, 2, 3, 1, 2]}),
...     last_n=1,
... )
>>> hidden.values.tolist()
[[1, 7, 3], [2, 8, 2]]
>>> lightrec.score(pd.DataFrame({"user": [1, 2], "item": [7, 6]}), hidden, k=1)["recall@1"]
0.5
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import pandas as pd

from lightrec.combine import best as best_job
from lightrec.errors import LightrecError
from lightrec.jobs import compose_job, parse, run_stage
from lightrec.runs import submission as submissions
from lightrec.serving.api import Run, load_run
from lightrec.utils.io import atomic_write

Data: TypeAlias = str | Path | pd.DataFrame


def train(
    config: str, data: Data | None = None, overrides: Sequence[str] = (), **settings: Any
) -> Run:
    """Train ``config`` (a file of ``configs/`` without ``.yaml``) as ``python -m lightrec
    train`` does, and open the finished run (``run.metrics``, ``run.path``,
    ``run.recommend(...)``).

    ``data``: a CSV path or a DataFrame of ``user,item,time`` (a frame is written once,
    named by its content, so the data cache keys it as it keys a file). ``overrides``: Hydra
    strings (``"model.lam=300"``); ``settings``: the same as keywords, a dotted key by
    ``__`` (``model__lam=300``) or a mapping (``model={"lam": 300}``)."""
    args = _overrides(config, data, overrides, settings)
    folder = run_stage(parse(["train", config, *args], None), "train", exits=False)
    if folder is None:  # the caller chose the folder (hydra.run.dir=...)
        raise LightrecError("train from Python names its own run folder: drop hydra.run.dir")
    return load_run(folder)


@dataclass
class BestResult:
    """What :func:`best` made: the submission (``user,item`` rows, best first) and its path,
    the member table (each member's training seconds, its own score, the combination's
    score without it and its marginal value), the members' run folders and the record
    (``rerank.json`` or ``blend.json``)."""

    submission: pd.DataFrame
    path: Path
    members: pd.DataFrame
    runs: list
    record: dict[str, Any]


def best(
    recipe: str = "last_item",
    data: Data | None = None,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> BestResult:
    """``python -m lightrec best recipe=<recipe>`` from Python: the recipe's members trained
    and combined (``data``, ``overrides`` and ``settings`` as in :func:`train`)."""
    args = [f"recipe={recipe}", *_overrides("pop", data, overrides, settings)]
    trained = best_job.train_members(args, exits=False)
    path, record = best_job.combine(trained)
    check = record.get("ranker_check", record)
    return BestResult(
        submission=pd.read_csv(path, dtype=str, keep_default_na=False),
        path=Path(path),
        members=pd.DataFrame(check["member_value"]),
        runs=list(record["runs"]),
        record=record,
    )


def hide(
    data: Data, last_n: int = 1, random_m: int = 0, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, hidden)``: each user's last ``last_n`` items and ``random_m`` random earlier
    ones held out, as the competition hides them (``submission hide``'s rule)."""
    log = _frame(data, "log", ("user", "item", "time"))
    return submissions.hide(log, n=last_n, m=random_m, seed=seed, source=_name(data))


def score(submission: Data, hidden: Data, k: int = 10) -> dict[str, float]:
    """The competition's score of ``submission`` on ``hidden``: Recall@k with each user's
    hits divided by min(k, the user's hidden count), NDCG@k and HitRate@k (``submission
    score``'s)."""
    pair = ("user", "item")
    sub, truth = _frame(submission, "submission", pair), _frame(hidden, "hidden set", pair)
    as_text = {"user": str, "item": str}  # ids are text, as the command line reads them
    return submissions.score(sub.astype(as_text), truth.astype(as_text), k=k)


def _name(data: Data) -> str:
    return "the DataFrame" if isinstance(data, pd.DataFrame) else str(data)


def _frame(data: Data, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """``data`` as a frame with ``columns`` (a file read as the command line reads it)."""
    if not isinstance(data, pd.DataFrame):
        return submissions.read(str(data), what, columns)
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise LightrecError(f"the {what} DataFrame has no column {', '.join(missing)}")
    return data


def _overrides(
    config: str, data: Data | None, overrides: Sequence[str], settings: Mapping[str, Any]
) -> list[str]:
    if isinstance(overrides, str):
        raise LightrecError("overrides is a list of key=value strings, not one string")
    args = list(overrides)
    for key, value in settings.items():
        args += _flatten(key.replace("__", "."), value)
    if data is not None:
        args.append(f"data.path={_data_path(config, data, args)}")
    return args


def _flatten(key: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [o for k, v in value.items() for o in _flatten(f"{key}.{k}", v)]
    return [f"{key}={_hydra_value(value)}"]


def _hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar (JSON's forms are Hydra's)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value)


def _data_path(config: str, data: Data, args: list[str]) -> str:
    if not isinstance(data, pd.DataFrame):
        return json.dumps(str(Path(data).expanduser()))
    text = data.to_csv(index=False).encode("utf-8")
    cache = Path(str(compose_job(config, args).data_cache.cache_dir)).expanduser()
    path = cache / "frames" / f"{hashlib.md5(text).hexdigest()}.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(f: IO[Any]) -> None:
            f.write(text)

        atomic_write(path, write, binary=True)
    return json.dumps(str(path))
