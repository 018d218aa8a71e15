"""Nothing lost: a run stopped at any moment (SIGKILL, Ctrl-C, SIGTERM) continues in its own
folder and finishes with the numbers of the same run left alone."""

from __future__ import annotations

import io
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from helpers import (
    ROOT,
    SignalAt,
    compose_cfg,
    cpu_overrides,
    make_log,
    only_metrics,
    run_cmd,
    same_numbers,
)
from lightrec.errors import LightrecError
from lightrec.training import fit as train
from lightrec.training.resume import RunInterrupted, random_state, set_random_state


def test_random_states_round_trip():
    state = random_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_random_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)  # checkpoints must stay weights_only loadable


def test_interrupted_in_the_first_epoch_starts_again_in_its_folder(tmp_path, tiny_csv):
    ov = [*cpu_overrides(tmp_path, tiny_csv), "data.batch_size=8", "refit=false"]
    whole = train.fit(compose_cfg("multi_vae_v2", ov, tmp_path / "whole")).metrics
    cut = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "cut"
    with pytest.raises(RunInterrupted):
        train.fit(compose_cfg("multi_vae_v2", ov, cut), [SignalAt(epoch=0)])
    assert not (cut / "checkpoints" / "last.ckpt").exists()
    resumed = train.fit(compose_cfg("multi_vae_v2", [*ov, "resume=true"])).metrics
    assert resumed["resumed"] == 1 and (cut / "metrics.json").is_file()
    same_numbers(whole, resumed)


def test_stopped_after_training_redoes_only_evaluation_and_refit(tmp_path, tiny_csv, capsys):
    """A run killed during its refit: training is not repeated, the refit starts again, and
    what the first attempt left in TensorBoard is replaced without a warning."""
    ov = [*cpu_overrides(tmp_path, tiny_csv), "data.holdout=valid_and_test"]
    run_dir = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "t"
    whole = train.fit(compose_cfg("multi_vae_v2", ov, run_dir))
    run = whole.run
    run.metrics.unlink()
    run.refit_ckpt.unlink()
    before = run.last_ckpt.stat().st_mtime_ns
    capsys.readouterr()
    again = train.fit(compose_cfg("multi_vae_v2", [*ov, "resume=true"])).metrics
    printed = capsys.readouterr()
    assert "warning" not in (printed.out + printed.err).lower(), printed
    assert run.last_ckpt.stat().st_mtime_ns == before  # no epoch was trained again
    same_numbers(whole.metrics, again)
    assert run.refit_ckpt.is_file()


def test_resume_with_nothing_to_resume_is_one_sentence(tmp_path, tiny_csv):
    cfg = compose_cfg("multi_vae_v2", [*cpu_overrides(tmp_path, tiny_csv), "resume=true"])
    with pytest.raises(LightrecError, match="no unfinished training run of 'multi_vae_v2'"):
        train.fit(cfg)
    cfg = compose_cfg("multi_vae_v2", [*cpu_overrides(tmp_path, tiny_csv), f"resume={tmp_path}"])
    with pytest.raises(LightrecError, match="not a training run folder"):
        train.fit(cfg)


def test_resume_with_other_settings_is_refused(tmp_path, tiny_csv):
    ov = [*cpu_overrides(tmp_path, tiny_csv), "trainer.max_epochs=4"]
    cut = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "cut"
    with pytest.raises(RunInterrupted):
        train.fit(compose_cfg("multi_vae_v2", ov, cut), [SignalAt(epoch=1)])
    other = compose_cfg("multi_vae_v2", [*ov, "model.lr=0.5", "resume=true"])
    with pytest.raises(LightrecError, match=r"resume: model\.lr is 0\.5 here but 0\.005"):
        train.fit(other)


def test_a_second_resume_of_a_run_being_trained_is_refused(tmp_path, tiny_csv):
    """Another process holds the run (a resume in progress): this one refuses, naming it,
    and trains nothing into it."""
    import fcntl

    ov = [*cpu_overrides(tmp_path, tiny_csv), "refit=false"]
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", ov, run_dir))
    (run_dir / "metrics.json").unlink()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LightrecError, match="is being trained by another process"):
            train.fit(compose_cfg("ease", [*ov, "resume=true"]))
        assert not (run_dir / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert fcntl  # (the lock is fcntl's: Linux and macOS)
    train.fit(compose_cfg("ease", [*ov, "resume=true"]))  # free again: it resumes
    assert (run_dir / "metrics.json").is_file()


class NotWeights:
    """A pickled object: what a weights-only load refuses to build."""


def test_resume_from_a_bad_or_foreign_checkpoint_is_one_sentence(tmp_path, tiny_csv):
    ov = [*cpu_overrides(tmp_path, tiny_csv), "trainer.max_epochs=4", "refit=false"]
    cut = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "cut"
    with pytest.raises(RunInterrupted):
        train.fit(compose_cfg("multi_vae_v2", ov, cut), [SignalAt(epoch=1)])
    last = cut / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    torch.save({"state_dict": {}, "payload": NotWeights()}, last)
    with pytest.raises(LightrecError, match="cannot be loaded as plain weights"):
        train.fit(compose_cfg("multi_vae_v2", [*ov, "resume=true"]))
    last.write_bytes(good)
    log = pd.read_csv(tiny_csv)  # the data file changed: a new item appears
    pd.concat([log, log.head(5).assign(item=999)]).to_csv(tiny_csv, index=False)
    changed = rf"resume: the data file {tiny_csv} changed since {cut} started \(its items"
    with pytest.raises(LightrecError, match=changed):
        train.fit(compose_cfg("multi_vae_v2", [*ov, "resume=true"]))


def test_a_run_from_before_side_information_resumes(tmp_path, tiny_csv):
    """data.item_features does not shape the training: a run whose config.yaml predates it
    resumes (it is not "another setup")."""
    ov = [*cpu_overrides(tmp_path, tiny_csv), "refit=false"]
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    train.fit(compose_cfg("ease", ov, run_dir))
    (run_dir / "metrics.json").unlink()
    config = OmegaConf.load(run_dir / "config.yaml")
    del config.data["item_features"]
    OmegaConf.save(config, run_dir / "config.yaml")
    train.fit(compose_cfg("ease", [*ov, "resume=true"]))
    assert (run_dir / "metrics.json").is_file()


# ---------------------------------------------------------------- real processes


def big_log(path):
    """Enough users that an epoch lasts a while: a kill lands inside one."""
    make_log(n_users=800, n_items=150, per_user=12, seed=3).to_csv(path, index=False)
    return path


def overrides(tmp_path, csv, log_root) -> list[str]:
    return [
        f"data.path={csv}",
        f"data_cache.cache_dir={tmp_path / 'cache'}",
        f"paths.log_root={log_root}",
        f"paths.predict_log_root={tmp_path / 'pl'}",
        "data.batch_size=16",
        "trainer.max_epochs=6",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=50",
        "model.hidden_dims=[64,16]",
        "early_stopping.patience=50",
        "data.holdout=valid_and_test",
    ]


def start(args, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "LIGHTREC_VENV": sys.prefix, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_epoch(
    log_root, epoch: int, proc: subprocess.Popen, resumes: int = 0, timeout: float = 120
) -> float:
    """Until the run's last.ckpt is at least at ``epoch`` (0-based) and was written by a
    process that had resumed the run ``resumes`` times (a checkpoint an earlier process left
    does not count); the time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        for ckpt in log_root.rglob("last.ckpt"):
            try:
                state = torch.load(ckpt, weights_only=True)
            except Exception:  # noqa: BLE001 - being replaced right now
                continue
            written_by = [v["resumes"] for v in state["callbacks"].values() if "resumes" in v]
            if state["epoch"] >= epoch and written_by == [resumes]:
                return time.monotonic()
        time.sleep(0.02)
    raise AssertionError("the run did not get there in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    csv = big_log(tmp / "log.csv")
    p = run_cmd(
        [sys.executable, str(ROOT / "train_multi_vae.py"), *overrides(tmp, csv, tmp / "saved")],
        cwd=tmp,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return csv, only_metrics(tmp / "saved")


def test_sigkill_mid_epoch_then_resume_finishes_like_an_uninterrupted_run(tmp_path, uninterrupted):
    csv, whole = uninterrupted
    log_root = tmp_path / "saved"
    args = [sys.executable, str(ROOT / "train_multi_vae.py"), *overrides(tmp_path, csv, log_root)]
    # killed twice, the second time in the resumed run: each kill waits for checkpoints of
    # its own process (with torch 2.14 an epoch here can be shorter than a fixed sleep, and
    # the second kill then hit the resumed run before it had written anything), and lands
    # inside the next epoch, whatever an epoch lasts on this machine
    for resumes, kill_after_epoch in enumerate((1, 3)):
        proc = start(args, tmp_path)
        before = wait_for_epoch(log_root, kill_after_epoch - 1, proc, resumes)
        seen = wait_for_epoch(log_root, kill_after_epoch, proc, resumes)
        time.sleep(random.uniform(0.1, 0.8) * (seen - before))  # an epoch's length, at most
        proc.kill()
        proc.wait()
        assert not list(log_root.rglob("metrics.json"))
        args = [*args[:2], *overrides(tmp_path, csv, log_root), "resume=true"]
    p = run_cmd(args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = only_metrics(log_root)
    assert resumed["resumed"] == 2
    same_numbers(whole, resumed)
    assert not list(log_root.rglob("*.tmp"))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_prints_the_resume_command(
    tmp_path, uninterrupted, sig, code
):
    csv, whole = uninterrupted
    log_root = tmp_path / "saved"
    proc = start(
        [sys.executable, str(ROOT / "train_multi_vae.py"), *overrides(tmp_path, csv, log_root)],
        tmp_path,
    )
    wait_for_epoch(log_root, 1, proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and time.monotonic() - sent < 10
    assert "Traceback" not in err
    (run_dir,) = {p.parent.parent for p in log_root.rglob("last.ckpt")}
    assert not (run_dir / "metrics.json").exists()
    command = err.strip().splitlines()[-1].strip()
    assert command.endswith(f"resume={run_dir}")
    p = run_cmd(shlex.split(command), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    same_numbers(whole, only_metrics(log_root))


KILL_AT_LAST_CKPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from helpers import compose_cfg
from lightrec.training import fit as train, resume

real = resume.AtomicCheckpointIO.save_checkpoint

def save_then_die(self, checkpoint, path, storage_options=None):
    real(self, checkpoint, path, storage_options)
    if Path(path).name == "last.ckpt" and checkpoint["epoch"] == {epoch}:
        os.kill(os.getpid(), signal.SIGKILL)  # the moment last.ckpt is in place

resume.AtomicCheckpointIO.save_checkpoint = save_then_die
train.fit(compose_cfg("multi_vae_v2", {overrides!r}, Path({run_dir!r})))
"""


def test_a_kill_the_moment_last_ckpt_is_written_resumes_to_the_same_numbers(tmp_path):
    """Issue 40.15: last.ckpt, a resume's starting point, is written after every other
    checkpoint of its epoch; written first, a kill between it and best.ckpt (at the best
    epoch) resumed to a stale best checkpoint, with another best epoch and other metrics."""
    csv = tmp_path / "log.csv"
    make_log(n_users=40, n_items=80, seed=5).sample(frac=1.0, random_state=1).to_csv(
        csv, index=False
    )
    ov = [*cpu_overrides(tmp_path, csv), "trainer.max_epochs=12", "early_stopping.patience=50"]
    whole = train.fit(compose_cfg("multi_vae_v2", ov, tmp_path / "whole")).metrics
    best = whole["best_epoch"]
    assert best < 11  # later epochs are worse: a stale best.ckpt would show
    cut = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "cut"
    cut.mkdir(parents=True)
    code = KILL_AT_LAST_CKPT.format(
        tests=str(ROOT / "tests"), epoch=best, overrides=ov, run_dir=str(cut)
    )
    p = run_cmd([sys.executable, "-c", code], cwd=tmp_path)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    resumed = train.fit(compose_cfg("multi_vae_v2", [*ov, f"resume={cut}"], cut)).metrics
    same_numbers(whole, resumed)


def test_a_signal_whose_interrupt_was_swallowed_still_stops_the_run():
    """A signal's KeyboardInterrupt can land in a finalizer, where Python swallows it; the
    next batch or epoch then raises it again (a search's SIGTERM once waited out a whole
    trial that way)."""
    from lightrec.training import resume

    stop = resume.StopOnSignal()
    stop.on_train_batch_start()  # nothing received: nothing happens
    resume._PENDING.append("SIGTERM")
    try:
        for hook in (stop.on_train_batch_start, stop.on_train_epoch_start):
            with pytest.raises(KeyboardInterrupt):
                hook()
    finally:
        resume._PENDING.clear()


def test_a_signal_landing_in_a_checkpoint_write_is_still_the_interruption(tmp_path):
    """CI once saw a search's SIGTERM land inside torch.save: the zip writer turned the
    handler's KeyboardInterrupt into its own RuntimeError ("unexpected pos"), and the trial
    exited 1 instead of being interrupted (143). After a signal, whatever its raise became
    is the interruption; without one, an error is the error."""
    from lightrec.training.resume import on_signals
    from lightrec.utils.path_utils import RunDir

    run = RunDir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)

    def writer_that_masks_the_interrupt() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # lands here, mid-"write"
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    with pytest.raises(RunInterrupted, match="SIGTERM"), on_signals(run):
        writer_that_masks_the_interrupt()
    with pytest.raises(RuntimeError, match="a genuine error"), on_signals(run):
        raise RuntimeError("a genuine error")
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
