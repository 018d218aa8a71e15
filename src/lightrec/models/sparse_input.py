"""An autoencoder's first layer, read from the non-zeros of its input.

A history row holds a few dozen items of thousands. The dense product of a (B, I) row block
with the (I, H) first layer spends nearly all its work on zeros, and input dropout draws a
random number for every zero too: on the CPU at the competition's size (6,807 items, 2.4%
of a row non-zero) those two made most of a MultiVAE step (docs/BENCHMARKS.md).

A batch that comes as a CSR slice (:class:`lightrec.data.batches.CSRCollate`, every batch
built on the host) keeps its slice here: dropout draws one number per non-zero, and the layer
sums the weight columns of each row's kept items (``embedding_bag``). A batch of dense rows
(a device-resident matrix, an exported scorer) takes the dense product as before. Both give
the same function of the input and the same dropout law; the draws themselves differ, so a
seed's run is not the digit-for-digit run of the dense path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightrec.data.batches import history_rows


class Histories(NamedTuple):
    """A batch of binary history rows: ``dense`` (B, I) (the losses read it), and the CSR
    slice it was built from (``indptr`` (B + 1,), ``indices``) when it came as one."""

    dense: torch.Tensor
    indptr: torch.Tensor | None = None
    indices: torch.Tensor | None = None


def histories(batch: dict[str, torch.Tensor], n_items: int) -> Histories:
    """The batch's histories (see :func:`lightrec.data.batches.history_rows`), with their CSR
    slice when the batch carries one."""
    dense = history_rows(batch, n_items)
    if "input_indptr" not in batch:
        return Histories(dense)
    return Histories(dense, batch["input_indptr"], batch["input_indices"])


def as_histories(x: torch.Tensor | Histories) -> Histories:
    """``x`` as :class:`Histories`: a plain tensor is a batch of dense rows."""
    return x if isinstance(x, Histories) else Histories(x)


def item_table(layer: nn.Linear) -> torch.Tensor:
    """The (H, I) weight as an (I, H) table of item rows: a contiguous copy, far cheaper than
    the dense product it replaces. Outside autograd (RecVAE's frozen prior encoder, its
    encoder during decoder passes, every validation batch) the copy is kept until the
    weight changes (an optimiser step or a load bumps its version): at a 1M-row log's size
    these copies were a third of a RecVAE pass (benchmarks/bench_recvae.py)."""
    weight = layer.weight
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight.t().contiguous()  # part of the graph: a new copy each step
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
    cached = getattr(layer, "_item_table", None)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, weight.t().contiguous())
        layer._item_table = cached  # type: ignore[assignment]
    return cached[1]


def input_layer(
    layer: nn.Module, x: Histories, dropout: float, normalise_first: bool
) -> torch.Tensor:
    """``layer(h)`` where ``h`` is ``x`` after input dropout (rate ``dropout``; 0 turns it
    off) and L2 normalisation of each row: normalised first when ``normalise_first`` (so
    dropout's ``1/(1-p)`` rescaling survives, RecVAE), else dropped out first (every row the
    layer sees has unit length, MultiVAE). Rows left empty give the bias alone."""
    if x.indptr is None or x.indices is None:  # dense rows: one matrix product
        h = x.dense
        if normalise_first:
            h = F.dropout(F.normalize(h, dim=1), p=dropout, training=dropout > 0)
        else:
            h = F.normalize(F.dropout(h, p=dropout, training=dropout > 0), dim=1)
        return layer(h)
    indptr, indices = x.indptr, x.indices
    counts = indptr[1:] - indptr[:-1]  # (B,) items per row
    row = torch.repeat_interleave(
        torch.arange(counts.numel(), device=indptr.device), counts, output_size=indices.numel()
    )  # (nnz,) the row of each non-zero
    assert isinstance(layer, nn.Linear)
    table = item_table(layer)
    dtype, device = table.dtype, indices.device
    n = indices.numel()
    keep = (  # (nnz,) 1 for a kept non-zero, 0 for a dropped one
        (torch.rand(n, dtype=dtype, device=device) >= dropout).to(dtype)
        if dropout > 0
        else torch.ones(n, dtype=dtype, device=device)
    )
    if normalise_first:
        values = counts.clamp(min=1).to(dtype).rsqrt()[row] * keep / (1.0 - dropout)
    else:
        kept = torch.zeros(counts.numel(), dtype=dtype, device=device).index_add_(0, row, keep)
        values = kept.clamp(min=1).rsqrt()[row] * keep
    out = F.embedding_bag(
        indices, table, indptr, mode="sum", per_sample_weights=values, include_last_offset=True
    )
    return out if layer.bias is None else out + layer.bias
