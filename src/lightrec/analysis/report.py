"""Compare every model from its run folders: ``python -m lightrec report``.

Reads the finished runs under ``--log-root`` (default: ``paths.log_root``), groups them by
evaluation protocol (data file, split strategy, holdout), keeps the best run of each model
config by its validation metric (the config's ``checkpoint.monitor``: test numbers never
choose), and prints a markdown table. Nothing is written unless asked: ``--out FILE``
writes the table into FILE, replacing the text between ``<!-- report:begin -->`` and
``<!-- report:end -->`` (added at the end when the markers are missing, so hand-written
parts stay), with a PNG bar chart and the validation curves beside it; ``--docs`` is
``--out docs/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from lightrec.data.splits import SplitSpec
from lightrec.errors import LightrecError
from lightrec.utils.console import refuse
from lightrec.utils.io import atomic_write
from lightrec.utils.path_utils import FINISHED_MARKER, RunDir, default_log_root
from lightrec.utils.untrusted import read_yaml

log = logging.getLogger(__name__)

BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


@dataclass
class Run:
    path: Path
    config: str
    protocol: str
    monitor: str
    metrics: dict

    @property
    def selection_score(self) -> float:
        return float(self.metrics.get("val", {}).get(self.monitor.removeprefix("val/"), -1.0))


def load_runs(log_root: Path) -> list[Run]:
    runs = []
    for mark in sorted(log_root.rglob(FINISHED_MARKER)):
        run = RunDir(mark.parent)
        if not run.config.is_file():
            continue
        try:
            cfg = read_yaml(run.config, f"run folder {run.root}: config.yaml")
        except LightrecError as e:  # someone else's folder: left out of the table, said
            log.warning("%s", e)
            continue
        data = cfg["data"]
        source = Path(data["path"]).name if data["path"] else "MovieLens-100K (built-in)"
        protocol = f"{source}, {SplitSpec.from_data_config(data).describe()}"
        metrics = json.loads(run.metrics.read_text())
        runs.append(
            Run(run.root, cfg["model_name"], protocol, cfg["checkpoint"]["monitor"], metrics)
        )
    return runs


def best_per_config(runs: list[Run]) -> dict[str, list[Run]]:
    """protocol -> best run of each config (by validation), in a stable order."""
    best: dict[tuple[str, str], Run] = {}
    for r in runs:
        key = (r.protocol, r.config)
        if key not in best or r.selection_score > best[key].selection_score:
            best[key] = r
    out: dict[str, list[Run]] = {}
    for (protocol, _), r in sorted(best.items()):
        out.setdefault(protocol, []).append(r)
    return out


def _fmt(d: dict, key: str) -> str:
    return f"{d[key]:.4f}" if key in d else ""


def markdown(groups: dict[str, list[Run]], root: Path) -> str:
    """One table per protocol. The test columns come in two groups, each one condition for
    every row: the selected model (trained without its validation rows), and its refit
    (trained again on training + validation rows); a run without a refit leaves those empty."""
    lines = []
    for protocol, runs in groups.items():
        lines += [
            f"### {protocol}",
            "",
            "| config | val Recall@10 | val NDCG@10 | test Recall@10 | test NDCG@10 | "
            "test coverage@10 | refit test Recall@10 | refit test NDCG@10 | "
            "best epoch / epochs | fit s | refit s | run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(runs, key=lambda r: r.selection_score):
            m, val, test = r.metrics, r.metrics.get("val", {}), r.metrics.get("test", {})
            refit = m.get("refit") or {}
            refit_test = refit.get("test", {})
            try:
                where = r.path.relative_to(root)
            except ValueError:
                where = r.path
            refit_s = f"{refit['fit_time_s']:.1f}" if "fit_time_s" in refit else ""
            lines.append(
                f"| {r.config} | {_fmt(val, 'recall@10')} | {_fmt(val, 'ndcg@10')} | "
                f"{_fmt(test, 'recall@10')} | {_fmt(test, 'ndcg@10')} | "
                f"{_fmt(test, 'coverage@10')} | {_fmt(refit_test, 'recall@10')} | "
                f"{_fmt(refit_test, 'ndcg@10')} | {m['best_epoch']} / {m['epochs_trained']} | "
                f"{m['fit_time_s']:.1f} | {refit_s} | `{where}` |"
            )
        lines.append("")
    return "\n".join(lines)


def bar_chart(groups: dict[str, list[Run]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups)), squeeze=False)
    for ax, (protocol, runs) in zip(axes[:, 0], groups.items(), strict=True):
        runs = sorted(runs, key=lambda r: r.selection_score)
        part = "test" if all("test" in r.metrics for r in runs) else "val"
        names = [r.config for r in runs]
        x = range(len(runs))
        for offset, metric in ((-0.2, "recall@10"), (0.2, "ndcg@10")):
            values = [r.metrics[part][metric] for r in runs]
            bars = ax.bar([i + offset for i in x], values, width=0.4, label=f"{part} {metric}")
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(list(x), names)
        ax.set_title(protocol, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def validation_curve(run: Run) -> tuple[list[int], list[float]]:
    """(epochs, values) of the run's monitored validation metric, from its TensorBoard events
    (tensorboard's own reader); empty for a closed-form run, which has no epochs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = RunDir(run.path).tensorboard_dir
    if not events.is_dir():
        return [], []
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if run.monitor not in tags or "epoch" not in tags:
        return [], []
    epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")}
    points = sorted(
        {
            epoch_at[e.step] + 1: e.value for e in acc.Scalars(run.monitor) if e.step in epoch_at
        }.items()
    )
    return [p[0] for p in points], [p[1] for p in points]


def curves_chart(groups: dict[str, list[Run]], png: Path) -> None:
    """Per-epoch validation curves of each config's best run, one panel per protocol;
    closed-form models (one fit, no epochs) as dashed levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.6 * len(groups)), squeeze=False)
    for ax, (protocol, runs) in zip(axes[:, 0], groups.items(), strict=True):
        monitor = runs[0].monitor
        for r in sorted(runs, key=lambda r: -r.selection_score):
            epochs, values = validation_curve(r)
            if r.metrics.get("epochs_trained"):
                ax.plot(epochs, values, label=r.config, lw=1.2)
            elif monitor.removeprefix("val/") in r.metrics.get("val", {}):
                ax.axhline(r.selection_score, ls="--", lw=1, color="grey")
                ax.annotate(r.config, (0, r.selection_score), fontsize=7, va="bottom")
        ax.set_xlabel("epoch")
        ax.set_ylabel(monitor)
        ax.set_title(protocol, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def table(log_root: Path) -> tuple[str, dict[str, list[Run]]]:
    """The markdown table of the best run of each config, and those runs by protocol."""
    runs = load_runs(log_root)
    if not runs:
        raise LightrecError(f"no finished runs under {log_root}: train some models first")
    groups = best_per_config(runs)
    return markdown(groups, log_root), groups


def write_report(log_root: Path, out: Path, png: Path, curves_png: Path | None = None) -> str:
    body, groups = table(log_root)
    bar_chart(groups, png)
    curves_png = curves_png or png.with_name(f"{png.stem}_curves{png.suffix}")
    curves_chart(groups, curves_png)

    def relative(path: Path) -> Path:
        try:
            return path.relative_to(out.parent)
        except ValueError:
            return path

    block = (
        f"{BEGIN}\n\n{body}\n![best run per config]({relative(png)})\n\n"
        f"![validation curves of those runs]({relative(curves_png)})\n\n{END}"
    )
    text = out.read_text() if out.exists() else "# Results\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(out, lambda f: print(text, end="", file=f))
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lightrec report", description=__doc__)
    ap.add_argument("--log-root", default=default_log_root())
    ap.add_argument("--out", help="write the table into this markdown file, charts beside it")
    ap.add_argument("--docs", action="store_true", help="the same as --out docs/RESULTS.md")
    ap.add_argument("--png", help="the bar chart (default: results.png beside --out)")
    ap.add_argument("--curves-png", help="default: <png>_curves.png beside --png")
    a = ap.parse_args(argv)
    out = Path("docs/RESULTS.md") if a.docs else Path(a.out) if a.out else None
    try:
        if out is None:
            print(table(Path(a.log_root))[0])
            return 0
        png = Path(a.png) if a.png else out.with_name("results.png")
        curves = Path(a.curves_png) if a.curves_png else None
        print(write_report(Path(a.log_root), out, png, curves))
    except LightrecError as e:
        return refuse(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
