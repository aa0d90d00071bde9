"""Pluggable recurrent cores: Elman RNN, LSTM, GRU and a layer-normalised LSTM.

Every core has the same interface (``input_size`` first, so a task can take
``core: Callable[[int], RecurrentCore]`` and supply the size it knows)::

    core = LSTM(input_size=64, hidden_size=128, num_layers=2)
    output, state = core(x, state=None, lengths=None)   # x: (B, T, I) -> (B, T, core.output_size)

and two backends behind it:

* ``fused`` (default): ``torch.nn.RNN / LSTM / GRU``, i.e. cuDNN on GPU and oneDNN on CPU.
* ``explicit``: the lecture's equations, one time step at a time, reading the *same* parameters
  (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, PyTorch's layout).
  A checkpoint trained with one backend therefore loads into the other, and the test suite checks
  that both give the same outputs, final states and gradients. Variants such as
  :class:`LayerNormLSTM` override one cell function of the explicit backend.

States follow ``torch.nn``: ``h`` is ``(num_layers * num_directions, B, H)`` and the LSTM state is
the tuple ``(h, c)``. :func:`detach_state` and :func:`select_state` treat both forms uniformly.
"""

from zoo.cores.base import (
    Backend,
    CoreFactory,
    RecurrentCore,
    State,
    build_core,
    carries_cell,
    detach_state,
    select_state,
    state_parts,
)
from zoo.cores.gru import GRU
from zoo.cores.lstm import LSTM, LayerNormLSTM
from zoo.cores.rnn import RNN

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Backend",
    "CoreFactory",
    "LayerNormLSTM",
    "RecurrentCore",
    "State",
    "build_core",
    "carries_cell",
    "detach_state",
    "select_state",
    "state_parts",
]
