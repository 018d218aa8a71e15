"""The entry points and the run scripts as a user drives them: the scripts themselves in
subprocesses, the rest in this process through the same ``cli.main`` (helpers.run_here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, run_cmd, run_here

PY_TRAIN = [sys.executable, str(ROOT / "train_multi_vae.py")]
SCRIPT = str(ROOT / "run_multi_vae.sh")


def tiny_overrides(tmp_path, csv) -> list[str]:
    return [
        f"data.path={csv}",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        "data.min_interactions=3",
        "trainer.max_epochs=2",
        "trainer.min_epochs=1",
        "trainer.accelerator=cpu",
    ]


def assert_one_sentence(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for f in fragments:
        assert f in proc.stderr, proc.stderr[-2000:]


def runs(tmp_path):
    return list((tmp_path / "saved" / "hydra_logs").rglob("metrics.json"))


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "does not exist"), ("", "is empty"), ("user,thing,time\n1,2,3\n", "no column 'item'")],
)
def test_bad_data_file_one_sentence_nothing_written(tmp_path, content, fragment):
    csv = tmp_path / "log.csv"
    if content is not None:
        csv.write_text(content)
    argv = ["train", "multi_vae_v2", *tiny_overrides(tmp_path, csv)]
    proc = run_here(argv, tmp_path)
    assert_one_sentence(proc, "error:", str(csv), fragment)
    assert proc.returncode == 2
    assert runs(tmp_path) == []
    assert not list((tmp_path / "saved").rglob("*.ckpt"))


def test_unknown_config_key(tmp_path, tiny_csv):
    argv = ["train", "multi_vae_v2", *tiny_overrides(tmp_path, tiny_csv), "model.dropuot=0.1"]
    proc = run_here(argv, tmp_path)
    assert_one_sentence(proc, "model.dropuot")
    assert runs(tmp_path) == []


def test_predict_with_no_trained_run(tmp_path, tiny_csv):
    # what predict_multi_vae.py runs: the predict mode with multi_vae_v2 as the default
    argv = ["--default-config", "multi_vae_v2", "predict", *tiny_overrides(tmp_path, tiny_csv)]
    proc = run_here(argv, tmp_path)
    assert_one_sentence(proc, "no finished training run of 'multi_vae_v2'")
    assert not list(tmp_path.rglob("submission.csv"))


def test_unknown_mode_prints_usage(tmp_path):
    proc = run_cmd([SCRIPT, "fly"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown mode 'fly'" in proc.stderr and "usage:" in proc.stderr


def test_unknown_config_name(tmp_path):
    proc = run_here(["train", "multi_vae_v9"], tmp_path)
    assert proc.returncode == 2 and "configs/multi_vae_v9.yaml" in proc.stderr


def test_run_script_modes(tmp_path, tiny_csv):
    """train, predict, both, clean, clean-train and clean-both, with overrides reaching
    both stages; clean removes only this toolkit's cache entries."""
    ov = tiny_overrides(tmp_path, tiny_csv)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "other-tool.db").write_text("not ours")

    def entries():
        return sorted(p.name for p in cache_dir.glob("lightrec-*") if p.is_dir())

    p = run_cmd([SCRIPT, "train", "multi_vae_v2", *ov], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(runs(tmp_path)) == 1 and len(entries()) == 1
    assert not list(tmp_path.rglob("submission.csv"))

    # the same entry in this process (the script only adds the default config)
    default = ["--default-config", "multi_vae_v2"]
    p = run_here([*default, "predict", "multi_vae_v2", *ov], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list(tmp_path.rglob("submission.csv"))) == 1

    p = run_here([*default, "both", *ov], tmp_path)  # config omitted: the default
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(runs(tmp_path)) == 2 and len(list(tmp_path.rglob("submission.csv"))) == 2

    p = run_here([*default, "clean", "multi_vae_v2", *ov], tmp_path)
    assert p.returncode == 0 and entries() == []
    assert (cache_dir / "other-tool.db").exists()
    assert len(runs(tmp_path)) == 2  # clean touches the cache only

    p = run_here([*default, "clean-train", "multi_vae", *ov], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(entries()) == 1
    assert len(list((tmp_path / "saved" / "hydra_logs" / "multi_vae").rglob("metrics.json"))) == 1

    p = run_here([*default, "clean-both", "multi_vae", *ov, "predict.top_k=5"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    subs = sorted((tmp_path / "saved" / "hydra_logs" / "multi_vae").rglob("submission.csv"))
    assert len(subs) == 1
    lines = subs[0].read_text().splitlines()
    assert lines[0] == "user,item" and len(lines) == 1 + 40 * 5


def test_multirun_sweep(tmp_path, tiny_csv):
    p = run_cmd(
        [*PY_TRAIN, "-m", *tiny_overrides(tmp_path, tiny_csv), "model.dropout=0.3,0.5"],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    found = runs(tmp_path)
    assert len(found) == 2
    assert {json.loads(m.read_text())["model"] for m in found} == {"multi_vae_v2"}


@pytest.mark.parametrize(
    "script, config", [("run_bert4rec.sh", "bert4rec_v2"), ("run_ease.sh", "ease")]
)
def test_the_named_scripts_are_run_sh_with_a_default_config(tmp_path, tiny_csv, script, config):
    """run_bert4rec.sh and run_ease.sh are ./run.sh with their model's config as the default
    (the modes themselves are test_run_script_modes'): train with the config omitted
    composes that config (Hydra's --cfg job prints it, nothing runs); a bad mode is the
    usage, exit 2."""
    p = run_cmd([str(ROOT / script), "train", "--cfg", "job", f"seed={len(config)}"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    shown = yaml.safe_load(p.stdout)
    assert shown["model_name"] == config and shown["seed"] == len(config)
    assert not (tmp_path / "saved").exists()
    p = run_cmd([str(ROOT / script), "sideways"], cwd=tmp_path)
    assert p.returncode == 2 and "usage" in p.stderr.lower()


def test_ease_lambda_sweep_is_one_multirun(tmp_path, tiny_csv):
    argv = ["train", "ease", "-m", *tiny_overrides(tmp_path, tiny_csv), "model.lam=1,10,100"]
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    lams, tuned = set(), []
    for m in runs(tmp_path):
        lams.add(yaml.safe_load((m.parent / "config.yaml").read_text())["model"]["lam"])
        tuned.append("tuned" in json.loads(m.read_text()))
    assert lams == {1, 10, 100} and not any(tuned)  # a swept knob is given, never tuned


def test_run_best_trains_the_members_and_blends_them(tmp_path, tiny_csv):
    ov = [
        *tiny_overrides(tmp_path, tiny_csv),
        f"paths.log_root={tmp_path / 'saved' / 'hydra_logs'}",
    ]
    p = run_cmd([str(ROOT / "run_best.sh"), *ov], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    submission = Path(p.stdout.strip().splitlines()[-1])
    assert submission.name == "submission.csv" and (tmp_path / submission).is_file()
    blend = json.loads((tmp_path / submission).parent.joinpath("blend.json").read_text())
    assert len(blend["runs"]) == 3 and abs(sum(blend["weights"]) - 1.0) < 0.01
    lines = (tmp_path / submission).read_text().splitlines()
    assert lines[0] == "user,item" and len(lines) == 1 + 40 * 10


def test_run_best_with_the_competition_recipe_reranks_its_members(tmp_path, tiny_csv):
    """recipe=competition: validation mimics the hidden set, the recipe's member overrides
    apply, and a ranker combines the members (best.members shortened to stay fast)."""
    (tmp_path / "items.csv").write_text(
        "item,genres\n" + "".join(f"{i},{'Drama' if i % 2 else 'War'}\n" for i in range(30))
    )
    ov = [
        *tiny_overrides(tmp_path, tiny_csv),
        f"paths.log_root={tmp_path / 'saved' / 'hydra_logs'}",
        "recipe=competition",
        "best.members=[ease,item_knn]",
        "data.random_m=2",
        "best.max_users=25",  # of the 40 validation users
    ]
    p = run_here(["best", *ov], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    submission = tmp_path / p.stdout.strip().splitlines()[-1]
    record = json.loads(submission.parent.joinpath("rerank.json").read_text())
    assert len(record["runs"]) == 2 and "genres_share" in record["features"]
    assert record["validation_users"] == 25
    ease_cfg = (Path(record["runs"][0]) / "config.yaml").read_text()
    tuned = json.loads((Path(record["runs"][0]) / "metrics.json").read_text())["tuned"]
    assert tuned["monitor"] == "val/recall@10"  # on validation
    monitor = [t["val/recall@10"] for t in tuned["tried"]]
    best_tried = tuned["tried"][monitor.index(max(monitor))]["lam"]
    lams = sorted(t["lam"] for t in tuned["tried"])
    if tuned.get("interpolated"):  # between the best tried and its tried neighbours
        place = lams.index(best_tried)
        assert lams[place - 1] < tuned["chosen"]["lam"] < lams[place + 1]
    else:
        assert tuned["chosen"]["lam"] == best_tried
    assert f"lam: {tuned['chosen']['lam']}" in ease_cfg  # the chosen value trained
    assert "split_strategy: last_n_random_m" in ease_cfg
    assert "monitor: val/recall@10" in ease_cfg
    lines = submission.read_text().splitlines()
    assert lines[0] == "user,item" and len(lines) == 1 + 40 * 10


def test_a_bad_best_plan_is_one_sentence(tmp_path, tiny_csv):
    ov = [*tiny_overrides(tmp_path, tiny_csv), "best.combine=vote"]
    p = run_here(["best", *ov], tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: ")
    assert "best.combine='vote'" in p.stderr and not (tmp_path / "saved").exists()


def _unfinish(run_dir: Path) -> None:
    """A run killed before it finished: everything but metrics.json."""
    (run_dir / "metrics.json").unlink()


def test_both_with_resume_resumes_then_predicts(tmp_path, tiny_csv):
    ov = [*tiny_overrides(tmp_path, tiny_csv), f"paths.log_root={tmp_path / 'logs'}"]
    assert run_here(["train", "ease", *ov], tmp_path).returncode == 0
    (run,) = [m.parent for m in (tmp_path / "logs").rglob("metrics.json")]
    _unfinish(run)
    p = run_here(["both", "ease", *ov, "resume=true"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (run / "metrics.json").is_file() and (run / "submission.csv").is_file()


def test_run_best_with_resume_keeps_finished_members_and_resumes_the_rest(tmp_path, tiny_csv):
    ov = [
        *tiny_overrides(tmp_path, tiny_csv),
        f"paths.log_root={tmp_path / 'logs'}",
        "best.members=[ease,item_knn,rp3beta]",
    ]
    for config, other in (("ease", []), ("item_knn", []), ("rp3beta", ["model.alpha=0.5"])):
        done = run_here(["train", config, *ov[:-1], *other], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    (knn,) = [m.parent for m in (tmp_path / "logs" / "item_knn").rglob("metrics.json")]
    (ease,) = [m.parent for m in (tmp_path / "logs" / "ease").rglob("metrics.json")]
    (other,) = [m.parent for m in (tmp_path / "logs" / "rp3beta").rglob("metrics.json")]
    _unfinish(knn)  # killed; rp3beta finished, but with other settings than the plan's
    p = run_here(["best", *ov, "resume=true"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ease already finished with these settings" in p.stdout
    assert f"rp3beta's latest finished run {other} was trained with model.alpha=0.5" in p.stdout
    blend = json.loads(
        (tmp_path / p.stdout.strip().splitlines()[-1]).parent.joinpath("blend.json").read_text()
    )
    assert blend["runs"][:2] == [str(ease), str(knn)]  # kept, and resumed in its own folder
    assert blend["runs"][2] != str(other)  # trained afresh with the plan's settings
    assert len(list((tmp_path / "logs" / "rp3beta").rglob("metrics.json"))) == 2
