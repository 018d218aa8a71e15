"""Predict MultiVAE: `python predict_multi_vae.py [--config-name multi_vae] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from lightrec import predict
from lightrec.cli import guarded


@hydra.main(version_base="1.3", config_path="configs", config_name="multi_vae_v2")
def main(cfg: DictConfig):
    return guarded(predict.run, cfg)


if __name__ == "__main__":
    main()
