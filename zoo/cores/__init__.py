"""Pluggable recurrent cores: Elman RNN, LSTM, GRU, a layer-normalised LSTM, minGRU / minLSTM
(Feng et al. 2024) and the sLSTM of xLSTM (Beck et al. 2024).

Every core has the same interface (``input_size`` first, so a task can take
``core: Callable[[int], RecurrentCore]`` and supply the size it knows)::

    core = LSTM(input_size=64, hidden_size=128, num_layers=2)
    output, state = core(x, state=None, lengths=None)   # x: (B, T, I) -> (B, T, core.output_size)

RNN, LSTM and GRU have two backends behind it:

* ``fused`` (default): ``torch.nn.RNN / LSTM / GRU``, i.e. cuDNN on GPU and oneDNN on CPU.
* ``explicit``: the lecture's equations, one time step at a time, reading the *same* parameters
  (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, PyTorch's layout).
  A checkpoint trained with one backend therefore loads into the other, and the test suite checks
  that both give the same outputs, final states and gradients. Variants such as
  :class:`LayerNormLSTM` override one cell function of the explicit backend.

:class:`MinGRU` and :class:`MinLSTM` (:mod:`zoo.cores.minimal`) have no recurrent weights: a
layer is a linear recurrence, run as one scan over the sequence (:mod:`zoo.cores.scan`; backends
``scan``, ``log`` and ``explicit``) and one step at a time when called with one step.
:class:`SLSTM` (:mod:`zoo.cores.slstm`) runs the explicit backend, optionally compiled.

States follow ``torch.nn``: ``h`` is ``(num_layers * num_directions, B, H)``, the LSTM state is
the tuple ``(h, c)`` and the sLSTM state ``(h, c, n, m)`` (``h`` first, each of that shape).
:func:`detach_state`, :func:`select_state`, :func:`state_parts` and :func:`state_from_parts`
treat every form uniformly; :func:`carries_cell` tells the cores with a cell ``c``.
"""

from zoo.cores.base import (
    Backend,
    CoreFactory,
    RecurrentCore,
    State,
    build_core,
    carries_cell,
    check_dropout,
    detach_state,
    select_state,
    state_from_parts,
    state_parts,
)
from zoo.cores.gru import GRU
from zoo.cores.lstm import LSTM, LayerNormLSTM
from zoo.cores.minimal import MinGRU, MinLSTM
from zoo.cores.rnn import RNN
from zoo.cores.slstm import SLSTM

#: The cores by class name, as a recipe's ``class_path: zoo.cores.<name>`` and ``compare`` name them.
CORES: dict[str, type[RecurrentCore]] = {
    cls.__name__: cls for cls in (RNN, LSTM, GRU, LayerNormLSTM, MinGRU, MinLSTM, SLSTM)
}

__all__ = [
    "CORES",
    "GRU",
    "LSTM",
    "RNN",
    "SLSTM",
    "Backend",
    "CoreFactory",
    "LayerNormLSTM",
    "MinGRU",
    "MinLSTM",
    "RecurrentCore",
    "State",
    "build_core",
    "carries_cell",
    "check_dropout",
    "detach_state",
    "select_state",
    "state_from_parts",
    "state_parts",
]
