"""The vanishing gradient, measured rather than told (``rnn-zoo diagnose gradient-flow``).

For a freshly initialised core and a loss on the last step only, ``L_T = v . h_T``,
backpropagation through time gives

    dL_T/dh_t = dL_T/dh_T * prod_{k=t+1..T} dh_k/dh_{k-1}

For the Elman RNN each factor is ``diag(g'(.)) W``; with ``|W| < 1`` the product shrinks
geometrically with the distance ``T - t`` (Bengio et al. 1994; Pascanu et al. 2013). The LSTM's
cell state has the additive path ``dC_k/dC_{k-1} = diag(f_k)`` (plus terms through the gates),
so with the forget gate biased open it decays far more slowly. This module measures
``||dL_T/dh_t||`` (and ``||d(u . C_T)/dC_t||`` for the LSTM) against ``T - t``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from zoo.cores import GRU, LSTM, RNN, RecurrentCore
from zoo.files import atomic_path


@dataclass
class GradientFlow:
    """Mean gradient norms per distance ``T - t`` (index 0 is the last step)."""

    cell: str
    hidden: Tensor  # (T,) ||dL_T/dh_t||
    cell_state: Tensor | None  # (T,) ||d(u . C_T)/dC_t||, LSTM only

    def decay(self, distance: int) -> float:
        """How many times smaller the gradient is ``distance`` steps back than at the last step."""
        return float(self.hidden[0] / self.hidden[distance])


def _unroll(core: RecurrentCore, x: Tensor) -> tuple[list, list]:
    """Run one layer step by step, keeping every h_t (and C_t) as a node we can ask grads of."""
    w_ih, b_ih, w_hh, b_hh = core._layer_params(0, 0)
    x_proj = x @ w_ih.T + b_ih  # (B, T, G*H)
    state = core._state_at(core.init_state(x.shape[0]), 0)
    hs, cs = [], []
    for t in range(x.shape[1]):
        state = core.cell(x_proj[:, t], state, w_hh, b_hh, 0)
        h, c = state if isinstance(state, tuple) else (state, None)
        h.retain_grad()
        hs.append(h)
        if c is not None:
            c.retain_grad()
            cs.append(c)
    return hs, cs


def _norms_back_from_end(target: Tensor, nodes: list[Tensor]) -> Tensor:
    """Mean over the batch of ||d target / d node_t||, ordered by distance from the end."""
    grads = torch.autograd.grad(
        target,
        nodes,
        retain_graph=True,
    )
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
