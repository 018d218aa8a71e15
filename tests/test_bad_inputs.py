"""The bad-input catalogue: every wrong input is refused before any work, in one sentence
that names the file, key or row, with nothing half-written; awkward but valid inputs work;
runs started together do not break each other.

Most cases call the functions the entry points call (fast); a few run the entry points as
a user does, to show the sentence, the exit code and the absence of a traceback."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from omegaconf import OmegaConf

from helpers import ROOT, compose_cfg, cpu_overrides, dm_for, make_log, run_here
from lightrec import cli
from lightrec.config.check import check_config
from lightrec.errors import LightrecError
from lightrec.runs import finished
from lightrec.serving import predict
from lightrec.training import fit as train
from lightrec.utils.path_utils import RunDir

TRAIN = ["train", "multi_vae_v2"]  # what train_multi_vae.py runs, in this process
EASE_TRAIN = [sys.executable, str(ROOT / "train_ease.py")]
EASE_PREDICT = [sys.executable, str(ROOT / "predict_ease.py")]


def one_sentence(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text, text
    for f in fragments:
        assert f in text, text


def refused(proc, *fragments: str) -> None:
    """A user's view: non-zero exit, one `error:` line naming what is wrong, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], errors[0]


def nothing_written(root) -> None:
    names = {p.name for p in root.rglob("*") if p.is_file()}
    assert not names & {"metrics.json", "submission.csv", "config.yaml", "best.ckpt"}, names
    assert not [p for p in root.rglob("*.tmp")]


# ---------------------------------------------------------------- data files


def write(tmp_path, content: bytes | str | None, name="log.csv"):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    return path


DATA_CASES = {
    "missing": (None, {}, "does not exist"),
    "empty": ("", {}, "is empty"),
    "header only": ("user,item,time\n", {}, "has a header but no rows"),
    "binary": (
        bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
        {},
        "is not a readable CSV",
    ),
    "wrong delimiter": ("user;item;time\n1;2;3\n", {}, "separated by ';'"),
    "missing column": ("user,product,time\n1,2,3\n", {}, "has no column 'item'"),
    "bad date": ("user,item,time\n1,a,2024-01-02\n1,b,yesterday-ish\n", {}, "row 3"),
    "no id anywhere": ("user,item,time\n,a,1\n2,,2\n", {}, "has no row with both"),
    "everything filtered out": (
        "user,item,time\n1,a,1\n1,b,2\n2,c,3\n",
        {"min_interactions": 100},
        "data.min_interactions=100",
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_files(tmp_path, case):
    content, kw, fragment = DATA_CASES[case]
    csv = write(tmp_path, content)
    with pytest.raises(LightrecError) as e:
        dm_for(csv, tmp_path, **kw)
    one_sentence(e.value, fragment)
    if case != "everything filtered out":
        assert str(csv) in str(e.value)


def test_a_directory_as_the_data_file(tmp_path):
    with pytest.raises(LightrecError) as e:
        dm_for(tmp_path, tmp_path)
    one_sentence(e.value, "is a directory", str(tmp_path))


# ---------------------------------------------------------------- configuration values

CONFIG_CASES = {
    "type": ("model.dropout=abc", "model.dropout='abc' must be a finite number"),
    "range": ("model.dropout=1.5", "model.dropout=1.5 must be a finite number in [0, 1)"),
    "negative epochs": ("trainer.max_epochs=-5", "trainer.max_epochs=-5 must be an integer"),
    "top_k 0": ("predict.top_k=0", "predict.top_k=0 must be an integer at least 1"),
    "monitor not computed": ("checkpoint.monitor=val/ndcg@50", "checkpoint.monitor='val/ndcg@50'"),
    "unknown model key": ("+model.foo=1", "unknown config key model.foo"),
    "unknown top-level key": ("+foo=1", "unknown config key 'foo'"),
    "unknown strategy": (
        "data.split_strategy=by_moon",
        "data.split_strategy='by_moon' must be one of",
    ),
    "min over max": ("trainer.min_epochs=400", "trainer.min_epochs=400 is more than"),
    "view the model does not read": (
        "data.view=sequence",
        "data.view='sequence' does not fit the model: MultiVAE reads the 'csr' view",
    ),
    "precision": ("trainer.precision=bogus", "trainer.precision='bogus' must be one of"),
    "seed": ("seed=-1", "seed=-1 must be an integer at least 0"),
    "list item": ("model.hidden_dims=[600,abc]", "model.hidden_dims=[600, 'abc'] must be a list"),
    "unknown trainer key": ("+trainer.bogus=1", "unknown config key trainer.bogus"),
    "time budget": (
        "trainer.max_time=8min",
        "trainer.max_time='8min' must be a string of the form DD:HH:MM:SS",
    ),
    "no epoch validated": (
        "+trainer.check_val_every_n_epoch=5",  # max_epochs=3 in the test's overrides
        "trainer.max_epochs=3 is less than trainer.check_val_every_n_epoch=5",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values(case):
    override, fragment = CONFIG_CASES[case]
    with pytest.raises(LightrecError) as e:
        check_config(compose_cfg("multi_vae_v2", ["trainer.max_epochs=3", override]))
    one_sentence(e.value, fragment)


def test_short_sequences_are_refused_by_the_models_own_rule():
    with pytest.raises(LightrecError) as e:  # max_len: ${data.max_len}, at least 2
        check_config(compose_cfg("sasrec", ["data.max_len=1"]))
    one_sentence(e.value, "model.max_len=1 must be an integer at least 2")


def test_only_lightrec_classes_are_built_from_a_config():
    for target in ("subprocess.Popen", "lightrec.data.recsys_data.RecSysDataModule"):
        with pytest.raises(LightrecError) as e:
            check_config(compose_cfg("ease", [f"model._target_={target}"]))
        one_sentence(e.value, f"model._target_='{target}' is not a lightrec")


def test_a_sequence_model_told_to_read_rows_is_one_sentence(tmp_path, tiny_csv):
    """The model class declares its data view: `train_bert4rec.py data.view=csr` is refused
    before any work (it used to train, then die with KeyError: 'seq')."""
    argv = ["train", "bert4rec_v2", *tiny(tmp_path, tiny_csv), "trainer.min_epochs=1"]
    p = run_here([*argv, "data.view=csr"], tmp_path)
    refused(p, "data.view='csr' does not fit the model: BERT4Rec reads the 'sequence' view")
    assert not (tmp_path / "saved").exists() or not any((tmp_path / "saved").rglob("*"))


def test_every_shipped_config_passes_the_check():
    from helpers import CONFIGS

    for name in CONFIGS:
        check_config(compose_cfg(name, []))


def test_top_k_larger_than_the_catalogue(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", cpu_overrides(tmp_path, tiny_csv), run_dir))
    cfg = compose_cfg("ease", [*cpu_overrides(tmp_path, tiny_csv), "predict.top_k=31"])
    with pytest.raises(LightrecError) as e:
        predict.run(cfg)
    one_sentence(e.value, "predict.top_k=31 is more than the 30 items")
    assert not (run_dir / "submission.csv").exists()


@pytest.mark.parametrize("lr", [1e12])
def test_a_diverging_loss_stops_the_run_naming_step_and_cause(tmp_path, tiny_csv, lr):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        "multi_vae_v2",
        [*cpu_overrides(tmp_path, tiny_csv), f"model.lr={lr}", "trainer.max_epochs=20"],
        run_dir,
    )
    with pytest.raises(LightrecError) as e:
        train.fit(cfg)
    one_sentence(e.value, "training diverged: the loss became", "at step", "model.lr=")
    assert not (run_dir / "metrics.json").exists()


# ---------------------------------------------------------------- run folders


@pytest.fixture
def runs(tmp_path, tiny_csv):
    """A finished MultiVAE run and a finished EASE run."""
    out = {}
    for config in ("multi_vae_v2", "ease"):
        run_dir = tmp_path / "saved" / "hydra_logs" / config / "d" / "t"
        train.fit(compose_cfg(config, cpu_overrides(tmp_path, tiny_csv), run_dir))
        out[config] = RunDir(run_dir)
    return out


def predict_cfg(tmp_path, tiny_csv, *extra, config="multi_vae_v2"):
    return compose_cfg(config, [*cpu_overrides(tmp_path, tiny_csv), *extra])


def test_predict_with_no_finished_run(tmp_path, tiny_csv):
    with pytest.raises(LightrecError) as e:
        predict.run(predict_cfg(tmp_path, tiny_csv))
    one_sentence(e.value, "no finished training run of 'multi_vae_v2'")


def test_predict_an_unfinished_run(tmp_path, tiny_csv, runs):
    run = runs["multi_vae_v2"]
    run.metrics.unlink()
    with pytest.raises(LightrecError) as e:
        predict.run(predict_cfg(tmp_path, tiny_csv, f"run_dir={run.root}"))
    one_sentence(e.value, "is unfinished (no metrics.json)")
    assert not run.submission.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_predict_a_corrupt_checkpoint(tmp_path, tiny_csv, runs, damage):
    run = runs["multi_vae_v2"]
    blob = run.refit_ckpt.read_bytes()
    run.refit_ckpt.write_bytes(
        b"not a checkpoint" if damage == "garbage" else blob[: len(blob) // 2]
    )
    with pytest.raises(LightrecError) as e:
        predict.run(predict_cfg(tmp_path, tiny_csv))
    one_sentence(e.value, f"checkpoint {run.refit_ckpt} cannot be read", "corrupt or truncated")
    assert not run.submission.exists()


def test_predict_a_checkpoint_of_another_model(tmp_path, tiny_csv, runs):
    run = runs["multi_vae_v2"]
    run.refit_ckpt.write_bytes(runs["ease"].refit_ckpt.read_bytes())
    with pytest.raises(LightrecError) as e:
        predict.run(predict_cfg(tmp_path, tiny_csv))
    one_sentence(e.value, "does not hold the MultiVAE model")


def test_predict_a_run_of_another_config(tmp_path, tiny_csv, runs):
    with pytest.raises(LightrecError) as e:
        predict.run(predict_cfg(tmp_path, tiny_csv, f"run_dir={runs['ease'].root}"))
    one_sentence(e.value, "is a run of 'ease', not of 'multi_vae_v2'")


# ---------------------------------------------------------------- as a user runs them


def tiny(tmp_path, csv) -> list[str]:
    return [
        f"data.path={csv}",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        f"paths.log_root={tmp_path / 'saved'}",
        f"paths.predict_log_root={tmp_path / 'pl'}",
        "data.min_interactions=3",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
    ]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["model.dropout=1.5"], ["model.dropout=1.5"]),
        (["model.dropuot=0.1"], ["unknown config key model.dropuot"]),
        (["--config-name", "multi_vae_v9"], ["no config 'multi_vae_v9'"]),
        (["model.lr=(("], ["the override 'model.lr=((' cannot be parsed"]),
        (["resume=true"], ["no unfinished training run"]),
        (["--bogus"], ["unknown option '--bogus'"]),
        (["model.lr=0.01,0.1"], ["model.lr=0.01,0.1 sweeps several values: add -m"]),
        (["model_name=../../../outside"], ["model_name='../../../outside' must be a string made"]),
        # every sweep form the entry expands: a bad value anywhere refuses the whole sweep
        (["-m", "model.lr=0.01,-1"], ["model.lr=-1 must be a finite number greater than 0"]),
        (["-m", "model.dropout=choice(0.1,0.2,1.5)"], ["model.dropout=1.5 must be a finite"]),
        (["-m", "trainer.min_epochs=range(1,500,400)"], ["trainer.min_epochs=401 is more"]),
        (["-m", "model.lr=0.01,0.02", "seed=1,-1"], ["seed=-1 must be an integer at least 0"]),
    ],
)
def test_the_entry_refuses_before_making_anything(tmp_path, tiny_csv, capsys, extra, fragments):
    """Refused by the entry itself (in this process, as `python -m lightrec` runs it): exit
    code 2, one error line, and not a folder made under the log root."""
    assert cli.main(["train", "multi_vae_v2", *extra, *tiny(tmp_path, tiny_csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, err
    assert not (tmp_path / "saved").exists() or not any((tmp_path / "saved").iterdir())


def test_the_scripts_refuse_before_making_anything(tmp_path, tiny_csv):
    p = run_here([*TRAIN, "-m", "model.lr=0.01,-1", *tiny(tmp_path, tiny_csv)], tmp_path)
    refused(p, "model.lr=-1 must be a finite number greater than 0")
    assert not (tmp_path / "saved").exists() or not any((tmp_path / "saved").iterdir())


def test_a_bad_data_file_leaves_no_run_folder(tmp_path):
    csv = write(tmp_path, "user;item;time\n1;2;3\n")
    p = run_here([*TRAIN, *tiny(tmp_path, csv)], tmp_path)
    refused(p, str(csv), "separated by ';'")
    nothing_written(tmp_path)
    assert not list((tmp_path / "saved").rglob("*.log"))


def test_an_unwritable_output_folder(tmp_path, tiny_csv):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    p = run_here(
        [*TRAIN, *tiny(tmp_path, tiny_csv), f"paths.log_root={blocker / 'runs'}"], tmp_path
    )
    refused(p, f"paths.log_root={blocker / 'runs'} cannot be written")


def test_an_unwritable_cache_folder_is_a_warning_and_the_run_goes_on(tmp_path, tiny_csv):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot be written"):
        dm = dm_for(tiny_csv, tmp_path, use_cache=True, cache_dir=str(blocker / "cache"))
    assert dm.num_users == 40 and not dm.from_cache


def test_predict_refuses_a_corrupt_checkpoint_in_one_sentence(tmp_path, tiny_csv):
    p = run_here([*TRAIN, *tiny(tmp_path, tiny_csv)], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (ckpt,) = (tmp_path / "saved").rglob("refit.ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    p = run_here(["predict", "multi_vae_v2", *tiny(tmp_path, tiny_csv)], tmp_path)
    refused(p, str(ckpt), "corrupt or truncated")
    assert not list(tmp_path.rglob("submission.csv"))


def test_a_hostile_run_folder_runs_nothing(tmp_path, tiny_csv):
    """A run folder is untrusted input: a config.yaml whose model (predict) or data (blend)
    names another class than lightrec's is one sentence, and that class is never built."""
    from lightrec.combine import blend

    runs = []
    for name in ("a", "b"):
        cfg = compose_cfg("ease", cpu_overrides(tmp_path, tiny_csv), tmp_path / name)
        runs.append(train.fit(cfg).run)
    proof = tmp_path / "pwned"
    for key, run in (("model", runs[0]), ("data", runs[1])):
        saved = OmegaConf.load(run.config)
        saved[key] = {"_target_": "subprocess.Popen", "args": ["touch", str(proof)]}
        saved.data.update({"path": str(tiny_csv)} if key == "data" else {})
        OmegaConf.save(saved, run.config)
    with pytest.raises(LightrecError) as e:
        finished.load_model(runs[0].best_ckpt, finished.load_config(runs[0]))
    one_sentence(e.value, str(runs[0].root), "model._target_='subprocess.Popen' is not a lightrec")
    with pytest.raises(LightrecError) as e:
        blend.blend([str(runs[1].root), str(runs[1].root)], out=tmp_path / "s.csv")
    one_sentence(e.value, str(runs[1].root), "data._target_='subprocess.Popen' is not a lightrec")
    assert not proof.exists()


def test_a_finished_run_is_never_overwritten(tmp_path, tiny_csv):
    """A new training pointed at a finished run's folder (hydra.run.dir=<run>) is refused
    before it writes anything there; an unfinished one is pointed to resume."""
    cfg = compose_cfg("ease", cpu_overrides(tmp_path, tiny_csv), tmp_path / "run")
    run = train.fit(cfg).run
    before = {p: p.read_bytes() for p in (run.config, run.metrics, run.best_ckpt, run.refit_ckpt)}
    again = compose_cfg("ease", [*cpu_overrides(tmp_path, tiny_csv), "model.lam=5"], run.root)
    with pytest.raises(LightrecError) as e:
        train.fit(again)
    one_sentence(e.value, f"{run.root} already holds a finished training run")
    assert {p: p.read_bytes() for p in before} == before
    run.metrics.unlink()
    with pytest.raises(LightrecError) as e:
        train.fit(again)
    one_sentence(e.value, "an unfinished training run", f"resume={run.root}")


def test_blend_refuses_an_empty_list_and_a_folder_as_output(tmp_path, tiny_csv, capsys):
    from lightrec.combine import blend

    runs = [
        str(train.fit(compose_cfg(c, cpu_overrides(tmp_path, tiny_csv), tmp_path / c)).run.root)
        for c in ("ease", "pop")
    ]
    assert blend.main([*runs, "--top-k", "0", "--out", str(tmp_path / "s.csv")]) == 2
    assert "error: --top-k=0 must be at least 1" in capsys.readouterr().err
    assert blend.main([*runs, "--out", str(tmp_path)]) == 2
    assert f"error: --out {tmp_path} is a folder" in capsys.readouterr().err
    assert not list(tmp_path.rglob("submission.csv"))


def test_a_user_who_has_seen_everything_is_named_by_the_id():
    from lightrec.runs.scoring import check_enough_unseen

    history = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(LightrecError) as e:
        check_enough_unseen(history, 1, np.array([999, 7], dtype=np.int64))
    one_sentence(e.value, "user '999' has only 0 unseen items")


# ---------------------------------------------------------------- awkward but valid


def awkward_logs(tmp_path) -> dict:
    log = make_log(n_users=12, n_items=15)
    lines = ["user,item,time"] + [f"{u},{i},{t}" for u, i, t in log.itertuples(index=False)]
    crlf_bom = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    big = log.assign(user=log.user + 2**62, item=log.item + 2**40)
    iso = log.assign(time=pd.to_datetime(log.time, unit="D").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    quoted = log.assign(item=log.item.map(lambda i: f"film {i}, part {i % 2}"))
    missing = pd.concat([log, pd.DataFrame({"user": [None], "item": [3], "time": [5]})])
    out = {
        "bom and crlf": write(tmp_path, crlf_bom, "bom.csv"),
        "gzip": tmp_path / "log.csv.gz",
        "64-bit ids": tmp_path / "big.csv",
        "iso dates": tmp_path / "iso.csv",
        "quoted ids with commas": tmp_path / "quoted.csv",
        "a missing cell": tmp_path / "missing.csv",
    }
    with gzip.open(out["gzip"], "wt") as f:
        log.to_csv(f, index=False)
    big.to_csv(out["64-bit ids"], index=False)
    iso.to_csv(out["iso dates"], index=False)
    quoted.to_csv(out["quoted ids with commas"], index=False)
    missing.to_csv(out["a missing cell"], index=False)
    return out


@pytest.mark.parametrize(
    "case",
    ["bom and crlf", "gzip", "64-bit ids", "iso dates", "quoted ids with commas", "a missing cell"],
)
def test_awkward_but_valid_files_are_read(tmp_path, case):
    csv = awkward_logs(tmp_path)[case]
    dm = dm_for(csv, tmp_path, min_interactions=3)
    assert dm.num_users == 12 and dm.valid_csr.nnz == 12
    if case == "64-bit ids":
        assert dm.meta["user_ids"][0] == 2**62 and isinstance(dm.meta["item_ids"][0], int)
    if case == "quoted ids with commas":
        assert dm.meta["item_ids"][0].startswith("film ") and "," in dm.meta["item_ids"][0]
    if case == "a missing cell":
        assert dm.meta["stats"]["dropped_missing"] == 1


def test_an_awkward_file_trains_and_predicts_with_its_own_ids(tmp_path):
    csv = awkward_logs(tmp_path)["quoted ids with commas"]
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    cfg = compose_cfg("ease", [*cpu_overrides(tmp_path, csv), "predict.top_k=3"], run_dir)
    train.fit(cfg)
    sub = pd.read_csv(predict.run(cfg))
    assert sub.item.str.startswith("film ").all() and len(sub) == 12 * 3


# ---------------------------------------------------------------- runs started together


def test_three_cold_cache_trainings_and_three_predicts_at_once(tmp_path, tiny_csv):
    # three processes at once, EASE for speed: one prepares the cache, the others wait for
    # it; predicts of one run write one whole submission
    env = {**os.environ, "LIGHTREC_VENV": sys.prefix}
    ov = tiny(tmp_path, tiny_csv)
    procs = [
        subprocess.Popen(
            [*EASE_TRAIN, *ov, f"seed={s}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2, 3)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    assert len(list((tmp_path / "saved").rglob("metrics.json"))) == 3
    entries = [e for e in (tmp_path / "cache").iterdir() if e.name.startswith("lightrec-")]
    assert len([e for e in entries if e.is_dir()]) == 1, entries  # prepared once
    latest = max((tmp_path / "saved").rglob("metrics.json"), key=lambda m: m.stat().st_mtime).parent
    procs = [
        subprocess.Popen(
            [*EASE_PREDICT, *ov],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    sub = pd.read_csv(latest / "submission.csv")
    assert len(sub) == 40 * 10 and list(sub.columns) == ["user", "item"]
    assert not [
        p
        for p in tmp_path.rglob("*")
        if p.name.startswith(".") and p.is_file() and ".hydra" not in p.parts
    ]  # no temporary files left
    assert json.loads((latest / "metrics.json").read_text())["val"]
    assert torch.load(latest / "checkpoints" / "refit.ckpt", weights_only=True)


@pytest.mark.parametrize("what", ["missing", "folder", "no item column"])
def test_scoring_a_bad_submission_is_one_sentence(tmp_path, capsys, what):
    from lightrec.runs import submission

    hidden = tmp_path / "hidden.csv"
    hidden.write_text("user,item\n1,2\n")
    sub = tmp_path / "submission.csv"
    if what == "folder":
        sub.mkdir()
    elif what == "no item column":
        sub.write_text("user,thing\n1,2\n")
    assert submission.main(["score", str(sub), str(hidden)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the submission ") and str(sub) in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_predict_uses_the_runs_own_data_unless_told(tmp_path, tiny_csv):
    """Trained on one file, predicted with the shipped default data.path: the run's file is
    scored (it used to be MovieLens-100K's users with a model of another file)."""
    base = cpu_overrides(tmp_path, tiny_csv)
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", base, run_dir))
    no_path = [o for o in base if not o.startswith("data.path=")]
    predict.run(compose_cfg("ease", [*no_path, f"run_dir={run_dir}"], tmp_path / "p1"))
    users = set(pd.read_csv(run_dir / "submission.csv")["user"])
    assert users == set(pd.read_csv(tiny_csv)["user"])
    other = tmp_path / "other.csv"  # named explicitly: scored, new users served
    log = make_log(n_users=45, seed=3)
    log.to_csv(other, index=False)
    predict.run(
        compose_cfg("ease", [*no_path, f"data.path={other}", f"run_dir={run_dir}"], tmp_path / "p2")
    )
    assert set(pd.read_csv(run_dir / "submission.csv")["user"]) == set(log["user"])


def test_blend_refuses_runs_trained_on_different_contents_of_one_file(tmp_path):
    from lightrec.combine import blend

    csv = tmp_path / "log.csv"
    make_log().to_csv(csv, index=False)
    runs = []
    for i, config in enumerate(("ease", "item_knn")):
        if i == 1:
            make_log(seed=5).to_csv(csv, index=False)  # the file was edited in between
        run_dir = tmp_path / "saved" / config
        train.fit(compose_cfg(config, cpu_overrides(tmp_path, csv), run_dir))
        runs.append(str(run_dir))
    with pytest.raises(LightrecError, match="differ in their data file's content when trained"):
        blend.blend(runs, out=tmp_path / "b" / "submission.csv")


# ---------------------------------------------------------------- ids are text


def zero_padded_log(tmp_path):
    """Users ``7`` and ``007`` (and items ``42`` and ``0042``): different people and films
    whose ids a number-reading parser merges."""
    log = make_log(n_users=12, n_items=15).astype({"user": str, "item": str})
    log.loc[log.user == "3", "user"] = "007"  # and user "7" is there already
    log.loc[log.item == "5", "item"] = "0042"
    log.loc[log.item == "6", "item"] = "42"
    path = tmp_path / "padded.csv"
    log.to_csv(path, index=False)
    return path, log


def test_ids_are_text_end_to_end(tmp_path):
    """Read, cache, reload from the cache, train, predict: ``007`` and ``7`` stay two users
    and the submission writes every id back byte for byte."""
    csv, log = zero_padded_log(tmp_path)
    dm = dm_for(csv, tmp_path, min_interactions=3, use_cache=True)
    assert dm.num_users == 12 and dm.num_items == 15
    assert {"007", "7"} <= set(dm.meta["user_ids"]) and {"0042", "42"} <= set(dm.meta["item_ids"])
    again = dm_for(csv, tmp_path, min_interactions=3, use_cache=True)
    assert again.from_cache and again.meta["user_ids"] == dm.meta["user_ids"]

    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    cfg = compose_cfg("ease", [*cpu_overrides(tmp_path, csv), "predict.top_k=3"], run_dir)
    train.fit(cfg)
    sub = pd.read_csv(predict.run(cfg), dtype=str)
    assert set(sub.user) == set(log.user) and len(sub) == 12 * 3
    assert set(sub.item) <= set(log.item)
    seen = set(zip(log.user, log.item, strict=True))
    assert not any((u, i) in seen for u, i in zip(sub.user, sub.item, strict=True))


def test_the_id_typing_rule():
    from lightrec.data.interactions import typed_ids

    def typed(*texts):
        return typed_ids(pd.Series(list(texts))).tolist()

    assert typed("7", "12", "-3", "0") == [7, 12, -3, 0]
    assert typed(str(2**63 - 1)) == [2**63 - 1]
    # a single text a number would not write back keeps the whole column as text
    for odd in ("007", "+7", " 7", "-0", "7.0", "1e3", str(2**63), "x"):
        assert typed("7", odd) == ["7", odd], odd


@pytest.mark.parametrize("block", [3, 4, 5, 1 << 24])  # small blocks: patterns across edges
def test_the_check_that_numbers_are_plainly_written(tmp_path, monkeypatch, block):
    from lightrec.data import interactions

    monkeypatch.setattr(interactions, "SCAN_BLOCK", block)
    plain = ["1,2", "0,12", "-5,0", "10,20\n30,0", "7,1.05"]
    odd = ["1,007", "007,1", "1,-0", "1,-07", "1,+3", "1, 3", '"7",1', "1,2\n03,4", "1,00"]
    for rows in plain + odd:
        path = tmp_path / "log.csv"
        path.write_text(f"user,item\n{rows}\n")
        assert interactions._plain_numbers(path) == (rows in plain), (rows, block)


def test_ids_of_two_files_match_as_text():
    """A run whose map holds text ids, and a file whose ids are all numbers (or the other
    way round): compared as text, never as a number against a string."""
    from lightrec.data.interactions import index_of

    assert index_of(["007", "7", "x"], np.array([7, 8])).tolist() == [1, -1]
    assert index_of([7, 42], np.array(["42", "0042"], dtype=object)).tolist() == [1, -1]
    cat = pd.Series(pd.Categorical.from_codes([1, 0, 1], np.array([7, 9])))
    assert index_of(["9", "007"], cat).tolist() == [0, -1, 0]  # 9, 7, 9


def test_hide_writes_the_ids_back_as_they_were(tmp_path):
    from lightrec.runs import submission

    csv, log = zero_padded_log(tmp_path)
    train_out, hidden_out = tmp_path / "train.csv", tmp_path / "hidden.csv"
    assert submission.main(["hide", str(csv), str(train_out), str(hidden_out), "--m", "1"]) == 0
    train_, hidden = pd.read_csv(train_out, dtype=str), pd.read_csv(hidden_out, dtype=str)
    assert set(hidden.user) == set(log.user)  # 007 and 7 each lost two items of their own
    assert (hidden.groupby("user").size() == 2).all()
    assert sorted(pd.concat([train_, hidden]).item) == sorted(log.item)


# ---------------------------------------------------------------- a full disk


def _full(monkeypatch, free: int = 0):
    """The disk of every output reports ``free`` bytes left."""
    from lightrec.utils import io as lio

    monkeypatch.setattr(lio, "free_bytes", lambda folder: free)


def test_an_atomic_write_on_a_full_disk_is_one_sentence_and_leaves_the_old_file(tmp_path):
    import errno

    from lightrec.utils.io import NoSpace, atomic_write

    out = tmp_path / "submission.csv"
    out.write_text("the old one\n")

    def fill(f):
        f.write("half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpace) as e:
        atomic_write(out, fill)
    one_sentence(e.value, f"the disk of {tmp_path} is full", "free)", "submission.csv was not")
    assert out.read_text() == "the old one\n" and sorted(tmp_path.iterdir()) == [out]


def test_a_checkpoint_writer_that_hides_the_errno_counts_as_a_full_disk_only_when_full(
    tmp_path, monkeypatch
):
    """torch's zip writer fails with a RuntimeError ("unexpected pos") on a full disk: the
    free space decides; nothing is left at the final path either way."""
    from lightrec.training import resume
    from lightrec.utils.io import NoSpace

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(resume.torch, "save", broken_save)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(RuntimeError, match="unexpected pos"):  # space left: a real bug
        resume.AtomicCheckpointIO().save_checkpoint({"x": 1}, ckpt)
    _full(monkeypatch, free=4096)
    with pytest.raises(NoSpace) as e:
        resume.AtomicCheckpointIO().save_checkpoint({"x": 1}, ckpt)
    one_sentence(e.value, "checkpoints is full (4.0 KB free)", "last.ckpt was not written")
    assert list(ckpt.parent.iterdir()) == []


def test_a_checkpoint_writer_that_failed_with_less_room_left_than_it_wrote_is_a_full_disk(
    tmp_path, monkeypatch
):
    """A file system can refuse a write with a few MiB free (seen: torch's "unexpected pos"
    on a 53 MiB checkpoint, 60 MiB free once it was removed): less room left than the writer had
    written is a full disk; more room than that is a real error."""
    from lightrec.training import resume
    from lightrec.utils.io import NoSpace

    def broken_save(obj, f):
        f.write(b"x" * (3 << 20))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(resume.torch, "save", broken_save)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    _full(monkeypatch, free=2 << 20)  # above the 1 MiB floor, under the 3 MiB written
    with pytest.raises(NoSpace) as e:
        resume.AtomicCheckpointIO().save_checkpoint({"x": 1}, ckpt)
    one_sentence(e.value, "checkpoints is full (2.0 MB free)", "last.ckpt was not written")
    assert list(ckpt.parent.iterdir()) == []
    _full(monkeypatch, free=4 << 20)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        resume.AtomicCheckpointIO().save_checkpoint({"x": 1}, ckpt)


def test_training_onto_a_full_disk_is_one_sentence_before_any_work(
    tmp_path, tiny_csv, monkeypatch, capsys
):
    import lightrec.utils.io as lio

    real, log_root = lio.free_bytes, str(tmp_path / "saved")
    monkeypatch.setattr(lio, "free_bytes", lambda f: 0 if str(f).startswith(log_root) else real(f))
    assert cli.main(["train", "ease", *cpu_overrides(tmp_path, tiny_csv)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "paths.log_root" in err and "its disk is full (0 bytes free)" in err
    assert not [p for p in (tmp_path / "saved").rglob("*") if p.is_file()]


def test_a_disk_filling_during_training_is_one_sentence(tmp_path, tiny_csv, monkeypatch, capsys):
    """The checkpoint write that finds the disk full ends the run with one sentence, and
    no checkpoint (whole or half) is left at a final path."""
    from lightrec.training import resume

    def full_save(obj, f):
        raise RuntimeError("unexpected pos 85184 vs 85104")

    monkeypatch.setattr(resume.torch, "save", full_save)
    import lightrec.utils.io as lio

    real = lio.free_bytes  # the disk fills once training writes its first checkpoint
    monkeypatch.setattr(lio, "free_bytes", lambda f: 1000 if "checkpoints" in str(f) else real(f))
    args = ["train", "multi_vae_v2", *cpu_overrides(tmp_path, tiny_csv)]
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "is full (1000 bytes free): best.ckpt was not written" in err  # the first of an epoch
    assert not list((tmp_path / "saved").rglob("*.ckpt"))


def test_a_cache_that_fills_the_disk_is_a_warning_and_the_run_goes_on(
    tmp_path, tiny_csv, monkeypatch
):
    import errno

    from lightrec.data import cache

    def no_room(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "savez", no_room)
    with pytest.warns(UserWarning, match="was not cached .*No space left"):
        dm = dm_for(tiny_csv, tmp_path, use_cache=True)
    assert dm.num_users == 40 and not dm.from_cache
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name != "lightrec-fingerprints.json"]
