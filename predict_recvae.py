"""Predict RecVAE: `python predict_recvae.py [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from lightrec import predict
from lightrec.cli import guarded


@hydra.main(version_base="1.3", config_path="configs", config_name="recvae")
def main(cfg: DictConfig):
    return guarded(predict.run, cfg)


if __name__ == "__main__":
    main()
