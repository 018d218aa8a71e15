"""benchmarks/synth.py's structured logs (``--tastes``): what a timing on them relies on."""

from __future__ import annotations

import runpy

import numpy as np

from helpers import ROOT

synth = runpy.run_path(str(ROOT / "benchmarks" / "synth.py"))


def test_a_tasteful_log_holds_distinct_items_an_hour_apart_and_taste_structure():
    log = synth["synth_log"](20_000, users=400, items=300, seed=3, tastes=5)
    assert not log.duplicated(["user", "item"]).any()  # a real log's pairs are distinct
    assert 0.9 * 20_000 <= len(log) <= 20_000  # heavy users are capped at half the catalogue
    assert log["user"].nunique() == 400 and log["item"].max() < 300
    # structure: past popularity (the first singular direction), the next 5 directions
    # hold far more of the matrix than in a popularity-only log (a model has tastes to learn)
    plain = synth["synth_log"](20_000, users=400, items=300, seed=3)

    def taste_energy(frame):
        m = np.zeros((400, 300))
        m[frame["user"], frame["item"]] = 1
        power = np.linalg.svd(m, compute_uv=False) ** 2
        return power[1:6].sum() / power[1:].sum()

    assert taste_energy(log) > 2 * taste_energy(plain)
    # a user's rows are spread in time, one hour apart
    gaps = log.sort_values(["user", "time"]).groupby("user")["time"].diff().dropna()
    assert (gaps == 3_600).all()
