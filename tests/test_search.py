"""Searches (`python -m lightrec train CONFIG -m hparams_search=<file>`, lightrec.search) end to
end on tiny data: persistent by default, resumed after a kill, shared by workers, pruned, and
judged on validation only, never a test metric."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from helpers import CONFIG_DIR, compose_cfg, logging_restored, run_here
from lightrec import cli
from lightrec.errors import LightrecError
from lightrec.search import workers
from lightrec.search.study import open_study, place, space, suggest

SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
MODEL_OF = {"multi_vae": "multi_vae_v2", "bert4rec": "bert4rec_v2"}
PARAMS = {
    "data.batch_size",
    "model.hidden_dims",
    "model.dropout",
    "model.kl_cap",
    "model.anneal_steps",
    "model.lr",
}


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_file_composes_with_its_model(search):
    cfg = compose_cfg(MODEL_OF.get(search, search), [f"hparams_search={search}"])
    assert cfg.refit is False  # trials are judged on validation; no refit to pay for
    assert cfg.checkpoint.mode == "max"  # the search maximises
    assert cfg.search.study_name == search
    assert set(space(cfg.search.params)) == set(cfg.search.params)  # every range parses


def test_the_search_grammar_and_its_refusals():
    s = space({"a": "int(tag(log, interval(10, 1000)))", "b": "range(1, 4)", "c": "interval(0, 1)"})
    assert (s["a"].low, s["a"].high, s["a"].log) == (10, 1000, True)
    assert list(s["b"].choices) == [1, 2, 3]
    assert (s["c"].low, s["c"].high, s["c"].log) == (0.0, 1.0, False)
    with pytest.raises(LightrecError, match=r"search.params.a=5 is one value"):
        space({"a": "5"})
    with pytest.raises(LightrecError, match=r"search.params.a=choice\(1, cannot be parsed"):
        space({"a": "choice(1,"})
    with pytest.raises(LightrecError, match="a choice is a number or text"):
        space({"a": "choice([1, 2], [3])"})


def _search(tmp_path: Path, tiny_csv: Path, *extra: str, log_root: Path | None = None) -> list:
    return [
        sys.executable,
        "-m",
        "lightrec",
        "train",
        "multi_vae_v2",
        "-m",
        "hparams_search=multi_vae",
        f"data.path={tiny_csv}",
        "data.holdout=valid_and_test",
        "data.min_interactions=3",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        f"paths.log_root={log_root or tmp_path / 'saved'}",
        "trainer.accelerator=cpu",
        "progress=none",
        *extra,
    ]


def _study(journal: Path, name: str = "multi_vae") -> optuna.Study:
    lock = JournalFileOpenLock(str(journal))
    storage = JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))
    return optuna.load_study(study_name=name, storage=storage)


def _finished(study: optuna.Study) -> dict[int, dict]:
    """The params of each finished trial by its number."""
    return {t.number: t.params for t in study.get_trials(states=(TrialState.COMPLETE,))}


def _drawn_alone(seed: int, params: dict) -> dict:
    """What a start-up trial draws with ``seed`` and nothing else in its study."""
    alone = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    return suggest(alone.ask(), space(params))


def test_a_search_persists_and_selects_on_validation(tmp_path, tiny_csv):
    extra = ["search.n_trials=2", "search.seeds_per_trial=2", "search.confirm_seeds=1"]
    p = run_here(_search(tmp_path, tiny_csv, *extra, "trainer.max_epochs=2")[3:], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (best_file,) = (tmp_path / "saved").rglob("best.yaml")
    folder = best_file.parent
    best = yaml.safe_load(best_file.read_text())
    study = _study(folder / "study.journal")  # persisted, readable by Optuna itself
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    val = {}
    for t in study.trials:  # each trial: the mean over its seeds 42 and 43
        runs = [
            json.loads(
                (folder / f"trial_{t.number:03d}" / f"seed_{s}" / "metrics.json").read_text()
            )
            for s in (42, 43)
        ]
        assert all("refit" not in r and "test" in r for r in runs)
        values = [r["val"]["ndcg@10"] for r in runs]
        assert t.user_attrs["seed_values"] == pytest.approx(values)
        val[t.number] = t.value
        assert t.value == pytest.approx(sum(values) / 2)
    assert best["best_value"] == round(max(val.values()), 6)  # validation, not test (recorded
    # to 6 decimals: a relative tolerance of 1e-6 can be narrower than that rounding)
    assert best["best_trial"] == max(val, key=val.get)
    assert set(best["best_params"]) == PARAMS
    # the winner measured again on a seed no trial used (the trials': 42 and 43)
    assert best["confirmed"]["seeds"] == [44]
    confirm = folder / f"confirm_trial_{best['best_trial']}" / "seed_44" / "metrics.json"
    assert best["confirmed"]["values"] == [json.loads(confirm.read_text())["val"]["ndcg@10"]]
    assert "model.lr=" in best["train_command"] and "hparams_search" not in best["train_command"]


def test_a_killed_search_resumes_with_its_finished_trials_kept(tmp_path, tiny_csv):
    slow = [
        "search.n_trials=5",
        "search.confirm_seeds=0",
        "search.pruner=none",
        "trainer.max_epochs=40",
        "early_stopping.patience=100",
    ]
    # every trial here is a random start-up trial (8), so its seed alone (search.seed 1 +
    # its number) decides its values
    cfg = compose_cfg("multi_vae_v2", ["hparams_search=multi_vae"])
    assert cfg.search.n_startup_trials >= 6 and cfg.search.seed == 1
    drawn = {n: _drawn_alone(1 + n, cfg.search.params) for n in range(6)}

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    errors = tmp_path / "search.err"  # a file, never a pipe nobody drains
    with open(errors, "w") as err:
        proc = subprocess.Popen(
            _search(tmp_path, tiny_csv, *slow),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    saved = tmp_path / "saved"
    deadline = time.monotonic() + 300
    while not list(saved.rglob("trial_002/config.yaml")) and time.monotonic() < deadline:
        assert proc.poll() is None, errors.read_text()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the trial is left "running"
    proc.wait()
    (journal,) = saved.rglob("study.journal")
    states = [t.state for t in _study(journal).trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    kept = {
        n: (journal.parent / f"trial_{n:03d}" / "metrics.json").stat().st_mtime_ns for n in (0, 1)
    }

    p = run_here(_search(tmp_path, tiny_csv, *slow, "resume=true")[3:], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "trial 2 was interrupted" in p.stdout
    study = _study(journal)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    for n, mtime in kept.items():  # not rerun
        assert (journal.parent / f"trial_{n:03d}" / "metrics.json").stat().st_mtime_ns == mtime
    # the killed trial's values are tried again by the next trial; later trials draw with
    # the seed of their own number
    assert _finished(study) == {0: drawn[0], 1: drawn[1], 3: drawn[2], 4: drawn[4], 5: drawn[5]}
    assert study.trials[3].user_attrs["retry_of"] == 2
    assert (journal.parent / "best.yaml").is_file()


def test_two_workers_on_one_study_run_distinct_trials(tmp_path, tiny_csv):
    # the launcher in this process; its two workers are processes of their own
    p = run_here(
        _search(
            tmp_path,
            tiny_csv,
            "search.n_trials=4",
            "search.workers=2",
            "search.confirm_seeds=0",
            "trainer.max_epochs=150",  # trials long enough that the later starter gets some
            "early_stopping.patience=1000",
        )[3:],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (journal,) = (tmp_path / "saved").rglob("study.journal")
    trials = _study(journal).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    joined = {v["pid"] for k, v in _study(journal).user_attrs.items() if k.startswith("worker ")}
    assert len(joined) == 2  # both workers joined the study (who ran what is up to timing)
    assert {t.user_attrs["worker"]["pid"] for t in trials} <= joined
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    for t in trials:
        assert (journal.parent / f"trial_{t.number:03d}" / "metrics.json").is_file()
    assert (journal.parent / "best.yaml").is_file()  # written once, by the launcher


def test_a_second_machine_joins_a_shared_storage(tmp_path, tiny_csv):
    shared = tmp_path / "shared.journal"
    common = [
        "search.n_trials=4",
        f"search.storage={shared}",
        "search.confirm_seeds=0",
        "trainer.max_epochs=200",
        "early_stopping.patience=1000",
    ]
    output = tmp_path / "first.out"  # a file, never a pipe nobody drains
    with open(output, "w") as out:
        first = subprocess.Popen(
            _search(tmp_path, tiny_csv, *common, log_root=tmp_path / "a"),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not shared.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_here(  # the second machine: this process
        _search(tmp_path, tiny_csv, *common, "resume=true", log_root=tmp_path / "b")[3:], tmp_path
    )
    first.wait(timeout=600)
    assert first.returncode == 0, output.read_text()[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    trials = _study(shared).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len({t.number for t in done}) == 4
    folders = {Path(t.user_attrs["run_dir"]).parts[len(tmp_path.parts)] for t in done}
    assert folders == {"a", "b"}  # each machine trained some, in its own folder


def test_a_hopeless_trial_is_pruned_before_its_last_epoch(tmp_path, tiny_csv):
    shared = tmp_path / "study.journal"
    storage = JournalStorage(
        JournalFileBackend(str(shared), lock_obj=JournalFileOpenLock(str(shared)))
    )
    study = optuna.create_study(study_name="multi_vae", storage=storage, direction="maximize")
    good = {
        "data.batch_size": 32,
        "model.hidden_dims": "[600,200]",
        "model.dropout": 0.2,
        "model.kl_cap": 0.02,
        "model.anneal_steps": 500,
        "model.lr": 0.01,
    }
    study.enqueue_trial(good)
    study.enqueue_trial({**good, "model.lr": 1e-9})  # an Optuna user's enqueued trial
    p = run_here(
        _search(
            tmp_path,
            tiny_csv,
            "search.n_trials=2",
            f"search.storage={shared}",
            "search.confirm_seeds=0",
            "search.prune_startup_trials=1",
            "search.prune_warmup_epochs=5",
            "trainer.max_epochs=40",
            "early_stopping.patience=100",
            "resume=true",
        )[3:],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    first, hopeless = _study(shared).trials
    assert (first.state, hopeless.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert "trial 1 pruned at epoch" in p.stdout
    run = json.loads((Path(hopeless.user_attrs["run_dir"]) / "metrics.json").read_text())
    assert 5 <= run["epochs_trained"] < 40  # stopped early, after the warm-up
    assert max(hopeless.intermediate_values) == run["epochs_trained"] - 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["search.storage=nosuchdb://x/y"], "search.storage=nosuchdb://x/y cannot be opened"),
        (["search.storage=/no/such/folder/s.journal"], "the folder /no/such/folder is missing"),
        (["resume=true"], "resume=true: no search of 'multi_vae_v2' with hparams_search="),
        (["model.lr=0.1,0.2"], "a search draws its values from search.params"),
        (["search.pruner=often"], "search.pruner"),
        (["search.n_trials=0"], "search.n_trials"),
    ],
)
def test_bad_search_input_is_one_sentence(tmp_path, tiny_csv, capsys, extra, message):
    args = _search(tmp_path, tiny_csv, *extra)[3:]  # the command line after python -m lightrec
    assert cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not list((tmp_path / "saved").rglob("trial_*"))  # nothing trained


def test_a_study_of_another_search_is_refused(tmp_path, tiny_csv, capsys):
    shared = tmp_path / "s.journal"
    args = [f"search.storage={shared}", "search.n_trials=1", "search.confirm_seeds=0",
            "trainer.max_epochs=1"]  # fmt: skip
    with logging_restored():  # in-process: no interpreter start-up
        assert cli.main(_search(tmp_path, tiny_csv, *args)[3:]) == 0
    capsys.readouterr()
    other = _search(tmp_path, tiny_csv, *args, "resume=true")[3:]
    other[other.index("multi_vae_v2")] = "multi_vae_v3"  # the same study name, another model
    assert cli.main(other) == 2
    assert "belongs to another search (its model_name differs)" in capsys.readouterr().err
    assert cli.main(_search(tmp_path, tiny_csv, *args)[3:]) == 2  # no resume: not mixed in
    assert "already has 1 trials: continue it" in capsys.readouterr().err


def test_sigterm_fails_the_running_trial_and_prints_how_to_continue(tmp_path, tiny_csv):
    errors = tmp_path / "search.err"  # a file, never a pipe nobody drains
    with open(errors, "w") as err_file:
        proc = subprocess.Popen(
            _search(
                tmp_path,
                tiny_csv,
                "search.n_trials=3",
                "trainer.max_epochs=300",
                "early_stopping.patience=1000",
            ),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("trial_000/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, errors.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = errors.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted (SIGTERM): the search is unfinished; continue it with:" in err
    (journal,) = tmp_path.rglob("study.journal")
    assert f"resume={journal.parent}" in err
    assert [t.state for t in _study(journal).trials] == [TrialState.FAIL]  # not left running


def test_two_workers_and_a_failing_trial_never_share_a_draw(tmp_path):
    """Forced interleaving on one journal: worker A asks trial 0, B asks trial 1, trial 0
    fails, A asks trial 2. Trial 2 once took trial 1's place (the failed trial gave it up),
    and so its seed and its draw; now each trial draws with search.seed + its number, which
    the storage hands out atomically."""
    cfg = compose_cfg("multi_vae_v2", ["hparams_search=multi_vae"])
    distributions = space(cfg.search.params)
    journal = str(tmp_path / "study.journal")
    # two processes' views of one study, opened as the search opens them
    a, b = (open_study(cfg, journal, distributions, resume=i > 0) for i in range(2))
    a0 = a.ask()
    b1 = b.ask()
    drawn = {1: suggest(b1, distributions)}
    a.tell(a0, state=TrialState.FAIL)
    a2 = a.ask()
    drawn[2] = suggest(a2, distributions)
    assert (a0.number, b1.number, a2.number) == (0, 1, 2)
    assert drawn[1] != drawn[2]
    assert drawn == {n: _drawn_alone(1 + n, cfg.search.params) for n in (1, 2)}


def test_a_reused_pid_is_not_a_live_worker():
    """A worker is its pid and its process's start time: another process that later got
    the same pid does not keep a dead worker's trial running."""
    me = workers.me()
    assert workers.alive(me)
    assert not workers.alive({**me, "started": me["started"] - 3600})  # the pid, reused
    assert not workers.alive({**me, "pid": 2**22 + 12345})  # no such process


def test_a_worker_that_asks_after_the_last_place_was_taken_runs_nothing(tmp_path):
    """The count is read after ``ask()``, from the trials numbered before one's own: of two
    workers asking at once for the last place, the later-numbered one gets none."""
    cfg = compose_cfg("multi_vae_v2", ["hparams_search=multi_vae", "search.n_trials=1"])
    distributions = space(cfg.search.params)
    journal = str(tmp_path / "study.journal")
    a, b = (open_study(cfg, journal, distributions, resume=i > 0) for i in range(2))
    first, second = a.ask(), b.ask()  # both passed a check made before asking
    assert place(a, first) == 0 < cfg.search.n_trials
    assert place(b, second) == 1 >= cfg.search.n_trials  # told failed, marked surplus
