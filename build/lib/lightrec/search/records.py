"""A search's folder, ``<paths.log_root>/<model_name>/<date>/<time>-search``, and what it
keeps there:

- ``search.yaml``: what was asked (the config, the search file, the study and its storage);
- ``study.journal``: the study (Optuna's journal file), unless ``search.storage`` names a
  shared one (a journal file on a shared disk, or a database URL);
- ``trial_<n>``: trial ``n``'s training run, or one ``seed_<s>`` run per seed when
  ``search.seeds_per_trial`` > 1 (its values are in its ``config.yaml`` and in the study);
- ``best.yaml``: the best trial, its values, the command that trains it, and its value
  measured again on fresh seeds (``search.confirm_seeds``).
"""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from lightrec.errors import LightrecError
from lightrec.utils.io import atomic_write
from lightrec.utils.path_utils import claim_job_dir, stamp

SEARCH_FILE = "search.yaml"
BEST_FILE = "best.yaml"
JOURNAL_FILE = "study.journal"


def search_name(overrides: list[str]) -> str:
    """The ``hparams_search`` file a command's overrides name."""
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "hparams_search"]
    return given[-1] if given else ""


def read(path: Path) -> dict[str, Any] | None:
    """A search folder's ``search.yaml`` or ``best.yaml``, or None when it is missing or not
    a mapping."""
    try:
        rec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def folder(config: str, name: str, cfg: DictConfig, resume: Any) -> tuple[Path, str | None]:
    """The search's folder and the storage it recorded: a new one, or with ``resume`` the
    one it names (``true``: the latest of this config and search file ``name``)."""
    if resume in (False, None):
        return claim_job_dir(cfg, "train", stamp("-search")), None
    if resume is True:
        root = Path(cfg.paths.log_root).expanduser() / str(cfg.model_name)
        found = [
            (p.stat().st_mtime_ns, p.parent, rec)
            for p in root.rglob(SEARCH_FILE)
            if (rec := read(p))
            and rec.get("config") == config
            and rec.get("hparams_search") == name
        ]
        if found:
            _, where, rec = max(found, key=lambda f: (f[0], str(f[1])))
            return where, rec.get("storage")
        if cfg.search.storage:  # joining a shared study from a machine without a folder
            return claim_job_dir(cfg, "train", stamp("-search")), None
        raise LightrecError(
            f"resume=true: no search of {config!r} with hparams_search={name} under {root} "
            "to continue (start one without resume)"
        )
    where = Path(str(resume)).expanduser()
    rec = read(where / SEARCH_FILE)
    if rec is None:
        raise LightrecError(f"resume={resume}: not a search folder (no readable {SEARCH_FILE})")
    if rec.get("config") != config or rec.get("hparams_search") != name:
        raise LightrecError(
            f"resume={resume} is a search of {rec.get('config')!r} with hparams_search="
            f"{rec.get('hparams_search')}, not of {config!r} with hparams_search={name}"
        )
    return where, rec.get("storage")


def write_asked(where: Path, record: dict[str, Any]) -> None:
    """``search.yaml``, once: what the search was asked (kept as it is on a resume)."""
    path = where / SEARCH_FILE
    if not path.is_file():
        started = {"started": datetime.now().isoformat(timespec="seconds")}
        _write_yaml(path, {**record, **started})


def kept(fixed: list[str]) -> list[str]:
    """The command's overrides a single training of the best values keeps."""
    dropped = ("hparams_search", "search.", "paths.", "progress")
    return [o for o in fixed if not o.lstrip("+~").startswith(dropped)]


def train_command(config: str, fixed: list[str], params: list[str]) -> str:
    """The command that trains the best values alone."""
    return shlex.join(["python", "-m", "lightrec", "train", config, *kept(fixed), *params])


def write_best(where: Path, record: dict[str, Any]) -> Path:
    """``best.yaml``, written whole."""
    return _write_yaml(where / BEST_FILE, record)


def _write_yaml(path: Path, record: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: yaml.safe_dump(record, f, sort_keys=False))
