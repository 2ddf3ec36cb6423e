"""Representation analysis: layer-wise linear and minibatch CKA, with CSV/PNG output."""

from .cka import MinibatchCKA, gram_linear, linear_cka, unbiased_hsic
from .layerwise import hidden_state_names, layerwise_cka
from .plotting import plot_cka_figure, read_cka_csv, write_cka_csv

__all__ = [
    "MinibatchCKA",
    "gram_linear",
    "hidden_state_names",
    "layerwise_cka",
    "linear_cka",
    "plot_cka_figure",
    "read_cka_csv",
    "unbiased_hsic",
    "write_cka_csv",
]
