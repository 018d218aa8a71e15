"""Train RecVAE: `python train_recvae.py [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from lightrec import train
from lightrec.cli import guarded, preflight

CONFIG = "recvae"


@hydra.main(version_base="1.3", config_path="configs", config_name=CONFIG)
def main(cfg: DictConfig):
    return guarded(train.run, cfg)


if __name__ == "__main__":
    preflight(CONFIG, __file__)  # a bad config or value: one sentence, nothing made
    main()
