"""Split strategies: small pure functions on arrays.

Every function takes the encoded interactions **sorted by user, then time** (ties in file
order), as the data module stores them, and returns one label per row:
``TRAIN`` (0), ``VALID`` (1) or ``TEST`` (2). A user keeps at least one training row:
a user with too few rows to hold anything out trains on all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from lightrec.errors import LightrecError

TRAIN, VALID, TEST = 0, 1, 2


def _positions(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its index from the start of its user's block, and the block's length."""
    n = len(user)
    counts = np.bincount(user) if n else np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    pos = np.arange(n) - starts[user]
    return pos, counts[user]


def leave_one_out(user: np.ndarray, holdout: str) -> np.ndarray:
    """Hold out each user's latest item(s).

    ``holdout="valid"``: the last item is validation. ``holdout="valid_and_test"``: the last
    item is test and the second-to-last validation. Users with too few rows keep all of
    them for training.

    >>> user = np.array([0, 0, 0, 1, 1, 2])   # sorted by user, then time
    >>> leave_one_out(user, "valid")
    array([0, 0, 1, 0, 1, 0], dtype=int8)
    >>> leave_one_out(user, "valid_and_test")
    array([0, 1, 2, 0, 0, 0], dtype=int8)
    """
    pos, length = _positions(user)
    from_end = length - 1 - pos  # 0 for the latest row of each user
    split = np.zeros(len(user), dtype=np.int8)
    if holdout == "valid":
        split[(from_end == 0) & (length >= 2)] = VALID
    else:  # valid_and_test (SplitSpec validates the choice)
        enough = length >= 3
        split[(from_end == 0) & enough] = TEST
        split[(from_end == 1) & enough] = VALID
    return split


def random_holdout(user: np.ndarray, valid_ratio: float, seed: int) -> np.ndarray:
    """Hold out ``floor(valid_ratio * n)`` random rows of each user (at least one when the
    user has two or more rows, never all of them) for validation; seeded.

    >>> user = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    >>> split = random_holdout(user, 0.4, seed=0)
    >>> [int((split[user == u] == VALID).sum()) for u in range(3)]
    [2, 1, 0]
    >>> bool((random_holdout(user, 0.4, seed=0) == split).all())   # same seed, same split
    True
    """
    n = len(user)  # (SplitSpec validates valid_ratio)
    pos, length = _positions(user)
    k = np.minimum(np.maximum(np.floor(valid_ratio * length), 1), length - 1)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), user))  # shuffle within each user's block
    rank = np.empty(n, dtype=np.int64)
    rank[order] = pos  # pos is the same per block in sorted and in shuffled order
    split = np.zeros(n, dtype=np.int8)
    split[rank < k] = VALID
    return split


def last_n_random_m(user: np.ndarray, n: int, m: int, seed: int) -> np.ndarray:
    """Mask of the rows held out competition-style: each user's last ``n`` rows plus ``m``
    random earlier ones, seeded; a user always keeps at least one row.

    >>> user = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])   # sorted by user, then time
    >>> mask = last_n_random_m(user, n=2, m=1, seed=0)
    >>> mask[:6].tolist()[-2:], int(mask[:4].sum())        # user 0: last 2, one of the first 4
    ([True, True], 1)
    >>> mask[6:9].tolist(), mask[9:].tolist()              # user 1 keeps its first row
    ([False, True, True], [False])
    """
    pos, length = _positions(user)
    from_end = length - 1 - pos
    n_u = np.minimum(n, length - 1)
    last = from_end < n_u
    m_u = np.minimum(m, length - 1 - n_u)
    key = np.random.default_rng(seed).random(len(user))
    key[last] = 2.0  # the last rows sort after every earlier one
    order = np.lexsort((key, user))
    rank = np.empty(len(user), dtype=np.int64)
    rank[order] = pos  # rank of each row among its user's rows, earlier ones first
    return last | (~last & (rank < m_u))


def no_holdout(user: np.ndarray) -> np.ndarray:
    """Everything trains (the final fit before a submission).

    >>> no_holdout(np.array([0, 0, 1]))
    array([0, 0, 0], dtype=int8)
    """
    return np.zeros(len(user), dtype=np.int8)


def competition_split(user: np.ndarray, holdout: str, n: int, m: int, seed: int) -> np.ndarray:
    """``last_n_random_m`` as labels: the held-out set validates (``holdout="valid"``), or
    tests, with a second set drawn the same way from the rest validating
    (``"valid_and_test"``).

    >>> competition_split(np.array([0] * 6), "valid_and_test", n=1, m=1, seed=0).tolist()
    [0, 0, 1, 2, 1, 2]
    """
    split = np.zeros(len(user), dtype=np.int8)
    if holdout == "valid":
        split[last_n_random_m(user, n, m, seed)] = VALID
        return split
    test = last_n_random_m(user, n, m, seed)
    split[test] = TEST
    rest = np.flatnonzero(~test)
    split[rest[last_n_random_m(user[rest], n, m, seed + 1)]] = VALID
    return split


Strategy = Literal["leave_one_out", "last_n_random_m", "random", "none"]
Holdout = Literal["valid", "valid_and_test"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
HOLDOUTS: tuple[str, ...] = get_args(Holdout)


@dataclass(frozen=True)
class SplitSpec:
    """Every parameter of a split, validated once; the one value the data module, the cache
    key, the report and the refit stage share. Users set the flat ``data.*`` keys.

    >>> spec = SplitSpec("leave_one_out", "valid_and_test", 0.2, 42, 1, 2)
    >>> spec.describe()
    'leave_one_out (valid_and_test)'
    >>> spec.labels(np.array([0, 0, 0, 1])).tolist()
    [0, 1, 2, 0]
    >>> SplitSpec("random", "valid", 0.3, 7, 1, 2).cache_params()
    {'split_strategy': 'random', 'valid_ratio': 0.3, 'split_seed': 7}
    """

    strategy: str
    holdout: str
    valid_ratio: float
    seed: int
    last_n: int
    random_m: int

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise LightrecError(
                f"data.split_strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)}"
            )
        if self.holdout not in HOLDOUTS:
            raise LightrecError(
                f"data.holdout={self.holdout!r} is not one of {', '.join(HOLDOUTS)}"
            )
        if self.strategy == "random" and not 0.0 < self.valid_ratio < 1.0:
            raise LightrecError(f"data.valid_ratio={self.valid_ratio} must be in (0, 1)")
        if self.strategy == "last_n_random_m" and (self.last_n < 1 or self.random_m < 0):
            raise LightrecError(
                f"data.last_n={self.last_n} must be at least 1 and "
                f"data.random_m={self.random_m} at least 0"
            )

    @classmethod
    def from_data_config(cls, data: Mapping[str, Any]) -> SplitSpec:
        """From the flat ``data.*`` keys of a config (or a run's config.yaml)."""
        return cls(
            strategy=data["split_strategy"],
            holdout=data["holdout"],
            valid_ratio=float(data["valid_ratio"]),
            seed=int(data["split_seed"]),
            last_n=int(data["last_n"]),
            random_m=int(data["random_m"]),
        )

    def cache_params(self) -> dict[str, Any]:
        """The parameters that shape this strategy's result (and only those): part of the
        cache key, so an unused parameter never causes a rebuild."""
        params: dict[str, Any] = {"split_strategy": self.strategy}
        if self.strategy in ("leave_one_out", "last_n_random_m"):
            params["holdout"] = self.holdout
        if self.strategy == "last_n_random_m":
            params.update(last_n=self.last_n, random_m=self.random_m, split_seed=self.seed)
        if self.strategy == "random":
            params.update(valid_ratio=self.valid_ratio, split_seed=self.seed)
        return params

    def describe(self) -> str:
        """The protocol in words, for reports and logs."""
        if self.strategy == "leave_one_out":
            return f"leave_one_out ({self.holdout})"
        if self.strategy == "last_n_random_m":
            return (
                f"last_n_random_m (last {self.last_n} + {self.random_m} random, "
                f"seed {self.seed}; {self.holdout})"
            )
        if self.strategy == "random":
            return f"random ({self.valid_ratio:g} of each user, seed {self.seed})"
        return "none (no held-out items)"

    def labels(self, user: np.ndarray) -> np.ndarray:
        """One split code per row, for rows sorted by user, then time."""
        if self.strategy == "leave_one_out":
            return leave_one_out(user, self.holdout)
        if self.strategy == "last_n_random_m":
            return competition_split(user, self.holdout, self.last_n, self.random_m, self.seed)
        if self.strategy == "random":
            return random_holdout(user, self.valid_ratio, self.seed)
        return no_holdout(user)
