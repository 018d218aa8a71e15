"""The report on fake run folders: best run per config by validation, table and chart."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import block
from lightrec.analysis.report import BEGIN, END, main, write_report
from lightrec.errors import LightrecError


def fake_run(root, config, name, val_ndcg, test_ndcg, holdout="valid_and_test"):
    run = root / config / "2026-01-01" / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = {
        "model_name": config,
        "checkpoint": {"monitor": "val/ndcg@10"},
        "data": {**block("ease", "data"), "holdout": holdout},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    part = {"recall@10": 0.1, "ndcg@10": val_ndcg, "recall@20": 0.2, "coverage@10": 0.3}
    metrics = {
        "model": config,
        "best_epoch": 3,
        "epochs_trained": 9,
        "fit_time_s": 1.5,
        "val": part,
        "test": {**part, "ndcg@10": test_ndcg},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_best_run_per_config_is_chosen_on_validation(tmp_path):
    root = tmp_path / "saved"
    fake_run(root, "ease", "a", val_ndcg=0.07, test_ndcg=0.09)  # best test, worse val
    fake_run(root, "ease", "b", val_ndcg=0.08, test_ndcg=0.05)
    fake_run(root, "multi_vae_v2", "c", val_ndcg=0.06, test_ndcg=0.06)
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# Results\n\nhand-written intro\n\n{BEGIN}\nold table\n{END}\n\nouttro\n")
    png = tmp_path / "results.png"
    body = write_report(root, out, png)
    rows = [line for line in body.splitlines() if line.startswith("| ease")]
    assert len(rows) == 1 and "| 0.0500 |" in rows[0]  # run b: chosen by val, not by test
    text = out.read_text()
    assert "hand-written intro" in text and "outtro" in text and "old table" not in text
    assert "| multi_vae_v2 |" in text and "![best run per config](results.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_protocols_are_not_mixed(tmp_path):
    root = tmp_path / "saved"
    fake_run(root, "ease", "a", 0.07, 0.09, holdout="valid_and_test")
    fake_run(root, "ease", "b", 0.08, 0.05, holdout="valid")
    body = write_report(root, tmp_path / "R.md", tmp_path / "r.png")
    assert body.count("### ") == 2


def test_no_runs_is_one_sentence(tmp_path, capsys):
    with pytest.raises(LightrecError, match="no finished runs"):
        write_report(tmp_path, tmp_path / "R.md", tmp_path / "r.png")
    assert main(["--log-root", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2
    assert "error: no finished runs" in capsys.readouterr().err


def test_the_report_draws_each_models_validation_curve(tmp_path, tiny_csv):
    from helpers import compose_cfg, cpu_overrides
    from lightrec.analysis import report
    from lightrec.training import fit as train

    root = tmp_path / "saved" / "hydra_logs"
    ov = [*cpu_overrides(tmp_path, tiny_csv), "trainer.max_epochs=4", "refit=false"]
    for config in ("multi_vae_v2", "ease"):
        train.fit(compose_cfg(config, ov, root / config / "d" / "t"))
    runs = {r.config: r for r in report.load_runs(root)}
    epochs, values = report.validation_curve(runs["multi_vae_v2"])
    metrics = json.loads((runs["multi_vae_v2"].path / "metrics.json").read_text())
    assert epochs == [1, 2, 3, 4] and max(values) == pytest.approx(metrics["val"]["ndcg@10"])
    assert report.validation_curve(runs["ease"]) == ([], [])  # one fit: a level, not a curve
    out = tmp_path / "R.md"
    report.write_report(root, out, tmp_path / "r.png")
    assert (tmp_path / "r_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "![validation curves of those runs](r_curves.png)" in out.read_text()


def test_the_table_alone_writes_nothing(tmp_path, tiny_csv, capsys, monkeypatch):
    """`lightrec report` prints the table; docs/RESULTS.md and the charts are written only
    with --out or --docs."""
    from helpers import compose_cfg, cpu_overrides
    from lightrec.training import fit as train

    root = tmp_path / "saved" / "hydra_logs"
    ov = [*cpu_overrides(tmp_path, tiny_csv), "refit=false"]
    train.fit(compose_cfg("ease", ov, root / "ease" / "d" / "t"))
    work = tmp_path / "cwd"
    (work / "docs").mkdir(parents=True)
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(["--log-root", str(root)]) == 0
    assert "| ease |" in capsys.readouterr().out
    assert list(work.rglob("*.*")) == []  # no file written
    assert main(["--log-root", str(root), "--docs"]) == 0
    assert sorted(p.name for p in (work / "docs").iterdir()) == [
        "RESULTS.md",
        "results.png",
        "results_curves.png",
    ]
