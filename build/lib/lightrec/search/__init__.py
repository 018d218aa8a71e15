"""Hyper-parameter searches (``python -m lightrec train CONFIG -m hparams_search=<file>``): the
driver (:mod:`~lightrec.search.driver`, ask and tell), the Optuna adapter
(:mod:`~lightrec.search.study`), the worker processes (:mod:`~lightrec.search.workers`) and the
search folder's records (:mod:`~lightrec.search.records`)."""

from lightrec.search.driver import run

__all__ = ["run"]
