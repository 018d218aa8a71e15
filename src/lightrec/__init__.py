"""lightrec: PyTorch Lightning + Hydra toolkit for top-K recommenders from implicit feedback.

``lightrec.load_run(run_dir)`` opens a finished run for recommendations
(:mod:`lightrec.serving.api`); ``lightrec.train``, ``lightrec.best``, ``lightrec.hide`` and
``lightrec.score`` run the command line's jobs from Python (:mod:`lightrec.workflow`). Each
is imported on first use, so ``import lightrec`` stays light.
"""

from typing import Any

from lightrec.config import resolvers as _resolvers

_resolvers.register()  # the shipped configs' ${lightrec_*:...} resolvers

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("load_run", "Run"):
        from lightrec.serving import api

        return getattr(api, name)
    if name in ("train", "best", "hide", "score", "BestResult"):
        from lightrec import workflow

        return getattr(workflow, name)
    if name == "LightrecError":
        from lightrec.errors import LightrecError

        return LightrecError
    raise AttributeError(f"module 'lightrec' has no attribute {name!r}")
