"""lightrec: PyTorch Lightning + Hydra toolkit for top-K recommenders from implicit feedback."""

__version__ = "0.1.0"
