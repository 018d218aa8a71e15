"""A finished training run, opened as untrusted input: the one place that loads a run's config,
model and data, and scores any history with it (predict, blend, rerank, the API, export and
the notebooks all open runs here).

A run folder may come from someone else: its ``config.yaml`` names only lightrec's own classes
(checked before anything is imported; nested ``_target_`` blocks are refused, never built),
its checkpoints load with ``weights_only=True``, and the checkpoint used is always one of the
run's own (a ``ckpt_path`` inside its config.yaml is ignored).
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightrec.config.build import build_datamodule
from lightrec.config.check import check_run_config, target_class
from lightrec.data.batches import CSRCollate
from lightrec.data.datasets import data_file
from lightrec.data.interactions import History, full_history, read_interactions
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule
from lightrec.runs.scoring import Scorer, model_scorer
from lightrec.utils.path_utils import RunDir
from lightrec.utils.untrusted import read_yaml

log = logging.getLogger(__name__)

# keys added to the configs since a run folder may have been written, with the value that
# reproduces what such a run had
ADDED_KEYS = {
    "data.item_features": None,
    "paths.blends": "./saved/blends",
    "paths.reranks": "./saved/reranks",
}
# model arguments added since a checkpoint may have been written (its hyper_parameters lack
# them), with the value that reproduces it: SASRec and BERT4Rec trained with full CE
ADDED_MODEL_ARGS = {"loss": "ce", "num_negatives": 256, "negatives": "uniform"}
# model arguments removed since (gBCE's calibration): a checkpoint's value is dropped
REMOVED_MODEL_ARGS = ("gbce_t",)


def load_config(run: RunDir) -> DictConfig:
    """A run folder's config.yaml (a run written before a key existed gets the value that
    reproduces it, :data:`ADDED_KEYS`), checked to name only lightrec's classes."""
    data = read_yaml(run.config, f"run folder {run.root}: config.yaml")
    if not isinstance(data, dict) or "model" not in data or "data" not in data:
        raise LightrecError(f"run folder {run.root}: config.yaml is not a run's config")
    try:
        cfg = OmegaConf.create(data)
    except Exception as e:  # noqa: BLE001 - keys OmegaConf refuses
        raise LightrecError(f"run folder {run.root}: config.yaml cannot be read ({e})") from None
    if not isinstance(cfg, DictConfig):
        raise LightrecError(f"run folder {run.root}: config.yaml is not a run's config")
    for key, value in ADDED_KEYS.items():
        if OmegaConf.select(cfg, key, default="???") == "???":
            OmegaConf.update(cfg, key, value, force_add=True)
    check_run_config(cfg, str(run.root))  # lightrec's classes only, nothing nested
    return cfg


def load_model(
    ckpt_path: Path, run_cfg: DictConfig, n_items: int | None = None
) -> RecommenderModule:
    """Rebuild the run's model class from the checkpoint's plain hyper-parameters, holding
    one copy of its weights (built on the meta device, then given the loaded tensors); one
    sentence when the file is unreadable or holds another model."""
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, garbage, not a checkpoint at all
        raise LightrecError(
            f"checkpoint {ckpt_path} cannot be read ({type(e).__name__}): it is corrupt or "
            "truncated; train the run again"
        ) from None
    try:
        cls = target_class(run_cfg.model, "model.", RecommenderModule)
    except LightrecError as e:
        raise LightrecError(f"run folder {Path(ckpt_path).parent.parent}: {e}") from None
    try:
        args = dict(state["hyper_parameters"])
        accepted = inspect.signature(cls).parameters
        for name, value in ADDED_MODEL_ARGS.items():
            if name in accepted and name not in args:
                args[name] = value
        for name in REMOVED_MODEL_ARGS:
            if name not in accepted:
                args.pop(name, None)
        try:
            check_weights(cls, args, state["state_dict"], n_items)
        except LightrecError as e:
            raise LightrecError(f"checkpoint {ckpt_path} does not match its run: {e}") from None
        model = _with_weights(cls, args, state["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        why = str(e).strip().splitlines()[0][:160]
        raise LightrecError(
            f"checkpoint {ckpt_path} does not hold the {cls.__name__} model its run folder's "
            f"config.yaml names ({type(e).__name__}: {why})"
        ) from None
    return model.eval()


def _with_weights(
    cls: type[RecommenderModule], args: dict[str, Any], weights: dict[str, torch.Tensor]
) -> RecommenderModule:
    """``cls(**args)`` holding ``weights``: built on the meta device (no memory) and given
    the loaded tensors themselves (``assign``), so an item x item model holds one copy of
    B, not two; a model that needs real tensors to build is built and copied into."""
    try:
        with torch.device("meta"):
            model = cls(**args)
        model.load_state_dict(weights, assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            for module in model.modules():  # row-major, whatever strides were saved
                for name, buffer in list(module.named_buffers(recurse=False)):
                    if buffer is not None and not buffer.is_contiguous():
                        setattr(module, name, buffer.contiguous())
            return model
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # a constructor that computes with its tensors: the plain way below
    model = cls(**args)
    model.load_state_dict(weights)
    return model


def _read_id_maps(folder: RunDir) -> tuple[list, list]:
    """id_maps.json's item and user ids: two lists of distinct ids (text or integers)."""
    where = f"run folder {folder.root}: id_maps.json"
    try:
        maps = json.loads(folder.id_maps.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LightrecError(f"{where} cannot be read ({type(e).__name__})") from None
    if not isinstance(maps, dict):
        raise LightrecError(f"{where} is not a mapping of item_ids and user_ids")
    out = []
    for key in ("item_ids", "user_ids"):
        ids = maps.get(key)
        if not isinstance(ids, list) or not all(
            isinstance(i, str | int) and not isinstance(i, bool) for i in ids
        ):
            raise LightrecError(f"{where}: {key} is not a list of ids")
        if len(set(map(str, ids))) != len(ids):
            raise LightrecError(f"{where}: {key} repeats an id")
        out.append(ids)
    return out[0], out[1]


def check_weights(
    cls: type[RecommenderModule], args: dict[str, Any], weights: dict, n_items: int | None
) -> None:
    """Refuse, before anything real is built, settings that do not match the checkpoint's
    weights or the run's item map (a checkpoint claiming 20M items beside 80 real weights
    would otherwise allocate the claimed model)."""
    claimed = args.get("num_items")
    if n_items is not None and claimed != n_items:
        raise LightrecError(
            f"its settings are for num_items={claimed!r}, id_maps.json lists {n_items} items"
        )
    try:
        with torch.device("meta"):  # no memory: shapes only
            expected = cls(**args).state_dict()
    except (NotImplementedError, RuntimeError, ValueError, TypeError):
        return  # a constructor that computes with its tensors: its own load checks
    for name, tensor in weights.items():
        if name not in expected:
            raise LightrecError(f"its weights hold {name!r}, which a {cls.__name__} has not")
        want = expected[name]
        if want.numel() and tuple(want.shape) != tuple(tensor.shape):
            raise LightrecError(
                f"its weight {name} is {tuple(tensor.shape)} where its settings make "
                f"{tuple(want.shape)}"
            )
    missing = [name for name in expected if name not in weights]
    if missing:
        raise LightrecError(f"its weights lack {missing[0]!r}")
    b = weights.get("B")  # an item x item model's B takes the saved shape: it must be n x n
    if b is not None and claimed is not None and tuple(b.shape) != (claimed, claimed):
        raise LightrecError(f"its weight B is {tuple(b.shape)}, not {claimed} x {claimed}")


def load_history(data_cfg: DictConfig, item_ids: list) -> History:
    """Every user's full history in the data file a ``data:`` block names, over a trained
    model's item map."""
    path = data_file(data_cfg.path, data_cfg.data_dir)
    history = full_history(read_interactions(path, data_cfg.columns), item_ids)
    if history.n_unknown:
        log.warning("%d rows name items the model never saw; ignored", history.n_unknown)
    return history


@dataclass
class FinishedRun:
    """A finished run folder: its config, id maps and checkpoints, and what they score."""

    folder: RunDir
    cfg: DictConfig
    item_ids: list
    user_ids: list
    _models: dict[tuple[Path, str], RecommenderModule] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path | RunDir) -> FinishedRun:
        """The run at ``path``; one sentence when it is not a finished run of lightrec's."""
        folder = path if isinstance(path, RunDir) else RunDir(Path(path).expanduser())
        if not folder.finished:
            raise LightrecError(f"{folder.root} is not a finished training run (no metrics.json)")
        cfg = load_config(folder)
        item_ids, user_ids = _read_id_maps(folder)
        run = cls(folder, cfg, item_ids, user_ids)
        _ = run.metrics  # read (and checked) now: a malformed file is one sentence, not later
        return run

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def name(self) -> str:
        return str(self.cfg.model_name)

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json, checked to be a mapping whose sections are mappings."""
        where = f"run folder {self.root}: metrics.json"
        try:
            record = json.loads(self.folder.metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LightrecError(f"{where} cannot be read ({type(e).__name__})") from None
        if not isinstance(record, dict):
            raise LightrecError(f"{where} is not a mapping of a run's results")
        for key in ("data", "refit", "val", "test", "tuned"):
            if key in record and not isinstance(record[key], dict):
                raise LightrecError(f"{where}: {key} is not a mapping")
        return record

    def checkpoint(self, use_refit: bool = True) -> Path:
        """The model this run submits with: the refit model when it has one (and
        ``use_refit``), else the selected one (:meth:`RunDir.submission_ckpt`)."""
        return self.folder.submission_ckpt(use_refit)

    def model(
        self, ckpt: Path | None = None, device: torch.device | str = "cpu"
    ) -> RecommenderModule:
        """The model of ``ckpt`` (default: :meth:`checkpoint`) on ``device``, loaded once."""
        ckpt = self.checkpoint() if ckpt is None else ckpt
        key = (Path(ckpt), str(device))
        if key not in self._models:
            self._models[key] = load_model(ckpt, self.cfg, len(self.item_ids)).to(device)
        return self._models[key]

    def history(self, data_cfg: DictConfig | None = None) -> History:
        """Every user's full history in the run's data file (or the one ``data_cfg`` names)."""
        return load_history(self.cfg.data if data_cfg is None else data_cfg, self.item_ids)

    def scorer(
        self,
        history: History,
        model: RecommenderModule | None = None,
        device: torch.device | str = "cpu",
    ) -> Scorer:
        """Scores of ``history``'s users (rows), read in the model's own view: the one path
        from a checkpoint to scores (``model`` defaults to :meth:`model`)."""
        model = self.model(device=device) if model is None else model
        return model_scorer(model.score_batch, self.inputs(history, model), torch.device(device))

    def submission_scorer(
        self, history: History, use_refit: bool, device: torch.device | str = "cpu"
    ) -> Scorer:
        """The model the run submits with (:meth:`checkpoint`) scoring ``history``."""
        return self.scorer(history, self.model(self.checkpoint(use_refit), device), device)

    def inputs(self, history: History, model: RecommenderModule) -> CSRCollate:
        """``history``'s users (rows) as ``model`` reads them: CSR rows, or token sequences
        of the run's ``data.max_len`` (what :meth:`scorer` scores and export traces)."""
        return history.collate(model.data_view, self.cfg.data.max_len)

    def datamodule(self) -> RecSysDataModule:
        """The run's data as it was trained (prepared and set up), refused in one sentence
        when the file's content changed since (its validation rows would not be the run's)."""
        dm = build_datamodule(self.cfg)
        dm.prepare_data()
        dm.setup("fit")
        trained_on = self.metrics.get("data", {}).get("file_md5")
        if trained_on and dm.data_md5 and trained_on != dm.data_md5:
            raise LightrecError(
                f"the data file {dm.data_path} changed since run {self.root} was trained on "
                "it (its content MD5 differs): train the runs again on the file as it is"
            )
        return dm

    def validation_scorer(self, dm: RecSysDataModule, device: torch.device) -> Scorer:
        """The selected model (``best.ckpt``) scoring validation users from their training
        rows: what the blend's weights and the ranker learn from."""
        if not dm.has_validation:
            raise LightrecError(f"run {self.root} has no validation split to choose on")
        model = self.model(self.folder.best_ckpt, device)
        return model_scorer(model.score_batch, dm.scoring_collate("valid"), device)


def describe_checkpoint(run: FinishedRun, ckpt: Path) -> str:
    """Which model a checkpoint is, in words (predict says which one it used)."""
    if ckpt == run.folder.refit_ckpt:
        refit = run.metrics.get("refit", {})
        return (
            f"the refit model {ckpt} (trained on training + validation rows for "
            f"{refit.get('epochs', '?')} epochs)"
        )
    if ckpt == run.folder.best_ckpt:
        why = (
            "predict.use_refit=false" if run.folder.refit_ckpt.is_file() else "the run has no refit"
        )
        return f"the selected model {ckpt} (best on validation; {why})"
    return f"the checkpoint {ckpt}"
