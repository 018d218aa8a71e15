"""YAML written by a run or a search that someone else may have made, read as data and
nothing more: no anchors or aliases (a few hundred bytes of nested aliases expand to
gigabytes), no OmegaConf interpolation (``${oc.env:...}`` reads the environment,
``${oc.create:...}`` builds nodes; a finished run's config.yaml is written resolved, so a
``${`` in one is never legitimate), and a bounded size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightrec.errors import LightrecError

MAX_BYTES = 1 << 20  # a run's config.yaml is a few KB


def read_yaml(path: Path, what: str) -> Any:
    """The plain data of the YAML file ``path`` (``what`` names it in a refusal).

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "c.yaml")
    >>> _ = open(f, "w").write("a: &x [1, 2]\\nb: *x\\n")
    >>> try:
    ...     read_yaml(Path(f), "config.yaml")
    ... except LightrecError as e:
    ...     print(e)
    config.yaml uses YAML anchors or aliases (line 1): a run's files never do
    """
    try:
        if path.stat().st_size > MAX_BYTES:
            raise LightrecError(f"{what} is over {MAX_BYTES >> 20} MiB: not a run's file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LightrecError(f"{what} cannot be read ({e})") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1
                raise LightrecError(
                    f"{what} uses YAML anchors or aliases (line {line}): a run's files never do"
                )
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LightrecError(f"{what} is not YAML ({str(e).splitlines()[0]})") from None
    _no_interpolation(data, what, "")
    return data


def _no_interpolation(value: Any, what: str, key: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _no_interpolation(k, what, key)
            _no_interpolation(v, what, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            _no_interpolation(v, what, f"{key}[{n}]")
    elif isinstance(value, str) and "${" in value:
        raise LightrecError(
            f"{what}: {key or 'a key'} holds an interpolation (${{...}}); a finished run's "
            "settings are written resolved, so it was edited: refused"
        )
