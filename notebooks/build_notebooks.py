"""Write the notebooks of this folder from the cell sources below (stored without outputs).

``python notebooks/build_notebooks.py``: edit the cells here, not the .ipynb files, so the
stored notebooks stay clean and reviewable.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# run from the project root, whether the notebook was opened from notebooks/ or not
if Path.cwd().name == "notebooks":
    os.chdir(Path.cwd().parent)

from lightrec import viz
"""


def params(model: str) -> str:
    return f'''\
# Parameters: the run folder to show (None = the latest finished {model} run under LOG_ROOT).
# The tests and `python -m lightrec.render_notebooks` set them through these variables.
RUN_DIR = os.environ.get("LIGHTREC_RUN_DIR") or None
LOG_ROOT = os.environ.get("LIGHTREC_LOG_ROOT", "saved/hydra_logs")
MODEL = "{model}"
USER_ROW = 0  # which user to look at (row of the encoded user list)
'''


MULTI_VAE = [
    new_markdown_cell(
        "# MultiVAE: what the model learned\n\n"
        "Latent space, reconstructions, training dynamics and item similarity of one trained "
        "run (by default the latest `multi_vae_v2` run: `./run_multi_vae.sh` makes one)."
    ),
    new_code_cell(SETUP),
    new_code_cell(params("multi_vae_v2")),
    new_code_cell(
        "run = viz.load_run(RUN_DIR, MODEL, LOG_ROOT)\n"
        "csr = run.history.csr\n"
        "print(run.path)\n"
        "print(f'{csr.shape[0]} users, {csr.shape[1]} items, latent size {run.model.net.latent_dim}')"
    ),
    new_markdown_cell(
        "## 1. Latent space\n\nThe encoder's mean $\\mu$ for every user's full history, "
        "projected to 2-D by PCA and t-SNE, coloured by how many items the user has "
        "(and by the user's most frequent genre where the data has genres)."
    ),
    new_code_cell(
        "z = viz.latent_means(run)\n"
        "activity = np.log10(csr.getnnz(axis=1))\n"
        "pca, tsne = viz.project_2d(z, 'pca'), viz.project_2d(z, 'tsne')\n"
        "fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))\n"
        "viz.plot_points(pca, activity, 'PCA of mu, colour = log10(items)', axes[0])\n"
        "viz.plot_points(tsne, activity, 't-SNE of mu, colour = log10(items)', axes[1])\n"
        "plt.show()"
    ),
    new_code_cell(
        "if run.genres is not None:\n"
        "    genre = viz.favourite_genre(run)\n"
        "    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))\n"
        "    viz.plot_points(pca, genre, 'PCA of mu, colour = favourite genre', axes[0])\n"
        "    viz.plot_points(tsne, genre, 't-SNE, colour = favourite genre', axes[1], legend=True)\n"
        "    plt.show()"
    ),
    new_markdown_cell(
        "## 2. Reconstruction\n\nInput (the items the user has) against the decoder's "
        "probabilities with $z = \\mu$: the seen items should get high probability, and the "
        "top unseen items are the recommendations."
    ),
    new_code_cell(
        "rec = viz.reconstruction(run, USER_ROW, k=10)\n"
        "fig, ax = plt.subplots(figsize=(10, 3.5))\n"
        "ax.bar(np.arange(len(rec)), rec.prob, width=1.0, color='lightgray', label='prob')\n"
        "seen = rec.index[rec.input == 1]\n"
        "ax.scatter(seen, rec.prob[seen], s=8, color='tab:blue', label='in the input')\n"
        "top = rec.index[rec.top_unseen > 0]\n"
        "ax.scatter(top, rec.prob[top], s=20, color='tab:red', label='top-10 unseen')\n"
        "ax.set_yscale('log'); ax.set_xlabel('item'); ax.legend(); plt.show()\n"
        "print('seen items, mean prob', rec.prob[rec.input == 1].mean(),\n"
        "      'vs unseen', rec.prob[rec.input == 0].mean())\n"
        "rec[rec.top_unseen > 0].sort_values('top_unseen')[['top_unseen', 'label', 'prob']]"
    ),
    new_markdown_cell(
        "## 3. Training dynamics\n\nFrom the run's TensorBoard events: the total loss, its "
        "reconstruction and KL parts, and the KL weight, which rises linearly with the global "
        "step to its cap and then stays flat."
    ),
    new_code_cell(
        "tags = ['train/loss', 'train/recon', 'train/kl', 'train/kl_weight']\n"
        "curves = viz.training_curves(run.path, tags)\n"
        "viz.plot_curves(curves, tags); plt.tight_layout(); plt.show()\n"
        "print('KL cap', run.cfg.model.kl_cap, 'over', run.cfg.model.anneal_steps, 'steps')"
    ),
    new_markdown_cell(
        "The annealing schedule itself, $\\beta = \\min(cap, cap \\cdot step / anneal)$, over "
        "one and a half annealing periods, with the weights this run logged on top. On "
        "MovieLens-100K an epoch is only a couple of steps, so a run can stop long before "
        "the cap: then $\\beta$ stayed small for its whole training."
    ),
    new_code_cell(
        "from lightrec.models.multi_vae import kl_weight\n"
        "cap, anneal = run.cfg.model.kl_cap, run.cfg.model.anneal_steps\n"
        "steps = np.linspace(0, 1.5 * anneal, 300)\n"
        "logged = curves[curves.tag == 'train/kl_weight']\n"
        "fig, ax = plt.subplots(figsize=(7, 3))\n"
        "ax.plot(steps, [kl_weight(s, cap, anneal) for s in steps], label='schedule')\n"
        "ax.plot(logged.step, logged.value, 'r.', label='logged by this run')\n"
        "ax.axvline(anneal, ls=':', c='gray'); ax.set_xlabel('global step'); ax.legend()\n"
        "plt.show()\n"
        "print(f'this run stopped at step {logged.step.max()}, beta = {logged.value.iloc[-1]:.4f}')"
    ),
    new_code_cell(
        "val = viz.training_curves(run.path, ['val/recall@10', 'val/ndcg@10'])\n"
        "viz.plot_curves(val, ['val/recall@10', 'val/ndcg@10']); plt.tight_layout(); plt.show()"
    ),
    new_markdown_cell(
        "## 4. Item similarity from the decoder (and the encoder)\n\nEach item's row of the "
        "last decoder layer is its embedding in the space the model scores in; the nearest "
        "rows (cosine) are the items the model scores alike. Popular films are scored alike "
        "for almost everyone, so the decoder's neighbours of a popular film are mostly other "
        "popular films. Each item's column of the first encoder layer says how its presence "
        "in a history moves the latent code; those neighbours are closer in kind."
    ),
    new_code_cell(
        "wanted = ['Star Wars', 'Toy Story', 'Fargo', 'Godfather, The']\n"
        "labels = {run.item_label(i) for i in range(csr.shape[1])}\n"
        "queries = [t for t in wanted if t in labels]\n"
        "if not queries:  # not MovieLens: the three most popular items\n"
        "    queries = [run.item_label(i) for i in np.argsort(-csr.getnnz(axis=0))[:3]]\n"
        "for weights in ('decoder', 'encoder'):\n"
        "    print(f'-- {weights} weights')\n"
        "    for title, near in viz.item_neighbours(run, queries, k=6, weights=weights).items():\n"
        "        print(f'{title}: ' + '; '.join(near))"
    ),
]

BERT4REC = [
    new_markdown_cell(
        "# BERT4Rec: where the model looks\n\n"
        "Attention of every layer and head when the model predicts a user's next item (the "
        "[MASK] at the end of the user's history), for one trained run (by default the "
        "latest `bert4rec_v2` run: `./run_bert4rec.sh` makes one)."
    ),
    new_code_cell(SETUP),
    new_code_cell(params("bert4rec_v2") + "LAST = 15  # how many recent positions to show\n"),
    new_code_cell(
        "run = viz.load_run(RUN_DIR, MODEL, LOG_ROOT)\n"
        "maps, names = viz.attention_for_user(run, USER_ROW, last=LAST)\n"
        "layers, heads = maps.shape[:2]\n"
        "print(run.path)\n"
        "print(f'{layers} layers x {heads} heads, last {len(names)} positions of user row {USER_ROW}')"
    ),
    new_markdown_cell(
        "## 1. Every layer and every head\n\nRows are queries, columns the keys they attend "
        "to; the last row is the [MASK] position whose output becomes the recommendation."
    ),
    new_code_cell("viz.plot_attention(maps, names); plt.show()"),
    new_markdown_cell(
        "## 2. Layer by layer\n\nThe heads averaged per layer: lower layers tend to mix "
        "nearby items, higher layers gather what the [MASK] position needs."
    ),
    new_code_cell(
        "fig, axes = plt.subplots(1, layers, figsize=(4.5 * layers, 4), squeeze=False)\n"
        "for layer, ax in enumerate(axes[0]):\n"
        "    ax.imshow(maps[layer].mean(axis=0), cmap='viridis', vmin=0)\n"
        "    ax.set_title(f'layer {layer + 1}, mean over heads')\n"
        "    ax.set_xticks(range(len(names)), [n[:15] for n in names], rotation=90, fontsize=6)\n"
        "    ax.set_yticks(range(len(names)), [n[:15] for n in names], fontsize=6)\n"
        "plt.tight_layout(); plt.show()"
    ),
    new_markdown_cell(
        "## 3. Position-wise attention of [MASK]\n\nHow much the [MASK] position attends to "
        "each recent item (0 = the item just before [MASK]), per layer and head."
    ),
    new_code_cell(
        "to_mask = viz.mask_attention_by_position(maps)  # (layers, heads, L)\n"
        "back = np.arange(to_mask.shape[-1] - 1, -1, -1)  # positions before [MASK]\n"
        "fig, ax = plt.subplots(figsize=(8, 3.5))\n"
        "for layer in range(layers):\n"
        "    for head in range(heads):\n"
        "        ax.plot(back[:-1] - 1, to_mask[layer, head, :-1], marker='o', ms=3,\n"
        "                label=f'layer {layer + 1} head {head + 1}')\n"
        "ax.set_xlabel('items before [MASK]'); ax.set_ylabel('attention weight')\n"
        "ax.invert_xaxis(); ax.legend(fontsize=7); plt.show()"
    ),
    new_code_cell(
        "curves = viz.training_curves(run.path, ['train/loss', 'val/recall@10'])\n"
        "viz.plot_curves(curves, ['train/loss', 'val/recall@10']); plt.tight_layout(); plt.show()"
    ),
]


def write(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    path = HERE / name
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    for name, cells in (("visualize_multi_vae.ipynb", MULTI_VAE),
                        ("visualize_bert4rec.ipynb", BERT4REC)):  # fmt: skip
        print(write(name, cells))
