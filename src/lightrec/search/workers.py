"""The processes of a search on one machine: each trial records its worker (host, pid and the
process's start time), a worker that is gone has its running trial marked failed, and
``search.workers`` processes share one study with the signals forwarded to them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import optuna
import psutil
import torch
from optuna.trial import TrialState

from lightrec.errors import LightrecError
from lightrec.utils.console import say

WORKER_ENV = "LIGHTREC_SEARCH_WORKER"  # set in the processes search.workers starts


class SearchInterrupted(Exception):
    """A signal stopped the search during a trial; the trial is marked failed."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"{signal_name} received: search stopped")
        self.signal_name = signal_name
        self.exit_code = exit_code


def machine() -> str:
    """This process's machine and pid namespace: the host name, the boot id and the pid
    namespace's inode where the system has them. Containers that share a host name (or
    one host's containers, each with its own pids) are told apart: a pid is only looked up
    where it means the same process."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip())
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return " ".join(parts)


def me() -> dict[str, Any]:
    """This process as a trial records its worker: its machine (:func:`machine`), pid and
    start time (a pid is reused; a pid with its start time is not)."""
    return {
        "host": machine(),
        "pid": os.getpid(),
        "started": round(psutil.Process().create_time(), 2),
    }


def alive(worker: dict[str, Any]) -> bool:
    """Whether the worker a trial recorded still runs on this machine: its pid exists and
    the process there started when the worker did (a trial recorded before the start time
    was kept: the pid alone)."""
    try:
        process = psutil.Process(int(worker.get("pid", -1)))
        started = round(process.create_time(), 2)
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True
    return "started" not in worker or abs(started - float(worker["started"])) < 0.05


def fail_dead_trials(study: optuna.Study) -> None:
    """Mark failed the running trials whose worker, on this machine, is gone (killed), and
    queue their values again, so the next trial tries what the cut-off one was trying (on
    another machine a trial is failed when that machine resumes)."""
    host = machine()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("host") == host and not alive(worker):
            study.tell(t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            say(f"search: trial {t.number} was interrupted (its worker is gone): marked failed")


def launch(argv: list[str], n: int, storage: str) -> None:
    """``n`` processes of ``argv`` on one study, each with an equal share of the CPU threads
    and, with GPUs, one GPU each (round robin); SIGTERM and Ctrl-C reach every one."""
    gpus = _gpu_count()
    procs = []
    for i in range(n):
        env = {**os.environ, WORKER_ENV: str(i)}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen(argv, env=env))
    say(f"search: {n} workers on {storage} (pids {', '.join(str(p.pid) for p in procs)})")

    def forward(signum: int, frame: Any) -> None:  # SIGTERM to this process alone
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # Ctrl-C reaches every worker of the terminal's process group; one signalled
        # alone (kill -INT) hears it from here after a moment
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
        codes = [p.wait() for p in procs]
        raise SearchInterrupted("SIGINT", 128 + signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if any(codes):
        # a worker stopped by a signal: 128 + its number, or minus it when nothing caught it
        interrupted = [128 - c if c < 0 else c for c in codes if c < 0 or c > 128]
        if interrupted:
            raise SearchInterrupted(signal.Signals(interrupted[0] - 128).name, interrupted[0])
        raise LightrecError(f"a search worker failed (exit codes {codes}); see its lines above")


def stops_on_sigterm() -> Callable[[int, Any], None]:
    """The SIGTERM handler between trainings (training has its own): the search stops."""

    def handler(signum: int, frame: Any) -> None:
        raise SearchInterrupted("SIGTERM", 128 + signum)

    return handler


def is_worker() -> bool:
    """Whether this process is one of the workers another search process started."""
    return WORKER_ENV in os.environ


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
