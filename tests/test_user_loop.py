"""The user's loop: a progress bar in a terminal, one line per epoch in a pipe, quiet logs,
runs comparable in a real TensorBoard server, and a first install that fits a laptop."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from helpers import ROOT, make_log, run_cmd, run_here

PY_TRAIN = [sys.executable, str(ROOT / "train_multi_vae.py")]


def tiny(tmp_path, csv, *extra) -> list[str]:
    return [
        f"data.path={csv}",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        f"paths.log_root={tmp_path / 'saved'}",
        f"paths.predict_log_root={tmp_path / 'pl'}",
        "data.min_interactions=3",
        "data.batch_size=4",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        *extra,
    ]


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run ``args`` with a pseudo-terminal as stdout and stderr; return all it wrote."""
    leader, follower = pty.openpty()
    # a terminal has a size (a fresh pseudo-terminal's is 0 x 0, where TQDM draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "LIGHTREC_VENV": sys.prefix, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


def test_a_terminal_gets_a_progress_bar(tmp_path, tiny_csv):
    out = run_in_terminal([*PY_TRAIN, *tiny(tmp_path, tiny_csv)], tmp_path)
    assert "\r" in out  # the bar redraws itself in place
    assert "Epoch 2/2" in out or "Epoch 2:" in out  # Lightning's TQDM bar, epoch by epoch
    assert "loss=" in out and "val/ndcg@10=" in out  # the loss and the monitored metric
    assert "it/s" in out or "s/it" in out  # speed, and the time left beside it
    assert "lightrec: training multi_vae_v2" in out and "lightrec: finished" in out


def test_a_pipe_gets_one_line_per_epoch_and_no_redraws(tmp_path, tiny_csv):
    p = run_cmd([*PY_TRAIN, *tiny(tmp_path, tiny_csv)], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "\r" not in out
    lines = out.strip().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/3", "2/3", "3/3"]
    assert all("loss " in e and "val/ndcg@10 " in e and e.endswith(" s") for e in epochs)
    assert len([line for line in lines if line.startswith("refit epoch ")]) >= 1
    # quiet: lightrec's own start and end lines and the epochs; no third-party tips
    assert lines[0].startswith("lightrec: training multi_vae_v2 (MultiVAE) on ")
    assert "users x" in lines[0] and "CPU" in lines[0] and "run folder" in lines[0]
    assert lines[-1].startswith("lightrec: finished") and "best epoch" in lines[-1]
    assert not [line for line in lines if not line.startswith(("lightrec:", "epoch", "refit"))]
    assert "Tip" not in out and "litlogger" not in out and "GPU available" not in out


def test_the_key_overrides_the_choice(tmp_path, tiny_csv):
    p = run_here(["train", "multi_vae_v2", *tiny(tmp_path, tiny_csv, "progress=none")], tmp_path)
    assert p.returncode == 0 and "epoch 1/3" not in p.stdout and "lightrec: finished" in p.stdout
    out = run_in_terminal([*PY_TRAIN, *tiny(tmp_path, tiny_csv, "progress=lines")], tmp_path)
    assert "epoch 1/3  loss" in out and "it/s" not in out


# ---------------------------------------------------------------- TensorBoard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    return json.loads(text) if text[:1] in "[{" else text


@pytest.fixture
def tensorboard_of_a_sweep(tmp_path):
    """A 2-job sweep on a log with item titles, and a TensorBoard server on its runs."""
    csv = tmp_path / "data" / "log.csv"
    csv.parent.mkdir()
    make_log().to_csv(csv, index=False)
    pd.DataFrame({"item": range(30), "title": [f"Film number {i}" for i in range(30)]}).to_csv(
        csv.parent / "items.csv", index=False
    )
    argv = ["train", "multi_vae_v2", "-m", *tiny(tmp_path, csv), "model.dropout=0.3,0.6"]
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path / "saved"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if get(f"{base}/data/plugins_listing"):
                    break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_tensorboard_compares_the_runs_of_a_sweep(tensorboard_of_a_sweep):
    base = tensorboard_of_a_sweep
    # run names say what differs between the jobs
    runs = get(f"{base}/data/runs")
    sweep_runs = sorted(r for r in runs if r.endswith("/tensorboard"))
    assert len(sweep_runs) == 2
    assert "model.dropout=0.3" in sweep_runs[0] and "model.dropout=0.6" in sweep_runs[1]

    # HPARAMS: both runs, their hyper-parameters and final metrics
    groups = get(
        f"{base}/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 100,
            "colParams": [],
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
        },
    )["sessionGroups"]
    by_dropout = {g["hparams"]["model.dropout"]: g for g in groups}
    assert set(by_dropout) == {0.3, 0.6}
    for g in groups:
        assert (
            g["hparams"]["model_name"] == "multi_vae_v2"
            and g["hparams"]["split"] == "leave_one_out (valid)"
        )
        tags = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert 0.0 <= tags["final/val_ndcg@10"] <= 1.0 and "final/val_recall@10" in tags

    # TEXT: the resolved config of each run
    text_tags = get(f"{base}/data/plugin/text/tags")
    for run in sweep_runs:
        assert "config/text_summary" in text_tags[run]
        q = urllib.parse.urlencode({"run": run, "tag": "config/text_summary"})
        (entry,) = get(f"{base}/data/plugin/text/text?{q}")
        assert "model_name: multi_vae_v2" in entry["text"] and "dropout:" in entry["text"]

    # PROJECTOR: item embeddings labelled with the titles
    assert set(sweep_runs) <= set(get(f"{base}/data/plugin/projector/runs"))
    q = urllib.parse.urlencode({"run": sweep_runs[0]})
    (embedding,) = get(f"{base}/data/plugin/projector/info?{q}")["embeddings"]
    assert embedding["tensorShape"][0] == 30
    q = urllib.parse.urlencode(
        {"run": sweep_runs[0], "name": embedding["tensorName"], "num_rows": 30}
    )
    labels = get(f"{base}/data/plugin/projector/metadata?{q}").strip().splitlines()
    assert labels[:2] == ["Film number 0", "Film number 1"]


# ---------------------------------------------------------------- the first install


def fake_venv(tmp_path, pip_rc=0, probe_ok=True, torch_installed=False) -> Path:
    """A venv whose python only records what it is asked to do."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "python.log"
    script = f"""#!/usr/bin/env bash
echo "$*" >> {log}
case "$*" in
  "-c import torch") exit {0 if torch_installed else 1} ;;
  *urlopen*) exit {0 if probe_ok else 1} ;;
  "-m pip install"*) exit {pip_rc} ;;
esac
"""
    (venv / "bin" / "python").write_text(script)
    (venv / "bin" / "python").chmod(0o755)
    return venv


def install_torch(tmp_path, venv, gpu: str | None, env_torch: str | None = None):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if gpu is not None:  # "ok" or "fails"
        smi.write_text(f"#!/bin/sh\nexit {0 if gpu == 'ok' else 9}\n")
        smi.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LIGHTREC_VENV": str(venv), "HOME": str(tmp_path)}
    if env_torch is not None:
        env["LIGHTREC_TORCH"] = env_torch
    p = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / 'run_common.sh'}; lightrec_install_torch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = tmp_path / "python.log"
    return p, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.parametrize("gpu", [None, "fails"])
def test_no_gpu_installs_the_cpu_build_from_its_index(tmp_path, gpu):
    p, calls = install_torch(tmp_path, fake_venv(tmp_path), gpu)
    assert p.returncode == 0
    pip = [c for c in calls if c.startswith("-m pip")]
    assert pip == [
        "-m pip install -q --index-url https://download.pytorch.org/whl/cpu "
        "--timeout 10 --retries 0 torch"
    ]
    assert "installing PyTorch's CPU build" in p.stderr


def test_an_unreachable_cpu_index_falls_back_at_once_in_one_line(tmp_path):
    p, calls = install_torch(tmp_path, fake_venv(tmp_path, probe_ok=False), gpu=None)
    assert p.returncode == 0 and not [c for c in calls if c.startswith("-m pip")]
    assert p.stderr.strip().splitlines() == [
        "no NVIDIA GPU, but PyTorch's CPU wheel index cannot be reached: "
        "installing the default torch from PyPI"
    ]
    # the real probe against a closed local port gives up at once
    env_probe = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / 'run_common.sh'}; lightrec_install_torch"],
        env={
            **os.environ,
            "LIGHTREC_VENV": sys.prefix,
            "LIGHTREC_TORCH_CPU_INDEX": f"http://127.0.0.1:{free_port()}/whl/cpu",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_probe.returncode == 0  # torch is installed here: nothing to do, no message


def test_a_failing_cpu_install_falls_back(tmp_path):
    p, calls = install_torch(tmp_path, fake_venv(tmp_path, pip_rc=1), gpu=None)
    assert p.returncode == 0 and "installing the default torch from PyPI" in p.stderr


def test_a_gpu_machine_keeps_pypis_default(tmp_path):
    p, calls = install_torch(tmp_path, fake_venv(tmp_path), gpu="ok")
    assert p.returncode == 0 and not [c for c in calls if c.startswith("-m pip")]
    assert p.stderr == ""


def test_lightrec_torch_wins_and_an_installed_torch_is_kept(tmp_path):
    p, calls = install_torch(tmp_path, fake_venv(tmp_path), gpu=None, env_torch="torch==2.13.0")
    assert [c for c in calls if c.startswith("-m pip")] == ["-m pip install -q torch==2.13.0"]
    p, calls = install_torch(tmp_path / "x", fake_venv(tmp_path / "x", torch_installed=True), None)
    assert not [c for c in calls if c.startswith("-m pip")]
