"""lightrec: PyTorch Lightning + Hydra toolkit for top-K recommenders from implicit feedback."""

from lightrec import resolvers as _resolvers

_resolvers.register()  # the shipped configs' ${lightrec_*:...} resolvers

__version__ = "0.1.0"
