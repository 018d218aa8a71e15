"""What the notebooks call to *see* a trained model: loading a run, MultiVAE latents,
reconstructions, item neighbours, BERT4Rec attention, and training curves.

Every function takes plain arrays or a :class:`LoadedRun` and returns numbers; the
``plot_*`` functions draw them with matplotlib onto a given or new axes. Nothing here
writes into the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from omegaconf import DictConfig

from lightrec.data.batches import SEQUENCE
from lightrec.data.datasets import data_file, item_table
from lightrec.data.interactions import History
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule
from lightrec.runs.finished import FinishedRun
from lightrec.utils.path_utils import RunDir, default_log_root, latest_finished_run


@dataclass
class LoadedRun:
    """A finished run, its best model (eval mode, CPU) and the data it was trained on."""

    path: Path
    cfg: DictConfig
    model: Any  # the run's RecommenderModule (MultiVAE's .net, BERT4Rec's .net, ...)
    item_ids: list
    history: History  # every user's full history in the run's data file
    titles: pd.Series | None  # title per item index (MovieLens only), else None
    genres: pd.Series | None  # "A|B|C" per item index (MovieLens only), else None

    @property
    def is_sequence(self) -> bool:
        return self.model.data_view == SEQUENCE

    def item_label(self, index: int) -> str:
        """The title of an item index when known, else its original id."""
        if self.titles is not None and isinstance(self.titles.iloc[index], str):
            return self.titles.iloc[index]
        return str(self.item_ids[index])


def load_run(
    run_dir: str | Path | None = None,
    model_name: str = "multi_vae_v2",
    log_root: str | Path | None = None,
) -> LoadedRun:
    """Load ``run_dir`` (default: the latest finished run of ``model_name``). Relative
    paths in the run's config (the data file) are read from the current directory, as the
    run scripts do: call it from the project root."""
    if run_dir:
        run = RunDir(Path(run_dir))
    else:
        run = latest_finished_run(log_root or default_log_root(), model_name)
    finished = FinishedRun.open(run)
    cfg, item_ids = finished.cfg, finished.item_ids
    model: RecommenderModule = finished.model(run.best_ckpt)
    table = item_table(data_file(cfg.data.path, cfg.data.data_dir), item_ids)
    titles = table["title"] if table is not None else None
    genres = table["genres"] if table is not None and "genres" in table else None
    return LoadedRun(run.root, cfg, model, item_ids, finished.history(), titles, genres)


# ---------------------------------------------------------------- MultiVAE


def _dense(csr: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(csr[rows].toarray().astype(np.float32))


@torch.no_grad()
def latent_means(run: LoadedRun, batch_size: int = 512) -> np.ndarray:
    """mu of q(z | x) for every user's full history: (users, latent)."""
    net = run.model.net.eval()
    csr, out = run.history.csr, []
    for start in range(0, csr.shape[0], batch_size):
        rows = np.arange(start, min(start + batch_size, csr.shape[0]))
        out.append(net.encode(_dense(csr, rows))[0].numpy())
    return np.concatenate(out)


def project_2d(z: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of ``z`` by PCA or t-SNE (scikit-learn)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if method == "tsne":
        perplexity = float(min(30, max(2, (len(z) - 1) // 3)))
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(z)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def favourite_genre(run: LoadedRun) -> np.ndarray:
    """Each user's most frequent genre over their history (MovieLens), as strings."""
    if run.genres is None:
        raise LightrecError("this run's data has no genres (only the built-in MovieLens has)")
    csr = run.history.csr
    names = sorted({g for gs in run.genres.dropna() for g in gs.split("|")})
    onehot = np.zeros((csr.shape[1], len(names)), dtype=np.float32)
    for i, gs in enumerate(run.genres):
        for g in gs.split("|") if isinstance(gs, str) else []:
            onehot[i, names.index(g)] = 1.0
    counts = csr @ onehot  # (users, genres)
    return np.asarray(names)[counts.argmax(axis=1)]


@torch.no_grad()
def reconstruction(run: LoadedRun, user_row: int, k: int = 10) -> pd.DataFrame:
    """The user's input next to the model's scores: one row per item with ``input`` (0/1),
    ``prob`` (softmax of the decoder, z = mu) and ``label``; plus ``top_unseen``, the rank
    among unseen items (1 = first recommendation, 0 = seen or beyond ``k``)."""
    x = _dense(run.history.csr, np.array([user_row]))
    logits, _, _ = run.model.net.eval()(x)
    prob = torch.softmax(logits[0], dim=0).numpy()
    seen = x[0].numpy() > 0
    frame = pd.DataFrame(
        {
            "input": seen.astype(int),
            "prob": prob,
            "label": [run.item_label(i) for i in range(len(prob))],
        }
    )
    order = np.argsort(-np.where(seen, -np.inf, prob))[:k]
    frame["top_unseen"] = 0
    frame.loc[order, "top_unseen"] = np.arange(1, k + 1)
    return frame


def item_neighbours(
    run: LoadedRun, titles: list[str], k: int = 5, weights: str = "decoder"
) -> dict[str, list[str]]:
    """Nearest items by cosine similarity of MultiVAE weight vectors: ``decoder``, each
    item's row of the last layer (the items the model scores alike), or ``encoder``, each
    item's column of the first layer (the items whose presence in a history moves the
    latent alike). On MovieLens-100K the decoder's neighbours of a popular film are mostly
    other popular films; the encoder's are closer in kind (docs/notebooks)."""
    if weights == "decoder":
        w = run.model.net.decoder[-1].weight.detach().numpy()  # (items, hidden)
    elif weights == "encoder":
        first = (
            run.model.net.encoder[0] if len(run.model.net.encoder) else run.model.net.to_mu_logvar
        )
        w = first.weight.detach().numpy().T  # (items, hidden)
    else:
        raise ValueError(f"weights must be 'decoder' or 'encoder', got {weights!r}")
    w = w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)
    labels = [run.item_label(i) for i in range(len(w))]
    out = {}
    for title in titles:
        hits = [i for i, lab in enumerate(labels) if lab == title]
        if not hits:
            raise LightrecError(f"no item titled {title!r} in this run")
        sims = w @ w[hits[0]]
        sims[hits[0]] = -np.inf
        out[title] = [labels[j] for j in np.argsort(-sims)[:k]]
    return out


# ---------------------------------------------------------------- BERT4Rec


@torch.no_grad()
def attention_for_user(run: LoadedRun, user_row: int, last: int = 20):
    """Attention of every layer and head when the model predicts the user's next item:
    the user's most recent ``last - 1`` items then [MASK]. Returns ``(maps, labels)``, maps
    an array (layers, heads, L, L) with rows = queries, labels the L position names."""
    seqs = run.history.sequences(run.cfg.data.max_len)
    seq = run.model.query(torch.from_numpy(seqs[user_row : user_row + 1]))
    maps = run.model.net.eval().attention_maps(seq)  # layers x (1, H, L, L)
    stacked = torch.stack([m[0] for m in maps]).numpy()
    real = int((seq[0] > 0).sum())
    keep = min(last, real)
    tail = stacked[:, :, -keep:, -keep:]
    names = [run.item_label(int(i) - 1) for i in seq[0, -keep:-1]] + ["[MASK]"]
    return tail, names


def mask_attention_by_position(maps: np.ndarray) -> np.ndarray:
    """How much the [MASK] (last) query attends to each position, per layer and head:
    (layers, heads, L). Each row sums to 1 over the shown positions when nothing was cut."""
    return maps[:, :, -1, :]


# ---------------------------------------------------------------- training curves


def training_curves(run_dir: str | Path, tags: list[str] | None = None) -> pd.DataFrame:
    """Scalars from the run's TensorBoard event files (tensorboard's own reader), long
    format: ``tag, step, value``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(RunDir(Path(run_dir)).tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    have = acc.Tags()["scalars"]
    rows = []
    for tag in tags or have:
        if tag not in have:
            raise LightrecError(f"no scalar {tag!r} in {run_dir}; there are: {', '.join(have)}")
        rows += [(tag, e.step, e.value) for e in acc.Scalars(tag)]
    return pd.DataFrame(rows, columns=["tag", "step", "value"])


# ---------------------------------------------------------------- plots


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    return ax


def plot_points(xy: np.ndarray, colour, title: str, ax=None, legend: bool = False):
    """Scatter of 2-D points, numeric colours with a colour bar or categories with a legend."""
    ax = _axes(ax)
    colour = np.asarray(colour)
    if colour.dtype.kind in "iuf":
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, s=6, cmap="viridis")
        ax.figure.colorbar(sc, ax=ax)
    else:
        for name in sorted(set(colour)):
            pick = colour == name
            ax.scatter(xy[pick, 0], xy[pick, 1], s=6, label=name)
        if legend:
            ax.legend(fontsize=6, markerscale=2, ncol=2)
    ax.set_title(title)
    return ax


def plot_curves(curves: pd.DataFrame, tags: list[str], axes=None):
    """One panel per tag, value against global step."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(tags), figsize=(4 * len(tags), 3), squeeze=False)
        axes = axes[0]
    for ax, tag in zip(axes, tags, strict=True):
        part = curves[curves.tag == tag]
        ax.plot(part.step, part.value)
        ax.set_title(tag)
        ax.set_xlabel("step")
    return axes


def plot_attention(maps: np.ndarray, labels: list[str], fig=None):
    """A grid: one heat map per layer (rows) and head (columns)."""
    import matplotlib.pyplot as plt

    layers, heads = maps.shape[:2]
    fig = fig or plt.figure(figsize=(3.2 * heads + 1, 3.2 * layers))
    axes = fig.subplots(layers, heads, squeeze=False)
    short = [s[:18] for s in labels]
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer, head]
            ax.imshow(maps[layer, head], cmap="viridis", vmin=0)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(len(short)), short, rotation=90, fontsize=5)
            ax.set_yticks(range(len(short)), short, fontsize=5)
    fig.tight_layout()
    return fig
