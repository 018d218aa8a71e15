"""The token scheme of the sequence views, and how a user's history becomes a sequence.

One owner for the ids every sequence model, the data module, predict and the notebooks
share: ``0`` pads, item index ``i`` is token ``i + 1``, and ``num_items + 1`` is [MASK]
(used by BERT4Rec). Sequences are left-padded, so a user's most recent item is always in
the last column.
"""

from __future__ import annotations

import numpy as np
import torch

PAD = 0


def to_tokens(items: np.ndarray) -> np.ndarray:
    """Item indices -> tokens.

    >>> to_tokens(np.array([0, 5])).tolist()
    [1, 6]
    """
    return items.astype(np.int64) + 1


def to_items(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens of real items -> item indices (the targets of a softmax over the catalogue)."""
    return tokens - 1


def mask_token(num_items: int) -> int:
    """The [MASK] token: one past the last item."""
    return num_items + 1


def vocab_size(num_items: int) -> int:
    """Rows of a token embedding table: pad, the items, [MASK]."""
    return num_items + 2


def item_rows(num_items: int) -> slice:
    """The rows of a token table that hold the real items, in item order."""
    return slice(1, num_items + 1)


def sequence_matrix(
    user: np.ndarray, item: np.ndarray, mask: np.ndarray, n_users: int, max_len: int
) -> np.ndarray:
    """Left-padded ``(n_users, max_len)`` tokens of each user's most recent selected items.

    ``user`` must be sorted ascending with each user's rows in time order.

    >>> user, item = np.array([0, 0, 0, 1]), np.array([4, 5, 6, 7])
    >>> sequence_matrix(user, item, np.ones(4, bool), 2, 2).tolist()
    [[6, 7], [0, 8]]
    """
    u, i = user[mask], item[mask]
    counts = np.bincount(u, minlength=n_users)
    ends = np.cumsum(counts)
    from_end = ends[u] - 1 - np.arange(len(u))  # 0 for the latest row of each user
    keep = from_end < max_len
    seq = np.full((n_users, max_len), PAD, dtype=np.int64)
    seq[u[keep], max_len - 1 - from_end[keep]] = to_tokens(i[keep])
    return seq


def append_mask(seq: torch.Tensor, num_items: int) -> torch.Tensor:
    """The most recent ``L - 1`` tokens of each row, then [MASK]: what BERT4Rec reads to
    predict the next item.

    >>> append_mask(torch.tensor([[0, 3, 4], [5, 6, 7]]), num_items=9).tolist()
    [[3, 4, 10], [6, 7, 10]]
    """
    mask = torch.full_like(seq[:, :1], mask_token(num_items))
    return torch.cat([seq[:, 1:], mask], dim=1)
