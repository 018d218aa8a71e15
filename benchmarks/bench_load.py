"""Peak memory of loading a finished run's model, the way predict loads it, in a fresh
process: ``python benchmarks/bench_load.py RUN_DIR [--copy]`` prints the peak resident size
above the interpreter's start, in MB and in copies of the checkpoint's largest tensor.

``--copy`` loads as lightrec did before (build the model, then copy the checkpoint's weights
into it: two copies of B at once); without it, as it loads now (the model built on the meta
device and given the loaded tensors: one copy).
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from lightrec.runs.finished import FinishedRun, load_model
from lightrec.utils.path_utils import RunDir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--copy", action="store_true")
    a = ap.parse_args()
    run = FinishedRun.open(RunDir(__import__("pathlib").Path(a.run_dir)))
    ckpt = run.checkpoint()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if a.copy:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        from lightrec.config.check import target_class
        from lightrec.models.base import RecommenderModule

        cls = target_class(run.cfg.model, "model.", RecommenderModule)
        model = cls(**state["hyper_parameters"])
        model.load_state_dict(state["state_dict"])
        del state
    else:
        model = load_model(ckpt, run.cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    biggest = max(t.numel() * t.element_size() for t in model.state_dict().values())
    grown = (peak - start) * 1024
    print(
        json.dumps(
            {
                "way": "copy (before)" if a.copy else "assign (now)",
                "peak_above_start_mb": round(grown / 2**20, 1),
                "largest_tensor_mb": round(biggest / 2**20, 1),
                "copies": round(grown / biggest, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
