"""Where a RecVAE pass's time goes (issue 39): ``python benchmarks/bench_recvae.py --data LOG``.

Builds the shipped ``recvae`` config on ``--data`` (e.g. ``synth.py --rows 1000000 --users
6040 --n-items 3706``: a 1M-row log's shape) and times, in this process:

- an encoder pass and a decoder pass over every training user (the shipped batch size, or
  ``--batch-size``), each step's forward, backward and optimiser step;
- one validation pass (full ranking of every validation user);
- the encoder pass again under ``torch.profiler``: the operators that take most of it.

Prints one JSON line of seconds, then the profiler's table.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common import shipped_config
from lightrec.config.build import build_datamodule, build_model
from lightrec.models.recvae import RecVAE


def one_pass(model: RecVAE, loader, encoder: bool) -> float:
    opt_enc, opt_dec = model.configure_optimizers()
    opt = opt_enc if encoder else opt_dec
    model.train()
    t = time.perf_counter()
    for batch in loader:
        from lightrec.models.sparse_input import histories

        rows = histories(batch, model.num_items)
        loss, _, _ = model.loss(rows, model.dropout if encoder else 0.0, encoder_grad=encoder)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="a user,item,time CSV")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    overrides = [f"data.path={a.data}", "trainer.accelerator=cpu", "recipe=competition"]
    if a.batch_size:
        overrides.append(f"data.batch_size={a.batch_size}")
    cfg = shipped_config("recvae", overrides)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(cfg, dm.num_items)
    assert isinstance(model, RecVAE)
    loader = dm.train_dataloader()
    out = {
        "users": int(dm.train_csr.shape[0]),
        "items": int(dm.num_items),
        "batch_size": int(cfg.data.batch_size),
        "steps": len(loader),
        "encoder_pass_s": round(one_pass(model, loader, encoder=True), 2),
        "decoder_pass_s": round(one_pass(model, loader, encoder=False), 2),
    }
    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            model.score_batch(batch)
    out["validation_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out), flush=True)
    if a.no_profile:
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_pass(model, loader, encoder=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
