"""Representation analysis: layer-wise debiased linear CKA (full-batch or minibatch) with jackknife intervals and a
permutation null, CSV/JSON/PNG output, and the interval-based "later layers change less" verdict."""

from .cka import (
    CKAResult,
    GramAccumulator,
    MinibatchCKA,
    accumulate_gram,
    cka_from_grams,
    gram_linear,
    later_layers_change_less,
    linear_cka,
    unbiased_hsic,
)
from .layerwise import hidden_state_names, layerwise_cka, layerwise_cka_results
from .plotting import (
    draw_layer_cka,
    plot_cka_figure,
    plot_cka_results,
    plot_layer_cka,
    read_cka_csv,
    write_cka_csv,
    write_cka_results,
)

__all__ = [
    "CKAResult",
    "GramAccumulator",
    "MinibatchCKA",
    "accumulate_gram",
    "cka_from_grams",
    "draw_layer_cka",
    "gram_linear",
    "hidden_state_names",
    "later_layers_change_less",
    "layerwise_cka",
    "layerwise_cka_results",
    "linear_cka",
    "plot_cka_figure",
    "plot_cka_results",
    "plot_layer_cka",
    "read_cka_csv",
    "unbiased_hsic",
    "write_cka_csv",
    "write_cka_results",
]
