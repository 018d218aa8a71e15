"""Load test of ``python -m lightrec serve`` on loopback:
``python benchmarks/bench_serve.py RUN_DIR [--requests 3000] [--clients 4] [--k 10]
[--max-batch N] [--max-queue N] [--dates]``.

Starts the server on a finished run as a user does, sends ``--requests`` ``POST
/recommend`` requests from ``--clients`` concurrent clients (each a keep-alive HTTP
connection on its own thread), every body a real history of the run's data file (a random
user's items, in time order), and prints one JSON line: p50 / p99 latency, requests per
second, error responses (by status), and the server's resident memory after a warm-up and
at the end (memory flat: the two agree). Meanwhile a client polls ``GET /health`` every
20 ms: its p50 and p99 are printed too. ``--dates``: every body is a 10,000-item history with
a date written as text per item ("3 March 1995 4:05pm"), the slowest parsing a request can
ask for. ``--max-queue``: the server's bound on waiting requests (past it, 503s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from lightrec.serving.api import load_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bodies(run_dir: str, n: int, k: int, seed: int = 0) -> list[bytes]:
    """``n`` request bodies: histories of random users of the run's data file."""
    run = load_run(run_dir)
    users, items, times = run.history.rows()
    order = np.lexsort((times, users))
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(len(run.history.users) + 1))
    rng = np.random.default_rng(seed)
    ids = np.asarray(run.item_ids, dtype=object)
    out = []
    for u in rng.integers(0, len(run.history.users), n):
        history = ids[items[starts[u] : starts[u + 1]]].tolist()
        out.append(json.dumps({"items": history, "k": k}).encode())
    return out


def date_bodies(run_dir: str, n: int, k: int) -> list[bytes]:
    """``n`` bodies of 10,000 known items, each with a time written as a date in words."""
    ids = [str(i) for i in load_run(run_dir).item_ids]
    items = [ids[j % min(500, len(ids) - 20)] for j in range(10_000)]  # k still fits
    months = ["January", "March", "May", "July", "September", "November"]
    times = [
        f"{1 + j % 28} {months[j % 6]} {1990 + j % 9} {1 + j % 12}:{j % 60:02d}pm"
        for j in range(10_000)
    ]
    return [json.dumps({"items": items, "times": times, "k": k}).encode()] * n


def poll_health(port: int, latencies: list[float], stop: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - t)
        time.sleep(0.02)
    conn.close()


def client(port: int, work: list[bytes], latencies: list[float], errors: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    for body in work:
        t = time.perf_counter()
        conn.request("POST", "/recommend", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t)
        if response.status != 200:
            errors.append(response.status)
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-batch", type=int, help="the server's --max-batch (default: its own)")
    ap.add_argument("--max-queue", type=int, help="the server's --max-queue (default: its own)")
    ap.add_argument("--dates", action="store_true", help="10,000-item bodies with dates as text")
    a = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lightrec",
            "serve",
            a.run_dir,
            "--port",
            str(port),
            *([] if a.max_batch is None else ["--max-batch", str(a.max_batch)]),
            *([] if a.max_queue is None else ["--max-queue", str(a.max_queue)]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode})")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                health = json.loads(conn.getresponse().read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        work = bodies(a.run_dir, a.requests + 200, a.k)
        client(port, work[:200], [], [])  # warm-up
        if a.dates:
            work = work[:200] + date_bodies(a.run_dir, a.requests, a.k)
        rss_warm = rss_mb(server.pid)
        latencies: list[float] = []
        errors: list[int] = []
        shares = [work[200 + i :: a.clients] for i in range(a.clients)]
        threads = [
            threading.Thread(target=client, args=(port, share, latencies, errors))
            for share in shares
        ]
        health_ms: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_health, args=(port, health_ms, stop))
        poller.start()
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        stop.set()
        poller.join()
        hm = np.array(health_ms) * 1000
        ms = np.array(latencies) * 1000
        print(
            json.dumps(
                {
                    "model": health["model"],
                    "max_batch": a.max_batch,
                    "requests": len(latencies),
                    "clients": a.clients,
                    "p50_ms": round(float(np.percentile(ms, 50)), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1),
                    "requests_per_s": round(len(latencies) / wall, 1),
                    "errors": len(errors),
                    "errors_by_status": {str(c): errors.count(c) for c in sorted(set(errors))},
                    "health_p50_ms": round(float(np.percentile(hm, 50)), 1) if len(hm) else None,
                    "health_p99_ms": round(float(np.percentile(hm, 99)), 1) if len(hm) else None,
                    "rss_after_warmup_mb": round(rss_warm, 1),
                    "rss_end_mb": round(rss_mb(server.pid), 1),
                }
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
