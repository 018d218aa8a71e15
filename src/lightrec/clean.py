"""Remove this toolkit's cache entries: ``python -m lightrec.clean CONFIG_DIR CONFIG [overrides]``.

The cache folder comes from the composed config (``data_cache.cache_dir``), so an override
of it is honoured. Only entries named ``lightrec-*`` are removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from lightrec.data import cache


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(
            "usage: python -m lightrec.clean CONFIG_DIR CONFIG_NAME [overrides...]", file=sys.stderr
        )
        return 2
    config_dir, config_name, *overrides = argv
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
        cache_dir = cfg.data_cache.cache_dir
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    removed = cache.clean(cache_dir)
    print(f"removed {len(removed)} lightrec cache entries from {cache_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
