"""The Elman RNN (Elman 1990)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from zoo import bptt
from zoo.cores.base import Backend, RecurrentCore


class RNN(RecurrentCore):
    """Elman RNN: h_t = g(V x_t + W h_{t-1} + b) with g = tanh or relu.

    Args:
        nonlinearity: ``"tanh"`` or ``"relu"``.
        (the rest as :class:`RecurrentCore`)
    """

    torch_class = "RNN"
    num_gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
        backend: Backend = "fused",
        compile: bool = False,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            input_size, hidden_size, num_layers, dropout, bidirectional, backend, compile
        )

    has_bptt = True

    def _make_module(self, *args, **kwargs) -> nn.RNNBase:
        return nn.RNN(*args, nonlinearity=self.nonlinearity, **kwargs)

    def bptt(self, x_proj, state, w_hh, b_hh, mask):
        relu = self.nonlinearity == "relu"
        output, h = bptt.RNNLayer.apply(x_proj, state, w_hh, b_hh, mask, relu, True)
        return output, h
