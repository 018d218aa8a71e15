"""What every model costs on one log: an epoch, the whole training command, predict, peak memory.

    python benchmarks/run_budgets.py --data benchmarks/.work/comp_5150000.csv \\
        --out benchmarks/.work/budgets-comp.md [--only ease,sasrec:sampled_softmax] [overrides...]

Each model trains one epoch (``trainer.max_epochs=1 refit=false``; a closed-form model's
epoch is its fit), then predicts for every user, each command under ``/usr/bin/time`` for its
wall time and peak resident memory. Run it alone: two torch processes on two cores thrash.
Extra arguments are Hydra overrides given to every training (e.g. ``recipe=competition``).
The table goes to stdout and to ``--out`` (docs/history/BENCHMARKS-log.md, "What every model
costs").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# name shown -> (config, overrides). SASRec once per loss; BERT4Rec with its default loss.
MODELS: dict[str, tuple[str, list[str]]] = {
    "pop": ("pop", []),
    "ease": ("ease", []),
    "ease:float32": ("ease", ["model.dtype=float32"]),
    "admm_slim": ("admm_slim", []),
    "item_knn": ("item_knn", []),
    "rp3beta": ("rp3beta", []),
    "higher_order_ease": ("higher_order_ease", []),
    "multi_vae_v2": ("multi_vae_v2", []),
    "multi_vae_v3": ("multi_vae_v3", []),
    "recvae": ("recvae", []),
    "bert4rec_v2": ("bert4rec_v2", []),
    "sasrec:ce": ("sasrec", ["model.loss=ce"]),
    "sasrec:sampled_softmax": ("sasrec", ["model.loss=sampled_softmax"]),
}
EPOCH = re.compile(r"^epoch 1/\d+ .*?([\d.]+) s$", re.M)
FINISHED = re.compile(r"finished in ([\d.]+) s.*run folder (\S+)$", re.M)


def timed(cmd: list[str]) -> tuple[str, float, float]:
    """(output, wall seconds, peak GB) of one command; exits with its output when it fails."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", t.name, *cmd],
            capture_output=True,
            text=True,
        )
        out = done.stdout + done.stderr
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{out[-3000:]}")
        wall, kb = t.read().split()[-2:]
    return out, float(wall), int(kb) / 1024**2


def measure(name: str, data: str, root: str, extra: list[str], with_predict: bool) -> str:
    config, overrides = MODELS[name]
    train = [sys.executable, "-m", "lightrec", "train", config, f"data.path={data}"]
    train += [
        "trainer.max_epochs=1",
        "++trainer.min_epochs=1",
        "++trainer.check_val_every_n_epoch=1",
    ]
    train += ["refit=false", "progress=lines", f"paths.log_root={root}"]
    out, wall, peak = timed(train + overrides + extra)
    fit = FINISHED.search(out)
    if fit is None:
        sys.exit(f"{name}: no 'finished' line in its output:\n{out[-3000:]}")
    epoch = EPOCH.search(out)
    predicted = "| - | - |"
    if with_predict:
        predict = [sys.executable, "-m", "lightrec", "predict", config, f"run_dir={fit.group(2)}"]
        _, p_wall, p_peak = timed(predict + [f"paths.predict_log_root={root}/predict"])
        predicted = f"| {p_wall:.0f} s | {p_peak:.2f} GB |"
    epoch_s = f"{float(epoch.group(1)):.1f} s" if epoch else "-"
    return (
        f"| {name} | {epoch_s} | {float(fit.group(1)):.0f} s | {wall:.0f} s | {peak:.2f} GB "
        + predicted
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="the interaction log (CSV)")
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--only", help=f"comma-separated, of: {','.join(MODELS)}")
    ap.add_argument("--root", help="run folders (default: a temporary folder)")
    ap.add_argument("--no-predict", action="store_true", help="train only")
    a, extra = ap.parse_known_args()
    names = a.only.split(",") if a.only else list(MODELS)
    if unknown := [n for n in names if n not in MODELS]:
        ap.error(f"--only: no model {unknown[0]!r} (known: {', '.join(MODELS)})")
    head = (
        "| model | epoch | fit (train + validation) | whole train command | train peak "
        "| predict, every user | predict peak |\n|---|---|---|---|---|---|---|"
    )
    print(head, flush=True)
    rows = [head]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(measure(name, a.data, a.root or tmp, extra, not a.no_predict))
            print(rows[-1], flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
