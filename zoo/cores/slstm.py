"""The sLSTM of xLSTM (Beck et al. 2024, section 2.2): exponential gating, a normaliser state,
a stabiliser state, and memory mixing within heads."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.cores.base import RecurrentCore, State


class SLSTM(RecurrentCore):
    """Scalar-memory LSTM with exponential gating (xLSTM, Beck et al. 2024, section 2.2).

    Pre-activations from the input and, block-diagonally within each of ``num_heads`` heads,
    from h_{t-1} (memory mixing): [i~, f~, z~, o~]_t = W x_t + R h_{t-1} + b. Then::

        log f_t = log sigmoid(f~_t)   or  f~_t       (forget_gate "sigmoid" / "exp")
        m_t  = max(log f_t + m_{t-1}, i~_t)          stabiliser
        i'_t = exp(i~_t - m_t)                       stabilised input gate, exp(i~) / exp(m)
        f'_t = exp(log f_t + m_{t-1} - m_t)          stabilised forget gate
        c_t  = f'_t c_{t-1} + i'_t tanh(z~_t)        cell
        n_t  = f'_t n_{t-1} + i'_t                   normaliser
        h_t  = sigmoid(o~_t) * c_t / n_t

    c and n are the paper's states scaled by exp(-m_t), which cancels in h_t, so every gate value
    is at most 1 and nothing overflows in float32 whatever the pre-activations. An empty state
    (n = 0, the zero state) starts at m_t = i~_t, as the authors' code does (so n_t >= 1 from the
    first step on: h_t is a convex combination of the tanh(z~) seen so far, times o_t).

    The state is the tuple ``(h, c, n, m)``, each ``(L * D, B, H)`` (``h`` first, like the LSTM
    pair). A bridge (:mod:`zoo.layers`) reads ``(h, c / n)`` and writes ``(h, c, 1, 0)``.

    Parameters per layer ``k``: ``weight_ih_l{k}`` ``(4H, I_k)``, ``weight_hh_l{k}``
    ``(heads, 4H/heads, H/heads)`` (each head's R), ``bias_l{k}`` ``(4H)``; suffix ``_reverse``
    for the right-to-left direction. Rows are ordered head, then gate (i, f, z, o), then unit, so
    a head's four gates sit together.

    Args:
        num_heads: heads of the block-diagonal recurrent matrix; must divide ``hidden_size``.
        forget_gate: ``"sigmoid"`` (default: the authors' sLSTM code uses log sigmoid) or ``"exp"``
            (the paper offers both for sLSTM).
        forget_bias: initial bias of f~; 1.0 starts the sigmoid gate mostly open, as the zoo's
            LSTM does.
        backend: ``"explicit"`` only: the equations step by step (no fused kernel exists).
        compile: compile the whole time loop with ``torch.compile`` (as LayerNormLSTM does).
        (the rest as :class:`RecurrentCore`)

    Raises:
        ValueError: ``hidden_size`` not divisible by ``num_heads``, or an unknown forget gate.
    """

    torch_class = None
    backends = ("explicit",)
    state_names = ("h", "c", "n", "m")

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        num_heads: int = 4,
        forget_gate: Literal["sigmoid", "exp"] = "sigmoid",
        forget_bias: float = 1.0,
        backend: Literal["explicit"] = "explicit",
        compile: bool = False,
    ) -> None:
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(
                f"SLSTM: hidden_size ({hidden_size}) must be a multiple of num_heads "
                f"({num_heads}); the recurrent matrix has one block per head"
            )
        if forget_gate not in ("sigmoid", "exp"):
            raise ValueError(f"forget_gate must be 'sigmoid' or 'exp', got {forget_gate!r}")
        self.num_heads, self.forget_gate, self.forget_bias = num_heads, forget_gate, forget_bias
        super().__init__(
            input_size, hidden_size, num_layers, dropout, bidirectional, backend, compile
        )

    def _make_module(self, *args, **kwargs) -> nn.Module:
        params = nn.Module()
        head_size = self.hidden_size // self.num_heads
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.output_size
            for suffix in ("", "_reverse")[: self.num_directions]:
                shapes = {
                    "weight_ih": (4 * self.hidden_size, size),
                    "weight_hh": (self.num_heads, 4 * head_size, head_size),
                    "bias": (4 * self.hidden_size,),
                }
                for name, shape in shapes.items():
                    params.register_parameter(
                        f"{name}_l{layer}{suffix}", nn.Parameter(torch.empty(shape))
                    )
        return params

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) as ``torch.nn.LSTM``; the forget gate's bias ``forget_bias``."""
        bound = 1 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, param in self.rnn.named_parameters():
                param.uniform_(-bound, bound)
                if name.startswith("bias"):  # rows: head, gate (i, f, z, o), unit
                    param.view(self.num_heads, 4, -1)[:, 1] = self.forget_bias

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The empty state: ``(h, c, n, m)``, zeros of ``(L * D, B, H)``."""
        h = super().init_state(batch_size, device, dtype)
        return h, torch.zeros_like(h), torch.zeros_like(h), torch.zeros_like(h)

    @classmethod
    def bridge_parts(cls, state: State) -> tuple[Tensor, ...]:
        """``(h, c / n)``: the normalised cell plays the LSTM cell's part (0 for an empty state)."""
        h, c, n, _ = state
        return h, c / n.clamp(min=torch.finfo(n.dtype).tiny)

    @classmethod
    def state_from_bridge(cls, h: Tensor, c: Tensor | None = None) -> State:
        """``(h, c, 1, 0)``, so that c / n = c; without ``c`` the cell starts empty."""
        if c is None:
            return h, torch.zeros_like(h), torch.zeros_like(h), torch.zeros_like(h)
        return h, c, torch.ones_like(h), torch.zeros_like(h)

    def _layer_params(self, layer: int, direction: int) -> tuple[Tensor | None, ...]:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        rnn = self.rnn
        return (
            rnn.get_parameter(f"weight_ih{suffix}"),
            rnn.get_parameter(f"bias{suffix}"),
            rnn.get_parameter(f"weight_hh{suffix}"),
            None,
        )

    def cell(self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: None, index: int) -> State:
        """One step: ``x_proj`` ``(B, 4H)`` = W x_t + b and ``(h, c, n, m)`` -> the next state."""
        h, c, n, m = state  # (B, H) each
        heads = (h.shape[0], self.num_heads, -1)
        recurrent = torch.einsum("bnd,ned->bne", h.view(heads), w_hh)  # (B, heads, 4H/heads): R h
        pre = (x_proj.view_as(recurrent) + recurrent).unflatten(-1, (4, -1))
        i_tilde, f_tilde, z_tilde, o_tilde = pre.unbind(2)  # (B, heads, H/heads) each
        c, n, m = c.view(heads), n.view(heads), m.view(heads)
        log_f = F.logsigmoid(f_tilde) if self.forget_gate == "sigmoid" else f_tilde
        m_t = torch.where(n > 0, torch.maximum(log_f + m, i_tilde), i_tilde)
        i_gate = torch.exp(i_tilde - m_t)
        # <= 0 already unless the state is empty (then f' multiplies c = n = 0): clamped so that
        # it cannot overflow there.
        f_gate = torch.exp((log_f + m - m_t).clamp(max=0.0))
        c_t = f_gate * c + i_gate * torch.tanh(z_tilde)
        n_t = f_gate * n + i_gate
        h_t = torch.sigmoid(o_tilde) * c_t / n_t
        return tuple(s.reshape(h.shape) for s in (h_t, c_t, n_t, m_t))
