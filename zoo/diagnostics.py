"""The vanishing gradient, measured rather than told (``rnn-zoo diagnose gradient-flow``).

For a freshly initialised core and a loss on the last step only, ``L_T = v . h_T``,
backpropagation through time gives

    dL_T/dh_t = dL_T/dh_T * prod_{k=t+1..T} dh_k/dh_{k-1}

For the Elman RNN each factor is ``diag(g'(.)) W``; with ``|W| < 1`` the product shrinks
geometrically with the distance ``T - t`` (Bengio et al. 1994; Pascanu et al. 2013). The LSTM's
cell state has the additive path ``dC_k/dC_{k-1} = diag(f_k)`` (plus terms through the gates),
so with the forget gate biased open it decays far more slowly. minGRU has no W at all: its
factor is ``diag(1 - z_k)`` with ``z_k`` from ``x_k`` alone (minLSTM: ``diag(f'_k)``), so only its
gates shrink the gradient. This module measures ``||dL_T/dh_t||`` (and ``||d(u . C_T)/dC_t||``
for a core with a cell: the LSTM, the sLSTM) against ``T - t``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zoo.cores import GRU, LSTM, RNN, SLSTM, MinGRU, MinLSTM, RecurrentCore
from zoo.cores.base import state_from_parts, state_parts
from zoo.errors import UserError
from zoo.files import atomic_path


@dataclass
class GradientFlow:
    """Mean gradient norms per distance ``T - t`` (index 0 is the last step)."""

    cell: str
    hidden: Tensor  # (T,) ||dL_T/dh_t||
    cell_state: Tensor | None  # (T,) ||d(u . C_T)/dC_t||, cores with a cell (LSTM, sLSTM)

    def decay(self, distance: int) -> float:
        """How many times smaller the gradient is ``distance`` steps back than at the last step."""
        return float(self.hidden[0] / self.hidden[distance])


def _unroll(core: RecurrentCore, x: Tensor) -> tuple[list, list]:
    """Every state h_t (and C_t for a core with a cell) of the first layer, as nodes to ask
    gradients of: through the core's cell equations where it has them (so C_t feeds h_t as in
    the equations), else through its own one-step forward (minGRU, minLSTM: h only)."""
    if core.num_directions != 1:
        raise UserError(f"{type(core).__name__}: gradient flow is measured left to right; "
                        "use a core with bidirectional false")  # fmt: skip
    if isinstance(core, (MinGRU, MinLSTM)):  # no recurrent weights, no cell function
        return _unroll_steps(core, x), []
    w_ih, b_ih, w_hh, b_hh = core._layer_params(0, 0)
    x_proj = x @ w_ih.T + b_ih  # (B, T, G*H)
    state = core._state_at(core.init_state(x.shape[0], x.device, x.dtype), 0)
    hs, cs = [], []
    for t in range(x.shape[1]):
        state = core.cell(x_proj[:, t], state, w_hh, b_hh, 0)
        parts = dict(zip(core.state_names, state_parts(state)))
        hs.append(parts["h"])
        cs += [parts["c"]] if "c" in parts else []
    return hs, cs


def _unroll_steps(core: RecurrentCore, x: Tensor) -> list[Tensor]:
    """The first layer's h_t of a core run one step at a time (as it samples)."""
    state, hs = core.init_state(x.shape[0], x.device, x.dtype), []
    for t in range(x.shape[1]):
        _, state = core(x[:, t : t + 1], state)
        h, *rest = state_parts(state)
        layers = h.unbind(0)  # layer 0's h_t is then a node the next step reads
        hs.append(layers[0])
        state = state_from_parts([torch.stack(layers), *rest])
    return hs


def _norms_back_from_end(target: Tensor, nodes: list[Tensor]) -> Tensor:
    """Mean over the batch of ||d target / d node_t||, ordered by distance from the end."""
    grads = torch.autograd.grad(target, nodes, retain_graph=True)
    norms = [g.norm(dim=-1).mean() for g in grads]
    return torch.stack(norms).flip(0)


def gradient_flow(
    core: RecurrentCore, steps: int = 100, batch_size: int = 16, seed: int = 0
) -> GradientFlow:
    """Measure the gradient reaching each step from a loss at the last one."""
    core = core.double()  # float64: the RNN's gradient falls below float32's range in ~90 steps
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, steps, core.input_size, generator=generator, dtype=torch.double)
    v = torch.randn(core.hidden_size, generator=generator, dtype=torch.double)
    hs, cs = _unroll(core, x)
    hidden = _norms_back_from_end((hs[-1] * v).sum(), hs)
    cell_state = _norms_back_from_end((cs[-1] * v).sum(), cs) if cs else None
    return GradientFlow(type(core).__name__, hidden.detach(), cell_state)


def default_cores(hidden_size: int = 128, input_size: int = 32, seed: int = 0) -> dict:
    """Freshly initialised cores, as the lecture compares them (each from the same seed)."""
    makers = {
        "RNN (tanh)": lambda: RNN(input_size, hidden_size, nonlinearity="tanh"),
        "GRU": lambda: GRU(input_size, hidden_size),
        "LSTM (forget bias 1)": lambda: LSTM(input_size, hidden_size, forget_bias=1.0),
        "LSTM (forget bias 0)": lambda: LSTM(input_size, hidden_size, forget_bias=0.0),
        "MinGRU": lambda: MinGRU(input_size, hidden_size),
        "MinLSTM": lambda: MinLSTM(input_size, hidden_size),
        "SLSTM (4 heads)": lambda: SLSTM(input_size, hidden_size, num_heads=4),
    }
    cores = {}
    for name, make in makers.items():
        torch.manual_seed(seed)
        cores[name] = make()
    return cores


def write_csv(results: dict[str, GradientFlow], path: Path) -> None:
    """One row per core and distance: ``core, distance, grad_norm_h, grad_norm_c``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["core", "distance", "grad_norm_h", "grad_norm_c"])
        for name, flow in results.items():
            cells = (
                [None] * len(flow.hidden) if flow.cell_state is None else flow.cell_state.tolist()
            )
            for d, (g, c) in enumerate(zip(flow.hidden.tolist(), cells)):
                out.writerow([name, d, f"{g:.6e}", "" if c is None else f"{c:.6e}"])


def table(results: dict[str, GradientFlow], distances=(0, 1, 5, 10, 20, 50)) -> str:
    distances = [d for d in distances if d < len(next(iter(results.values())).hidden)]
    header = f"{'core':<22}" + "".join(f"{'T-t=' + str(d):>11}" for d in distances)
    rows = [header]
    for name, flow in results.items():
        rows.append(f"{name:<22}" + "".join(f"{flow.hidden[d].item():>11.2e}" for d in distances))
    return "\n".join(rows)
