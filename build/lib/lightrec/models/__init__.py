"""Recommender models: plain nn.Module backbones and the LightningModules that train them."""
