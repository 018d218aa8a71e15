"""The one list of warnings a user cannot act on; the entry and the tests silence them.

- a deprecation inside pytorch_lightning itself, printed on every run;
- Lightning's advice to sync logged metrics across processes: ours are sums reduced
  before dividing (models/base.py), syncing their means again would change nothing;
- data loading in the main process is by design (batches are cheap CSR slices);
- tiny data with fewer steps per epoch than the logging interval;
- a resumed run writing into its own checkpoint folder, which is the point of resuming;
- BERT4Rec masks its batches in ``on_after_batch_transfer`` on purpose (on the device);
- a process of a data-parallel job with no validation users left (a tiny user count).
"""

from __future__ import annotations

import logging
import warnings

SILENCED = (
    ".*isinstance.treespec, LeafSpec.*",
    ".*It is recommended to use .self.log.* sync_dist=True.*",
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*overridden `on_after_batch_transfer`.*",
    "Total length of .DataLoader. across ranks is zero.*",
)


def silence() -> None:
    """Ignore the warnings of :data:`SILENCED` in this process, and the tracebacks logging
    prints when a log file cannot be written (a full disk is reported once, by the write
    that needed the space)."""
    logging.raiseExceptions = False
    for message in SILENCED:
        warnings.filterwarnings("ignore", message=message)
