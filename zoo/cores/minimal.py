"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t alone.

    minGRU  (section 3.1):  z_t = sigmoid(Linear_z(x_t)),  h~_t = g(Linear_h(x_t))
                            h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM (section 3.2):  f_t = sigmoid(Linear_f(x_t)),  i_t = sigmoid(Linear_i(x_t))
                            f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
                            h_t = f'_t * h_{t-1} + i'_t * h~_t

with the appendix's positive candidate g(x) = x + 1/2 for x >= 0, sigmoid(x) below (its
log-space form keeps h~_t > 0). Each layer is the linear recurrence h_t = a_t h_{t-1} + b_t, so
a whole sequence is one scan. The backends compute the same numbers:

* ``scan`` (default): :class:`zoo.cores.scan.MinimalScan`, the scan in linear space with its
  backward written out (training and scoring);
* ``log``: the appendix's log-space scan (cumsum + logcumsumexp), the reference the tests
  compare against;
* ``explicit``: the step function in a Python loop.

A call with one time step (sampling, beam search: one token at a time) always runs the step
function. The state is ``h`` only, ``(L * D, B, H)`` like ``torch.nn.GRU``, carried across calls
(truncated BPTT windows) in every mode.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.cores.base import RecurrentCore, State, length_mask, reverse_time
from zoo.cores.scan import minimal_scan

MinimalBackend = Literal["scan", "log", "explicit"]


#: Logits of one layer and direction, each ``(B, T, H)`` (or ``(B, H)`` for one step): the first
#: gate's (minGRU: z, minLSTM: f), the candidate h~'s, the second gate's (minLSTM: i; else None).
Logits = tuple[Tensor, Tensor, Tensor | None]


def minimal_step(logits: Logits, h: Tensor) -> Tensor:
    """One step: :data:`Logits` of step t, each ``(B, H)``, and h_{t-1} ``(B, H)`` -> h_t."""
    first, candidate, second = logits
    if second is not None:  # f'_t = f_t / (f_t + i_t) = sigmoid(log f_t - log i_t)
        coeff = torch.sigmoid(F.logsigmoid(first) - F.logsigmoid(second))
    else:  # 1 - z_t
        coeff = torch.sigmoid(-first)
    g = candidate.clamp(min=0) + torch.sigmoid(candidate.clamp(max=0))  # g(h~_t)
    return coeff * h + (g - coeff * g)  # a_t h_{t-1} + (1 - a_t) g(h~_t)


def log_g(x: Tensor) -> Tensor:
    """log g(x): log(x + 1/2) for x >= 0, log sigmoid(x) = -softplus(-x) below (appendix)."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


def log_space_scan(logits: Logits, h0: Tensor, mask: Tensor | None) -> Tensor:
    """The paper's log-space scan (appendix), differentiated by autograd: the reference.

    log a_t = -softplus(k_t) and log z_t = -softplus(-k_t) (minGRU); for minLSTM, with
    d_t = softplus(-k_f) - softplus(-k_i): log f'_t = -softplus(d_t), log i'_t = -softplus(-d_t).
    Then h_t = exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)) with a*_t = sum_{s<=t} log a_s.

    The initial state enters linearly, + exp(a*_t) h_0, rather than as log h_0 in the scan:
    the recurrence is linear in h_0, and h_0 may be zero (log h_0 = -inf) or negative (a
    bridge's tanh, a carried state). Past a sequence's end (``mask`` False) log a = 0 and
    log b = -inf.

    Args:
        logits: :data:`Logits`, ``(B, T, H)`` each; h0: ``(B, H)``; mask: ``(B, T, 1)`` bool,
            True at valid steps, or None.

    Returns:
        ``(B, T, H)`` states. In float32 a* loses precision over long sequences (|a*_t| grows
        with t), which the linear-space scan does not.
    """
    first, candidate, second = logits
    if second is not None:
        diff = F.softplus(-first) - F.softplus(-second)
        log_a, log_z = -F.softplus(diff), -F.softplus(-diff)
    else:
        log_a, log_z = -F.softplus(first), -F.softplus(-first)
    log_b = log_z + log_g(candidate)
    if mask is not None:
        log_a, log_b = log_a.masked_fill(~mask, 0.0), log_b.masked_fill(~mask, -math.inf)
    a_star = log_a.cumsum(dim=1)  # log prod_{s<=t} a_s
    from_values = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    return from_values + torch.exp(a_star) * h0[:, None]


class _MinimalRNN(RecurrentCore):
    """What minGRU and minLSTM share: parameters, stacking, directions, padding, backends.

    Parameters per layer ``k`` and direction: ``weight_ih_l{k}`` ``(G*H, I_k)`` and
    ``bias_ih_l{k}`` (suffix ``_reverse`` for the right-to-left one); no recurrent weights.

    Stacking (``num_layers > 1``): layer 0 reads x_t as ``torch.nn`` does; every further layer is
    a pre-LayerNorm residual block, u_k = u_{k-1} + minRNN_k(LN_k(u_{k-1})), u_{k-1} being the
    layer below's output after dropout. Sizes allow it from layer 1 on (in and out are both
    ``output_size``), so no input projection is needed. That is the normalisation + residual of
    the paper's language-model blocks, without their MLP (a core is the recurrence only).

    Args:
        input_size: features per time step of the input.
        hidden_size: features of ``h_t`` per direction.
        num_layers: stacked layers, residual from the second on.
        dropout: on every layer's output but the last (the next block's input and residual).
        bidirectional: a second scan right to left, each sequence within its own length.
        backend: ``"scan"``, ``"log"`` or ``"explicit"`` (see :mod:`zoo.cores.minimal`).
    """

    torch_class = None
    backends = ("scan", "log", "explicit")

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        backend: MinimalBackend = "scan",
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, dropout, bidirectional, backend)

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse")[: self.num_directions]

    def _make_module(self, *args, **kwargs) -> nn.Module:
        params = nn.Module()
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.output_size
            for suffix in self._suffixes():
                weight = nn.Parameter(torch.empty(self.num_gates * self.hidden_size, size))
                bias = nn.Parameter(torch.empty(self.num_gates * self.hidden_size))
                params.register_parameter(f"weight_ih_l{layer}{suffix}", weight)
                params.register_parameter(f"bias_ih_l{layer}{suffix}", bias)
            if layer:
                params.add_module(f"norm_l{layer}", nn.LayerNorm(self.output_size))
        return params

    def reset_parameters(self) -> None:
        """``torch.nn.Linear``'s init, U(-1/sqrt(I_k), 1/sqrt(I_k)); LayerNorm at (1, 0)."""
        for name, param in self.rnn.named_parameters(recurse=False):
            bound = 1 / math.sqrt(getattr(self.rnn, name.replace("bias", "weight")).shape[1])
            nn.init.uniform_(param, -bound, bound)
        for module in self.rnn.children():
            module.reset_parameters()

    def _projection(self, layer: int, direction: int) -> tuple[Tensor, Tensor]:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return getattr(self.rnn, f"weight_ih{suffix}"), getattr(self.rnn, f"bias_ih{suffix}")

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """As :meth:`RecurrentCore.forward`: ``(B, T, I)`` -> ``(B, T, output_size)``, h."""
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        mask, reverse_index = length_mask(lengths, x.shape[1], x.device)
        mask = None if mask is None else mask[..., None]  # (B, T, 1) True at valid steps
        output, finals = self._layer(0, x, state, mask, reverse_index)
        for layer in range(1, self.num_layers):
            below = F.dropout(output, self.dropout, self.training)
            normed = getattr(self.rnn, f"norm_l{layer}")(below)
            output, more = self._layer(layer, normed, state, mask, reverse_index)
            output = below + output  # the residual
            finals += more
        return output, torch.stack(finals)  # (B, T, D*H), (L*D, B, H)

    def _layer(
        self, layer: int, x: Tensor, state: Tensor, mask: Tensor | None, index: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Both directions of one layer: ``(B, T, I_k)`` -> ``(B, T, D*H)`` and final states."""
        outputs, finals = [], []
        for direction in range(self.num_directions):
            inputs = reverse_time(x, index) if direction else x
            weight, bias = self._projection(layer, direction)
            # One product per block: contiguous logits for the scan's pointwise passes.
            blocks = [
                F.linear(inputs, w, b)
                for w, b in zip(weight.chunk(self.num_gates), bias.chunk(self.num_gates))
            ]
            logits = (blocks[0], blocks[-1], blocks[1] if self.num_gates == 3 else None)
            h = self._recurrence(logits, state[layer * self.num_directions + direction], mask)
            finals.append(h[:, -1])  # past the end the state stands still
            if mask is not None:
                h = h * mask
            outputs.append(reverse_time(h, index) if direction else h)
        return torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0], finals

    def _recurrence(self, logits: Logits, h0: Tensor, mask: Tensor | None) -> Tensor:
        """Every state of one direction: :data:`Logits` ``(B, T, H)`` -> ``(B, T, H)``, in the
        state's dtype, computed in float32 at least (autocast's bfloat16 logits would lose two
        digits over a few dozen steps of the recurrence)."""
        dtype, work = h0.dtype, torch.promote_types(h0.dtype, torch.float32)
        logits = tuple(None if x is None else x.to(work) for x in logits)
        h0 = h0.to(work)
        if logits[0].shape[1] == 1 or self.backend == "explicit":
            h = self._step_by_step(logits, h0, mask)
        elif self.backend == "log":
            h = log_space_scan(logits, h0, mask)
        else:
            h = minimal_scan(*logits, h0, mask)
        return h.to(dtype)

    def _step_by_step(self, logits: Logits, h: Tensor, mask: Tensor | None) -> Tensor:
        states = []
        steps = [[None] * logits[0].shape[1] if x is None else x.unbind(1) for x in logits]
        for t, step in enumerate(zip(*steps)):  # unbind: a backward in O(T), not O(T^2)
            new = minimal_step(step, h)
            h = new if mask is None else torch.where(mask[:, t], new, h)
            states.append(h)
        return torch.stack(states, dim=1)


class MinGRU(_MinimalRNN):
    """minGRU (Feng et al. 2024, section 3.1): h_t = (1 - z_t) h_{t-1} + z_t g(h~_t), z_t and
    h~_t linear in x_t only. Weight blocks ``[z | h~]``. (Arguments as :class:`_MinimalRNN`.)"""

    num_gates = 2


class MinLSTM(_MinimalRNN):
    """minLSTM (Feng et al. 2024, section 3.2): h_t = f'_t h_{t-1} + i'_t g(h~_t) with the
    normalised gates f'_t = f_t / (f_t + i_t), i'_t = 1 - f'_t, all from x_t only. Weight blocks
    ``[f | i | h~]``. (Arguments as :class:`_MinimalRNN`.)"""

    num_gates = 3
