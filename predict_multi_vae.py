"""Predict MultiVAE: `python predict_multi_vae.py [--config-name multi_vae] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from lightrec import predict
from lightrec.cli import guarded, preflight

CONFIG = "multi_vae_v2"


@hydra.main(version_base="1.3", config_path="configs", config_name=CONFIG)
def main(cfg: DictConfig):
    return guarded(predict.run, cfg)


if __name__ == "__main__":
    preflight(CONFIG, __file__)  # a bad config or value: one sentence, nothing made
    main()
