"""The LSTM and its layer-normalised variant."""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor, nn

from zoo import bptt
from zoo.cores.base import Backend, RecurrentCore, State


class LSTM(RecurrentCore):
    """Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000).

    Args:
        forget_bias: initial value of the forget gate's total bias ``b_f``. At 1.0 the gate starts
            mostly open (sigmoid(1) = 0.73), so gradients flow through ``C_t`` from the first
            update (Gers et al. 2000; Jozefowicz et al. 2015). PyTorch's default leaves it random
            around 0, i.e. a gate half closed.
        (the rest as :class:`RecurrentCore`)
    """

    torch_class = "LSTM"
    num_gates = 4
    state_names = ("h", "c")

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        forget_bias: float = 1.0,
        backend: Backend = "fused",
        compile: bool = False,
    ) -> None:
        self.forget_bias = forget_bias
        super().__init__(
            input_size, hidden_size, num_layers, dropout, bidirectional, backend, compile
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        hidden = self.hidden_size
        with torch.no_grad():
            for name, param in self.rnn.named_parameters():
                if name.startswith("bias_ih"):  # gate order i, f, g, o
                    param[hidden : 2 * hidden].fill_(self.forget_bias)
                elif name.startswith("bias_hh"):
                    param[hidden : 2 * hidden].zero_()

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        h = super().init_state(batch_size, device, dtype)
        return h, torch.zeros_like(h)

    def _forward_fused(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            if not onednn_lstm_runs(torch.get_autocast_dtype("cpu")):
                # CPU autocast sends the LSTM to oneDNN in bfloat16 whatever the CPU, and oneDNN
                # has no such kernel without AVX512 ("could not create a primitive descriptor"
                # on an AVX2 laptop): there the LSTM runs in float32, as autocast runs the GRU.
                with torch.autocast("cpu", enabled=False):
                    state = tuple(part.float() for part in state)
                    return super()._forward_fused(x.float(), state, lengths)
        return super()._forward_fused(x, state, lengths)

    has_bptt = True

    def bptt(self, x_proj, state, w_hh, b_hh, mask):
        output, h, c = bptt.LSTMLayer.apply(x_proj, *state, w_hh, b_hh, mask, True)
        return output, (h, c)

    def gates(self, x_proj: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
        """Pre-activations of the input, forget, candidate and output gates, each (B, H)."""
        return (x_proj + h @ w_hh.T + b_hh).chunk(4, dim=-1)

    def cell(self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, index: int) -> State:
        h, c = state
        i, f, g, o = self.gates(x_proj, h, w_hh, b_hh)
        f_t = torch.sigmoid(f)  # forget gate
        i_t = torch.sigmoid(i)  # input gate
        c_tilde = torch.tanh(g)  # candidate cell state C~_t
        c_t = f_t * c + i_t * c_tilde  # C_t = f_t * C_{t-1} + i_t * C~_t
        o_t = torch.sigmoid(o)  # output gate
        h_t = o_t * torch.tanh(c_t)
        return h_t, c_t


@functools.cache
def onednn_lstm_runs(dtype: torch.dtype) -> bool:
    """Whether this CPU runs ``nn.LSTM`` under autocast to ``dtype`` (tried once, on one step)."""
    # Its own random stream (the process's draws stay those of a run without the probe) and
    # grad mode (the first call may come under inference mode, in a sanity-check validation).
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
        try:
            with torch.autocast("cpu", dtype=dtype):
                nn.LSTM(1, 1)(torch.zeros(1, 1, 1))
        except RuntimeError as err:
            if "primitive descriptor" not in str(err):  # not oneDNN saying it has no kernel
                raise
            return False
    return True


class LayerNormLSTM(LSTM):
    """LSTM with layer normalisation (Ba et al. 2016, eq. 20-22), explicit backend only.

    The recurrent and input contributions to the gates are normalised separately, and so is the
    cell state before the output tanh: h_t = o_t * tanh(LN(C_t)). Variants like this one are why
    the explicit backend exists: no fused kernel implements them.
    """

    backends = ("explicit",)
    has_bptt = False  # its cell differs: autograd differentiates it

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        forget_bias: float = 1.0,
        backend: Literal["explicit"] = "explicit",
        compile: bool = False,
    ) -> None:
        directions = 2 if bidirectional else 1
        count = num_layers * directions
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            dropout,
            bidirectional,
            forget_bias,
            backend,
            compile,
        )
        self.ln_input = nn.ModuleList(nn.LayerNorm(4 * hidden_size) for _ in range(count))
        self.ln_hidden = nn.ModuleList(nn.LayerNorm(4 * hidden_size) for _ in range(count))
        self.ln_cell = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(count))

    def reset_parameters(self) -> None:
        # LN(V x_t + b_ih) normalises b_ih away, so the forget bias lives in b_hh here.
        super().reset_parameters()
        hidden = self.hidden_size
        with torch.no_grad():
            for name, param in self.rnn.named_parameters():
                if name.startswith("bias_hh"):
                    param[hidden : 2 * hidden].fill_(self.forget_bias)
                elif name.startswith("bias_ih"):
                    param[hidden : 2 * hidden].zero_()

    def cell(self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, index: int) -> State:
        k = index
        h, c = state
        pre = self.ln_input[k](x_proj) + self.ln_hidden[k](h @ w_hh.T) + b_hh
        i, f, g, o = pre.chunk(4, dim=-1)
        c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_t = torch.sigmoid(o) * torch.tanh(self.ln_cell[k](c_t))
        return h_t, c_t
