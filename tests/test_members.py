"""Members tuned to the user's data and bagged over seeds (issue 31): a closed form's knobs
chosen on the run's own validation inside the run, never a knob the command line gives; a
gradient member trained on several seeds and combined as one member."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import yaml

from helpers import build_model, compose_cfg, cpu_overrides, dm_for, make_log, run_here
from lightrec.combine import members
from lightrec.combine.weights import normalise
from lightrec.config.check import check_config
from lightrec.errors import LightrecError
from lightrec.training import fit as train


def test_a_closed_form_chooses_its_knobs_on_validation_in_the_run(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "tune={lam: [1.0, 30.0, 3000.0]}"]
    result = train.fit(compose_cfg("ease", overrides, run_dir))
    tuned = result.metrics["tuned"]
    monitor = tuned["monitor"]
    values = {t["lam"]: t[monitor] for t in tuned["tried"]}
    assert set(values) == {1.0, 30.0, 3000.0}
    best = max(values, key=values.get)
    assert tuned["chosen"] == {"lam": best} and result.model.hparams.lam == best
    assert result.metrics["val"][monitor.removeprefix("val/")] == pytest.approx(values[best])
    saved = json.loads((run_dir / "metrics.json").read_text())["tuned"]
    assert saved == tuned
    for lam in values:  # each tried value scored like a run of it alone
        alone = train.fit(
            compose_cfg("ease", [*overrides, "tune=null", f"model.lam={lam}"], tmp_path / str(lam))
        )
        assert alone.monitored == pytest.approx(values[lam], abs=1e-6)


def test_ease_tunes_from_one_gram_matrix_in_float32(tmp_path, tiny_csv, monkeypatch):
    """Issue 39: every lambda of the grid comes from one Gram matrix (computed once, not once
    per lambda), each candidate in float32; the final fit is the run's own (float64 here)."""
    from lightrec.models import ease

    calls = []
    real = ease.gram_matrix
    monkeypatch.setattr(
        ease, "gram_matrix", lambda t, d, dtype: calls.append(dtype) or real(t, d, dtype)
    )
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "tune={lam: [1.0, 10.0, 100.0, 1000.0]}"]
    result = train.fit(compose_cfg("ease", overrides, tmp_path / "run"))
    assert calls[0] == torch.float32 and calls.count(torch.float32) == 1  # once for the grid
    assert calls[1:] == [torch.float64, torch.float64]  # the final fit and its refit
    assert len(result.metrics["tuned"]["tried"]) >= 3


def test_a_float32_candidate_is_the_float64_fit(tiny_csv, tmp_path):
    dm = dm_for(tiny_csv, tmp_path)
    a = build_model("ease", dm.num_items, dtype="float64")
    a.fit_closed_form(dm.train_csr)
    b = build_model("ease", dm.num_items, dtype="float64")
    b.fit_candidate(dm.train_csr, b.tuning_state(dm.train_csr))
    assert b.B.dtype == torch.float32
    assert torch.allclose(a.B, b.B, atol=1e-5) and not torch.equal(a.B, b.B)


def test_a_search_of_one_knob_fits_fewer_than_its_grid_and_finds_a_unimodal_best():
    from lightrec.training.tune import search

    grid = [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 5000.0]
    for target in [*grid, 700.0]:
        seen: list[float] = []

        def score(v, target=target, seen=seen):
            seen.append(v["lam"])
            return -abs(math.log(v["lam"] / target))

        search({"lam": grid}, score)
        assert len(seen) <= 6 and len(set(seen)) == len(seen)  # never a value twice
        assert max(seen, key=lambda v: score({"lam": v}, seen=[])) == min(
            grid, key=lambda v: abs(math.log(v / target))
        )


def test_an_open_ended_grid_is_bracketed_in_three_fits_and_its_vertex_chosen():
    """Issue 39: EASE's tuning at most 2x one fit: 3 candidates of its 8 lambdas when the best
    is inside, the choice the parabola's vertex (in log scale) through the best and its
    neighbours; a best outside the three walks outward by their spacing, past the grid if
    it must (a log's best lambda ranged from 66 to 660 on the logs measured)."""
    from lightrec.training.tune import search

    grid = [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 5000.0]
    for target, fits in [(300.0, 3), (700.0, 3), (1200.0, 4), (60.0, 4), (3000.0, 4), (10.0, 5)]:
        seen: list[float] = []

        def score(v, target=target, seen=seen):
            seen.append(v["lam"])
            return -(math.log(v["lam"] / target) ** 2)  # a curve with its top at target

        found = search({"lam": grid}, score, {"lam"})
        assert len(seen) == fits and len(set(seen)) == len(seen), (target, seen)
        chosen = found.interpolated or max(seen, key=lambda v: score({"lam": v}, seen=[]))
        assert abs(math.log(chosen / target)) < 0.05, (target, chosen)  # its top, to 5%
    seen = []
    found = search({"lam": grid}, lambda v: seen.append(v["lam"]) or -v["lam"], {"lam"})
    assert seen == [100.0, 500.0, 2000.0, 20.0, 4.0, 0.8]  # outward by the three's spacing
    assert found.extended == [20.0, 4.0, 0.8] and found.interpolated is None  # the edge
    assert search({"lam": grid}, lambda v: -abs(v["lam"] - 300)).interpolated is None  # closed


def test_a_best_at_the_grid_edge_looks_past_it_or_says_so(tmp_path, tiny_csv):
    from lightrec.training.tune import search

    past = search({"lam": [10.0, 20.0, 40.0]}, lambda v: -abs(v["lam"] - 100.0), {"lam"})
    assert past.extended == [80.0, 160.0]  # 80 improves, 160 does not: the search stops
    assert search({"lam": [10.0, 20.0, 40.0]}, lambda v: v["lam"]).extended == []  # not open
    argv = ["train", "rp3beta", *cpu_overrides(tmp_path, tiny_csv), "model.alpha=0.5"]
    argv.append("tune.beta=[0.0,0.001]")  # a popularity penalty this small is the best
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (metrics,) = (tmp_path / "saved").rglob("metrics.json")
    record = json.loads(metrics.read_text())["tuned"]
    assert record["at_grid_edge"] == ["beta"] and "at the grid's edge (beta)" in p.stdout


def test_a_knob_the_command_line_gives_is_not_tuned(tmp_path, tiny_csv):
    argv = ["train", "rp3beta", *cpu_overrides(tmp_path, tiny_csv), "model.alpha=0.5"]
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "tuned rp3beta on validation: beta=" in p.stdout  # alpha was given
    (metrics,) = (tmp_path / "saved").rglob("metrics.json")
    record = json.loads(metrics.read_text())
    assert set(record["tuned"]["chosen"]) == {"beta"} and len(record["tuned"]["tried"]) == 3
    saved = (metrics.parent / "config.yaml").read_text()
    assert "alpha: 0.5" in saved and "tune:\n  beta:" in saved  # what it tuned, and not


@pytest.mark.parametrize(
    "config, override, message",
    [
        ("multi_vae_v2", "tune={dropout: [0.1]}", "tune is for closed-form models"),
        ("ease", "++tune.nothing=[1]", "tune.nothing: EASE has no knob 'nothing'"),
        ("ease", "tune.lam=[-5.0]", "tune.lam=-5.0 must be"),
        ("ease", "tune.lam=[]", "tune.lam must be a list of values"),
    ],
)
def test_a_bad_tuning_grid_is_one_sentence(config, override, message):
    with pytest.raises(LightrecError, match=message):
        check_config(compose_cfg(config, [override]))


def test_a_bag_scores_with_the_mean_of_its_runs_z_scores():
    scores = [torch.tensor([[3.0, 1.0, 2.0, 0.0]]), torch.tensor([[0.0, 2.0, 4.0, 1.0]])]
    seen = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    bagged = members.mean_z([lambda rows, s=s: (s, seen) for s in scores])
    got, got_seen = bagged([0])
    want = (normalise(scores[0], seen, "zscore") + normalise(scores[1], seen, "zscore")) / 2
    assert torch.equal(got_seen, seen) and torch.allclose(got, want)
    assert torch.isinf(got[0, 3])  # a seen item stays out


def test_best_trains_a_bagged_member_on_its_seeds_and_combines_it_as_one(tmp_path):
    csv = tmp_path / "log.csv"
    make_log(n_users=40).to_csv(csv, index=False)
    argv = [
        "best",
        *cpu_overrides(tmp_path, csv),
        "trainer.max_epochs=2",
        "best.members=[ease,multi_vae_v2]",
        "best.bags={multi_vae_v2: 3}",
        "seed=7",
    ]
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    written = tmp_path / p.stdout.strip().splitlines()[-1]
    record = json.loads(written.parent.joinpath("blend.json").read_text())
    ease, bag = record["runs"]
    assert isinstance(ease, str) and isinstance(bag, list) and len(bag) == 3
    seeds = [yaml.safe_load(open(f"{r}/config.yaml"))["seed"] for r in bag]
    assert seeds == [7, 8, 9]
    assert len(record["weights"]) == 2  # the bag is one member of the blend


def test_a_bag_of_runs_of_two_configs_is_refused(tmp_path, tiny_csv):
    runs = []
    for config in ("ease", "item_knn"):
        run_dir = tmp_path / config
        train.fit(compose_cfg(config, [*cpu_overrides(tmp_path, tiny_csv), "tune=null"], run_dir))
        runs.append(str(run_dir))
    with pytest.raises(LightrecError, match="a bag holds runs of one config"):
        members.load_members([runs[0], runs])


def test_a_budget_trains_the_closed_forms_first_and_limits_the_rest(monkeypatch):
    """Issue 39: best.budget orders the trainings (closed forms first), gives a gradient
    member what is left (less the combining's share) as trainer.max_time, halved when it
    refits (the limit bounds its selection and its refit each), keeping a tighter limit of
    its own, and skips a member when nothing is left."""
    from lightrec.combine import best
    from lightrec.jobs import Command

    clock = [0.0]
    monkeypatch.setattr(best.time, "perf_counter", lambda: clock[0])
    commands = [
        Command("train", "multi_vae_v2", ["trainer.max_time=00:00:02:00"]),
        Command("train", "ease", []),
        Command("train", "recvae", []),
    ]
    budget = best.Budget("00:00:10:00")  # 600 s, 510 s for the members
    assert budget.order(commands) == [1, 0, 2]
    assert budget.within(commands[1]) is commands[1]  # a closed form is never limited
    clock[0] = 30.0
    limited = budget.within(commands[0])
    assert limited is not None and limited.overrides == ["trainer.max_time=00:00:02:00"]
    clock[0] = 200.0
    limited = budget.within(commands[2])
    assert limited is not None and limited.overrides == ["trainer.max_time=00:00:02:35"]
    unrefit = dataclasses.replace(commands[2], overrides=["refit=false"])
    limited = budget.within(unrefit)  # one training: all that is left
    assert limited is not None and limited.overrides[-1] == "trainer.max_time=00:00:05:10"
    clock[0] = 495.0  # 15 s left: under a refitting member's minimum, twice 10 s
    assert budget.within(commands[2]) is None and budget.within(unrefit) is not None
    clock[0] = 505.0  # 5 s left: under a member's minimum
    assert budget.within(commands[2]) is None
    assert best.Budget(None).order(commands) == [0, 1, 2]
    assert best.Budget(None).within(commands[2]) is commands[2]


def test_best_with_a_budget_records_each_members_time_and_value(tmp_path):
    csv = tmp_path / "log.csv"
    make_log(n_users=40).to_csv(csv, index=False)
    argv = [
        "best",
        *cpu_overrides(tmp_path, csv),
        "trainer.max_epochs=2",
        "best.members=[multi_vae_v2,ease]",
        "best.budget=00:00:10:00",
    ]
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    written = tmp_path / p.stdout.strip().splitlines()[-1]
    record = json.loads(written.parent.joinpath("blend.json").read_text())
    vae = yaml.safe_load(open(f"{record['runs'][0]}/config.yaml"))
    assert vae["trainer"]["max_time"] is not None  # within what the budget left
    rows = record["member_value"]
    assert [r["member"] for r in rows] == ["multi_vae_v2", "ease"]
    assert all(r["seconds"] > 0 for r in rows)
    assert "members (validation ndcg@10):" in p.stdout
