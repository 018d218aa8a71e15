"""Trust, round four (issue 40): values that must be finite, a recipe's plan checked before
anything trains, run folders read as data."""

from __future__ import annotations

import pytest

from helpers import compose_cfg, cpu_overrides
from lightrec.combine import best
from lightrec.config.check import check_config
from lightrec.errors import LightrecError


@pytest.mark.parametrize(
    "config, override, message",
    [
        ("ease", "model.lam=inf", "model.lam=inf must be a finite number greater than 0"),
        ("ease", "tune.lam=[100.0,inf]", "tune.lam=inf must be a finite number"),
        ("multi_vae_v2", "model.dropout=nan", "model.dropout=nan must be a finite number"),
        ("multi_vae_v2", "model.lr=-inf", "model.lr=-inf must be a finite number"),
    ],
)
def test_non_finite_values_are_refused(config, override, message):
    """40.13: NaN passes every comparison and inf every lower bound; a value must be finite."""
    with pytest.raises(LightrecError, match=message.replace("[", r"\[")):
        check_config(compose_cfg(config, [override]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("best.bags={ease: 0}", "best.bags={'ease': 0} must be a mapping of strings to integers"),
        ("best.bags={ease: -1}", "best.bags={'ease': -1} must be"),
        ("best.bags={ease: x}", "best.bags={'ease': 'x'} must be"),
        ("best.bags={ease: 1.5}", "best.bags={'ease': 1.5} must be"),
        ("best.bags={typo: 3}", "best.bags.typo: typo is not one of best.members"),
        ('+best.overrides.typo=["seed=1"]', "best.overrides.typo: typo names no config"),
        ("+best.overrides.ease=3", "best.overrides=.* must be a mapping of strings to lists"),
        ("best.budget=10min", "best.budget='10min' must be"),
    ],
)
def test_a_bad_plan_is_refused_before_anything_trains(tmp_path, tiny_csv, override, message):
    """40.11: a bag's seed count, a member's overrides and the budget are checked against
    their annotations, and the members they name against best.members, before training."""
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "best.members=[ease,item_knn]", override]
    with pytest.raises(LightrecError, match=message.replace("[", r"\[").replace("{", r"\{")):
        best.run(overrides)
    assert not list(tmp_path.rglob("metrics.json"))  # nothing trained


@pytest.fixture(scope="module")
def ease_run(tmp_path_factory):
    from helpers import make_log
    from lightrec.training import fit as train

    tmp = tmp_path_factory.mktemp("round4")
    csv = tmp / "log.csv"
    make_log().to_csv(csv, index=False)
    run_dir = tmp / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", [*cpu_overrides(tmp, csv), "tune=null"], run_dir))
    return run_dir


def _copy(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("metrics.json", '{"data": 1}', "metrics.json: data is not a mapping"),
        ("metrics.json", "[]", "metrics.json is not a mapping"),
        ("id_maps.json", '{"item_ids": "abc", "user_ids": []}', "item_ids is not a list of ids"),
        ("id_maps.json", '{"item_ids": [1, 1], "user_ids": []}', "item_ids repeats an id"),
        ("id_maps.json", "[]", "id_maps.json is not a mapping"),
    ],
)
def test_malformed_run_files_are_one_sentence_naming_the_file(
    ease_run, tmp_path, file, content, message
):
    """40.7: a run file of the wrong shape is refused when the run is opened, naming it."""
    from lightrec.runs.finished import FinishedRun

    copy = _copy(ease_run, tmp_path)
    (copy / file).write_text(content)
    with pytest.raises(LightrecError, match=message):
        FinishedRun.open(copy)


def test_an_item_map_shorter_than_the_model_is_refused(ease_run, tmp_path):
    import json

    import lightrec

    copy = _copy(ease_run, tmp_path)
    maps = json.loads((copy / "id_maps.json").read_text())
    maps["item_ids"] = maps["item_ids"][:-5]
    (copy / "id_maps.json").write_text(json.dumps(maps))
    with pytest.raises(LightrecError, match="id_maps.json lists 25 items"):
        lightrec.load_run(copy).recommend(users=[maps["user_ids"][0]], k=3)


def test_settings_that_lie_about_the_weights_are_refused_before_building(
    ease_run, tmp_path, monkeypatch
):
    """40.8: a checkpoint whose settings claim 20M items beside 30 x 30 weights is refused
    from shapes alone (the meta device), before any real model is built."""
    import json

    import torch

    from lightrec.runs import finished

    def never(*args, **kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(finished, "_with_weights", never)
    for claim, ids, message in [
        (20_000_000, None, "settings are for num_items=20000000, id_maps.json lists 30"),
        (1_000, list(range(1_000)), r"its weight B is \(30, 30\), not 1000 x 1000"),
    ]:
        copy = _copy(ease_run, tmp_path / str(claim))
        for ckpt in (copy / "checkpoints").glob("*.ckpt"):
            state = torch.load(ckpt, weights_only=True)
            state["hyper_parameters"]["num_items"] = claim
            torch.save(state, ckpt)
        if ids is not None:  # an item map that agrees with the lie
            maps = json.loads((copy / "id_maps.json").read_text())
            (copy / "id_maps.json").write_text(json.dumps({**maps, "item_ids": ids}))
        run = finished.FinishedRun.open(copy)
        with pytest.raises(LightrecError, match=message):
            run.model()


def test_a_bag_is_distinct_runs_that_differ_only_in_seed(tmp_path, tiny_csv):
    """40.10: the same run twice, or runs that differ in more than their seed, are no bag."""
    from lightrec.combine import members
    from lightrec.training import fit as train

    runs = []
    for name, extra in [("a", "seed=1"), ("b", "seed=2"), ("c", "model.dropout=0.1")]:
        run_dir = tmp_path / name
        overrides = [*cpu_overrides(tmp_path, tiny_csv), "trainer.max_epochs=1", extra]
        train.fit(compose_cfg("multi_vae_v2", overrides, run_dir))
        runs.append(str(run_dir))
    members.Bag([members.FinishedRun.open(r) for r in runs[:2]])  # a bag
    with pytest.raises(LightrecError, match="is in it twice"):
        members.load_members([runs[0], [runs[0], runs[0]]])
    with pytest.raises(LightrecError, match="differ only in seed: .* differ in model"):
        members.load_members([runs[0], [runs[1], runs[2]]])


def test_a_bag_on_the_command_line_never_swallows_the_runs_after_it():
    import argparse

    from lightrec.combine.members import add_run_arguments

    ap = argparse.ArgumentParser()
    add_run_arguments(ap, "paths.blends", "choose on")
    a = ap.parse_intermixed_args(["A", "--bag", "B,C", "D", "--bag", "E,F"])
    assert a.runs == ["A", "D"] and a.bag == [["B", "C"], ["E", "F"]]
    with pytest.raises(SystemExit):
        ap.parse_intermixed_args(["A", "--bag", "B"])  # a bag of one run


def test_the_umask_is_read_without_setting_it(monkeypatch):
    """A smaller point of issue 40: reading the umask by flipping it raced with other
    threads' file creation; it is read from /proc/self/status."""
    import os

    from lightrec.utils import io

    calls = []
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or 0o022)
    assert io._umask() == io._UMASK_AT_IMPORT and not calls


def test_search_liveness_tells_apart_machines_that_share_a_host_name():
    """A smaller point of issue 40: a trial's worker is looked up only on its own machine and
    pid namespace; a container with the same host name (another pid space) is left alone."""
    import socket

    import optuna

    from lightrec.search import workers

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    dead_pid = 2**22 + 12345  # past the usual pid_max: no such process
    twin = study.ask()  # another container's worker: the same host name, another namespace
    twin.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead_pid})
    mine = study.ask()
    mine.set_user_attr("worker", {"host": workers.machine(), "pid": dead_pid})
    workers.fail_dead_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[twin.number] == optuna.trial.TrialState.RUNNING
    assert states[mine.number] == optuna.trial.TrialState.FAIL


def test_a_search_folder_cannot_point_a_resume_at_another_database(tmp_path, tiny_csv):
    """A smaller point of issue 40: search.yaml is read as untrusted; a storage it names
    other than the folder's own journal is used only when the user names it."""
    import yaml

    from helpers import run_here

    folder = tmp_path / "shared-search"
    folder.mkdir()
    record = {"config": "ease", "hparams_search": "ease", "storage": "sqlite:////tmp/x.db"}
    (folder / "search.yaml").write_text(yaml.safe_dump(record))
    argv = ["train", "ease", "-m", "hparams_search=ease", f"resume={folder}"]
    p = run_here([*argv, *cpu_overrides(tmp_path, tiny_csv)], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "names the storage 'sqlite:////tmp/x.db'" in p.stderr
    assert "give search.storage=" in p.stderr


def test_admm_slim_without_the_sign_constraint_stays_within_its_counted_matrices():
    """A smaller point of issue 40: positive=false soft-thresholded the whole matrix into a
    new one (an eighth n x n beside the seven counted); it now shrinks row blocks in place,
    to the same values."""
    import torch

    from lightrec.models import admm_slim

    g = torch.rand(30, 30, dtype=torch.float64)
    gram = g @ g.T
    want, _ = admm_slim.admm_slim_weights(gram.clone(), 0.5, 10.0, 5.0, 20, positive=False)
    real = torch.nn.functional.softshrink
    sizes = []

    def watched(x, t):
        sizes.append(x.shape[0])
        return real(x, t)

    old_rows = admm_slim.SHRINK_ROWS
    admm_slim.SHRINK_ROWS = 7  # several blocks, one shorter
    torch.nn.functional.softshrink = watched
    try:
        got, _ = admm_slim.admm_slim_weights(gram.clone(), 0.5, 10.0, 5.0, 20, positive=False)
    finally:
        admm_slim.SHRINK_ROWS = old_rows
        torch.nn.functional.softshrink = real
    assert max(sizes) <= 7  # never a whole n x n temporary
    assert torch.equal(got, want)  # the same values


def test_scores_holding_nan_are_refused_never_written(ease_run, tmp_path):
    """40.13: a model whose weights are not finite (edited, or trained before values had to
    be finite) is refused in one sentence by predict; no submission is written."""
    import torch

    from helpers import run_here

    copy = _copy(ease_run, tmp_path)
    for ckpt in (copy / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["state_dict"]["B"][:, 3] = float("nan")
        torch.save(state, ckpt)
    (copy / "submission.csv").unlink(missing_ok=True)
    p = run_here(["predict", "ease", f"run_dir={copy}"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hold NaN" in errors[0]
    assert not (copy / "submission.csv").exists()
