"""The gated recurrent unit (Cho et al. 2014)."""

from __future__ import annotations

import torch
from torch import Tensor

from zoo import bptt
from zoo.cores.base import RecurrentCore, State


class GRU(RecurrentCore):
    """Gated recurrent unit (Cho et al. 2014), in PyTorch's formulation:

    z_t = sigmoid(W_z x_t + U_z h_{t-1} + b_z)          update gate
    r_t = sigmoid(W_r x_t + U_r h_{t-1} + b_r)          reset gate
    h~_t = tanh(W_h x_t + b_in + r_t * (U_h h_{t-1} + b_hn))
    h_t = (1 - z_t) * h~_t + z_t * h_{t-1}
    """

    torch_class = "GRU"
    num_gates = 3
    has_bptt = True

    def bptt(self, x_proj, state, w_hh, b_hh, mask):
        return bptt.GRULayer.apply(x_proj, state, w_hh, b_hh, mask, True)

    def cell(self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, index: int) -> State:
        h = state
        x_r, x_z, x_n = x_proj.chunk(3, dim=-1)  # gate order r, z, n
        h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
        r_t = torch.sigmoid(x_r + h_r)
        z_t = torch.sigmoid(x_z + h_z)
        h_tilde = torch.tanh(x_n + r_t * h_n)
        return (1 - z_t) * h_tilde + z_t * h
