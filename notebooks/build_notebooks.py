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

from lightrec.analysis import viz
"""


def params(model: str) -> str:
    return f'''\
# Parameters: the run folder to show (None = the latest finished {model} run under LOG_ROOT).
# The tests and `scripts/render_notebooks.sh` set them through these variables.
RUN_DIR = os.environ.get("LIGHTREC_RUN_DIR") or None
LOG_ROOT = os.environ.get("LIGHTREC_LOG_ROOT")  # None: the configs' paths.log_root
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

MF_BASICS = [
    new_markdown_cell(
        "# Matrix factorisation basics: explicit ratings on MovieLens-100K\n\n"
        "The rest of lightrec ranks items from implicit feedback; this notebook predicts the "
        "1-5 rating itself, the classic warm-up. One 80/10/10 random split of the ratings, "
        "three models, RMSE side by side: a truncated SVD of a dense block, biased matrix "
        "factorisation trained with Adam, and a rating autoencoder (I-AutoRec) with a masked "
        "MSE. The trained models stop early on validation RMSE; test RMSE is read once."
    ),
    new_code_cell(SETUP + "import pandas as pd\n\nfrom lightrec.analysis import explicit as ex\n"),
    new_code_cell(
        "# Parameters: the ratings come from lightrec's MovieLens-100K loader (DATA_DIR), or\n"
        "# from a CSV with user,item,rating columns (the tests use a small generated one).\n"
        'DATA_DIR = os.environ.get("LIGHTREC_DATA_DIR", "data")\n'
        'RATINGS_CSV = os.environ.get("LIGHTREC_RATINGS_CSV") or None\n'
        'MAX_EPOCHS = int(os.environ.get("LIGHTREC_MAX_EPOCHS", "200"))\n'
        "SEED = 0"
    ),
    new_code_cell(
        "df = ex.encode(pd.read_csv(RATINGS_CSV)) if RATINGS_CSV else ex.load_ratings(DATA_DIR)\n"
        "r = ex.split_ratings(df, (0.8, 0.1, 0.1), seed=SEED)\n"
        "print(f'{r.n_users} users, {r.n_items} items; train {len(r.train)}, '\n"
        "      f'valid {len(r.valid)}, test {len(r.test)} ratings')\n"
        "baselines = ex.baseline_rmse(r)\n"
        "baselines"
    ),
    new_markdown_cell(
        "## 1. Truncated SVD of a small block\n\nThe 200 most active users x the 200 most "
        "rated items, missing entries filled with the user's mean; the rank-k reconstruction "
        "is scored on the test ratings that fall inside the block. Low ranks capture taste, "
        "high ranks start fitting the filled-in means."
    ),
    new_code_cell(
        "train_block, test_block, _, _ = ex.dense_block(r, 200, 200)\n"
        "ranks = [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= min(train_block.shape)]\n"
        "recon = ex.truncated_svd(train_block, ranks)\n"
        "svd_rmse = {k: ex.block_rmse(v, test_block) for k, v in recon.items()}\n"
        "centred = np.nan_to_num(train_block - np.nanmean(train_block, 1, keepdims=True))\n"
        "s = np.linalg.svd(centred, compute_uv=False)\n"
        "fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))\n"
        "axes[0].semilogy(s, '.-'); axes[0].set_title('singular values of the centred block')\n"
        "axes[1].plot(list(svd_rmse), list(svd_rmse.values()), 'o-'); axes[1].set_xscale('log')\n"
        "axes[1].set_title('test RMSE inside the block'); axes[1].set_xlabel('rank')\n"
        "plt.tight_layout(); plt.show()\n"
        "best_rank = min(svd_rmse, key=svd_rmse.get)\n"
        "user_mean = np.broadcast_to(np.nanmean(train_block, 1, keepdims=True), train_block.shape)\n"
        "print(f'best rank {best_rank}: RMSE {svd_rmse[best_rank]:.4f}; '\n"
        "      f'the user mean alone: {ex.block_rmse(user_mean, test_block):.4f}')"
    ),
    new_markdown_cell(
        "## 2. Biased matrix factorisation\n\n$\\hat r_{ui} = \\mu + b_u + b_i + p_u^\\top q_i$, "
        "squared error plus an L2 penalty on the factors of each batch, Adam, early stopping "
        "on validation RMSE (the best epoch's weights are kept)."
    ),
    new_code_cell(
        "mf = ex.train_biased_mf(r, dim=32, max_epochs=MAX_EPOCHS, seed=SEED)\n"
        "ax = mf.history.plot(x='epoch', y=['train_rmse', 'valid_rmse'], figsize=(6, 3))\n"
        "ax.axvline(mf.best_epoch, ls=':', c='gray'); ax.set_title('biased MF'); plt.show()\n"
        "print(f'best epoch {mf.best_epoch}, test RMSE {mf.test_rmse:.4f}')"
    ),
    new_markdown_cell(
        "## 3. Rating autoencoder (I-AutoRec)\n\nEach item is the vector of its ratings by "
        "all users; a sigmoid bottleneck reconstructs it. Only observed ratings enter the loss "
        '(masked MSE), so the zeros standing for "not rated" are never learned as ratings.'
    ),
    new_code_cell(
        "ar = ex.train_autorec(r, hidden=200, max_epochs=MAX_EPOCHS, seed=SEED)\n"
        "ax = ar.history.plot(x='epoch', y=['train_rmse', 'valid_rmse'], figsize=(6, 3))\n"
        "ax.axvline(ar.best_epoch, ls=':', c='gray'); ax.set_title('I-AutoRec'); plt.show()\n"
        "print(f'best epoch {ar.best_epoch}, test RMSE {ar.test_rmse:.4f}')"
    ),
    new_markdown_cell("## Side by side (test RMSE, lower is better)"),
    new_code_cell(
        "table = pd.DataFrame([\n"
        "    ('global mean', 'all test ratings', baselines['global mean']),\n"
        "    ('mean + user + item bias', 'all test ratings', baselines['mean + user + item bias']),\n"
        "    (f'truncated SVD, rank {best_rank}', 'test ratings inside the block', svd_rmse[best_rank]),\n"
        "    ('biased MF', 'all test ratings', mf.test_rmse),\n"
        "    ('I-AutoRec', 'all test ratings', ar.test_rmse),\n"
        "], columns=['model', 'scored on', 'test RMSE'])\n"
        "table.round(4)"
    ),
]


COMPETITION = [
    new_markdown_cell(
        "# The competition path, from Python\n\n"
        "Rehearse the MovieLens competition on MovieLens-100K without the shell: hide each "
        "user's last item and 4 random earlier ones (the competition's kind of hidden set), "
        "train and combine `recipe=competition` on what is left, score the submission with "
        "the competition's Recall@10, read what each member was worth, and recommend for a "
        "new history. Every choice inside `best` sees validation only; the hidden items are "
        "scored once, at the end."
    ),
    new_code_cell(
        "import os\n"
        "from pathlib import Path\n\n"
        "import pandas as pd\n\n"
        "import lightrec\n"
        "from lightrec.data.datasets import movielens_100k\n\n"
        "# run from the project root, whether the notebook was opened from notebooks/ or not\n"
        "if Path.cwd().name == 'notebooks':\n"
        "    os.chdir(Path.cwd().parent)\n"
    ),
    new_code_cell(
        "# Parameters (the tests set them through these variables: a quick plan in a folder of\n"
        "# their own). MEMBERS None: the recipe's own members.\n"
        "RECIPE = 'competition'\n"
        "MEMBERS = os.environ.get('LIGHTREC_NB_MEMBERS')  # e.g. '[ease,item_knn]'\n"
        "OUT = os.environ.get('LIGHTREC_NB_OUT')  # None: ./saved as usual\n"
        "overrides = [f'best.members={MEMBERS}'] if MEMBERS else []\n"
        "if OUT:\n"
        "    overrides += [f'paths.log_root={OUT}/runs', f'paths.reranks={OUT}/reranks',\n"
        "                  f'paths.blends={OUT}/blends', f'data_cache.cache_dir={OUT}/cache']"
    ),
    new_markdown_cell("## 1. Hide what the competition would hide"),
    new_code_cell(
        "log = pd.read_csv(movielens_100k('data'))[['user', 'item', 'time']]\n"
        "train, hidden = lightrec.hide(log, last_n=1, random_m=4, seed=0)\n"
        "print(f'{len(train):,} rows to train on, {len(hidden):,} hidden')"
    ),
    new_markdown_cell(
        "## 2. Train the recipe's members and combine them\n\n"
        "The same jobs as `./run_best.sh recipe=competition`: each member selected on a "
        "validation drawn like the hidden set, then the ranker (or the blend, or the best "
        "member, whichever wins on held-back validation users)."
    ),
    new_code_cell(
        "result = lightrec.best(RECIPE, data=train, overrides=overrides)\n"
        "print(result.path)\n"
        "result.submission.head()"
    ),
    new_markdown_cell(
        "## 3. What each member was worth\n\n"
        "Its training time, its own held-back Recall@10, and the combination's without it."
    ),
    new_code_cell(
        "print('applied:', result.record.get('ranker_check', {}).get('applied', 'blend'))\n"
        "result.members"
    ),
    new_markdown_cell("## 4. Score on the hidden items (once)"),
    new_code_cell("lightrec.score(result.submission, hidden)"),
    new_markdown_cell(
        "## 5. Recommend for a new history\n\n"
        "Any member's run opens with `lightrec.load_run`; a history it never saw is folded "
        "in without training."
    ),
    new_code_cell(
        "run = lightrec.load_run(result.runs[0])\n"
        "mine = pd.DataFrame({'user': 'me', 'item': log['item'].value_counts().index[:5]})\n"
        "run.recommend_histories(mine, k=10)"
    ),
]


def write(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = HERE / name
    nbformat.write(nb, path)
    return path


NOTEBOOKS = {
    "visualize_multi_vae.ipynb": MULTI_VAE,
    "visualize_bert4rec.ipynb": BERT4REC,
    "matrix_factorization_basics.ipynb": MF_BASICS,
    "competition_from_python.ipynb": COMPETITION,
}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        print(write(name, cells))
