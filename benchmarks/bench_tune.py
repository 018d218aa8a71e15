"""The cost of EASE's in-run tuning against one fit, in time and peak memory (issue 39).

``python benchmarks/bench_tune.py --items 3000 7000 23000`` writes a synthetic log per
catalogue size (``synth.py``'s shape; ``--rows``, ``--users``), then trains EASE on it twice,
each alone in its own process with its peak resident memory sampled: with the shipped
``tune:`` grid (the Gram matrix once in float32, a float32 candidate per lambda the search
needs), and with the chosen lambda given (no tuning: one float64 fit). Prints a row per size:
the tuning's seconds and lambdas tried, one fit's seconds, their ratio, and both peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from synth import write_log


def peak_run(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``argv``; return (seconds, peak RSS in GB of it and its children, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read() if p.stdout else ""))
    reader.start()
    proc = psutil.Process(p.pid)
    while p.poll() is None:
        try:
            rss = sum(q.memory_info().rss for q in [proc, *proc.children(recursive=True)])
            peak = max(peak, rss / 1e9)
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{''.join(out)[-3000:]}")
    return time.perf_counter() - t0, peak, "".join(out)


def metrics_of(root: Path) -> dict:
    (path,) = root.rglob("metrics.json")
    return json.loads(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, nargs="+", default=[3_000, 7_000, 23_000])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    a = ap.parse_args()
    print("| items | tuning | lambdas tried | one fit | tuning / fit | peak tuned | peak one fit |")
    print("|---|---|---|---|---|---|---|")
    for n_items in a.items:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            log = write_log(work / "log.csv", a.rows, users=a.users, n_items=n_items)
            base = [sys.executable, "-m", "lightrec", "train", "ease", f"data.path={log}"]
            base += [f"data.cache_dir={work / 'cache'}", "refit=false", "trainer.accelerator=cpu"]
            _, peak_t, _ = peak_run([*base, f"paths.log_root={work / 'tuned'}"], work)
            tuned = metrics_of(work / "tuned")["tuned"]
            lam = tuned["chosen"]["lam"]
            one = [*base, f"paths.log_root={work / 'one'}", f"model.lam={lam}"]
            _, peak_f, _ = peak_run(one, work)
            fit_s = metrics_of(work / "one")["fit_time_s"]
            print(
                f"| {n_items:,} | {tuned['seconds']:.1f} s | {len(tuned['tried'])} | {fit_s:.1f} s "
                f"| {tuned['seconds'] / fit_s:.2f}x | {peak_t:.2f} GB | {peak_f:.2f} GB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
