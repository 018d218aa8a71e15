"""The cost of EASE's in-run tuning against one fit, in time and peak memory (issue 39).

``python benchmarks/bench_tune.py --items 3000 7000 23000`` writes a synthetic log per
catalogue size (``synth.py``'s shape; ``--rows``, ``--users``), then trains EASE on it twice,
each alone in its own process with its peak resident memory sampled: with the shipped
``tune:`` grid (the Gram matrix once in float32, a float32 candidate per lambda the search
needs), and with the chosen lambda given (no tuning: one float64 fit). Prints a row per size:
the tuning's seconds and lambdas tried, one fit's seconds, their ratio, and both peaks.
A structureless log's best lambda is past the grid's top (popularity is all it holds), so
``--data LOG.csv ...`` measures real logs instead (``user,item,time``; e.g. the S3-Rec
authors' Amazon files through ``s3rec_data.py``), each split as the competition recipe
splits (``--last-n``, ``--random-m``).
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
    ap.add_argument("--data", type=Path, nargs="+", help="real logs instead of synthetic ones")
    ap.add_argument("--last-n", type=int, default=1)
    ap.add_argument("--random-m", type=int, default=2)
    a = ap.parse_args()
    print(
        "| log | items | tuning | lambdas tried | chosen | one fit | tuning / fit "
        "| peak tuned | peak one fit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for source in a.data or a.items:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if isinstance(source, Path):
                log, name = source.resolve(), source.parent.name or source.stem
                split = ["recipe=competition", f"data.last_n={a.last_n}"]
                split.append(f"data.random_m={a.random_m}")
            else:
                log = write_log(work / "log.csv", a.rows, users=a.users, n_items=source)
                name, split = "synthetic", []
            base = [sys.executable, "-m", "lightrec", "train", "ease", f"data.path={log}", *split]
            base += [f"data.cache_dir={work / 'cache'}", "refit=false", "trainer.accelerator=cpu"]
            _, peak_t, _ = peak_run([*base, f"paths.log_root={work / 'tuned'}"], work)
            tuned = metrics_of(work / "tuned")["tuned"]
            lam = tuned["chosen"]["lam"]
            one = [*base, f"paths.log_root={work / 'one'}", f"model.lam={lam}"]
            _, peak_f, _ = peak_run(one, work)
            one_run = metrics_of(work / "one")
            fit_s = one_run["fit_time_s"]
            maps = json.loads(next((work / "one").rglob("id_maps.json")).read_text())
            n_items = len(maps["item_ids"])
            shown = f"{lam:g}" + (" (between)" if tuned.get("interpolated") else "")
            print(
                f"| {name} | {n_items:,} | {tuned['seconds']:.1f} s | {len(tuned['tried'])} "
                f"| {shown} | {fit_s:.1f} s | {tuned['seconds'] / fit_s:.2f}x "
                f"| {peak_t:.2f} GB | {peak_f:.2f} GB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
