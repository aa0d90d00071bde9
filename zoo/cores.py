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

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo import bptt

State = Tensor | tuple[Tensor, Tensor]
Backend = Literal["fused", "explicit"]


def detach_state(state: State | None) -> State | None:
    """Cut the autograd graph behind a state (truncated BPTT); works for tensors and LSTM tuples."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def select_state(state: State, index: Tensor) -> State:
    """Gather batch entries of a state (batch is dim 1), e.g. to reorder beams."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


class RecurrentCore(nn.Module):
    """Base class: a stack of recurrent layers, batch-first, optionally bidirectional.

    Args:
        input_size: features per time step of the input.
        hidden_size: features of the hidden state ``h_t`` per direction.
        num_layers: stacked layers; layer ``k > 0`` reads layer ``k - 1``'s output.
        dropout: dropout on the outputs of every layer but the last (as ``torch.nn.LSTM``).
        bidirectional: run a second stack right-to-left and concatenate the outputs.
        backend: ``"fused"`` (cuDNN / oneDNN kernels) or ``"explicit"`` (the equations step by
            step, in Python).
        compile: explicit backend only. RNN, LSTM and GRU then run :mod:`zoo.bptt` (the same
            equations with backpropagation through time written out) with each step's pointwise
            arithmetic compiled by ``torch.compile``; variants get their whole time loop
            compiled. The first call for each sequence length pays the compilation (seconds).
    """

    #: Name of the ``torch.nn`` class holding the parameters (and running the fused backend).
    torch_class: str = "RNN"
    #: Gate blocks stacked in ``weight_ih`` (4 for LSTM, 3 for GRU, 1 for RNN).
    num_gates: int = 1
    #: Backends this core implements.
    backends: tuple[str, ...] = ("fused", "explicit")
    #: Whether :meth:`bptt` implements this cell with backpropagation written out.
    has_bptt: bool = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        backend: Backend = "fused",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if backend not in self.backends:
            raise ValueError(
                f"{type(self).__name__} has no backend {backend!r}; choose one of {self.backends}"
            )
        if compile and backend != "explicit":
            raise ValueError("compile=True applies to the explicit backend; set backend: explicit")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.backend = backend
        self._compile = compile
        self.rnn = self._make_module(
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
            batch_first=True,
        )
        # compile=True: cells with BPTT written out (zoo.bptt) run it with compiled pointwise
        # steps; other cells (variants) get their whole time loop compiled instead.
        whole_loop = compile and not self.has_bptt
        self._run = (
            torch.compile(self._run_direction, dynamic=False) if whole_loop else self._run_direction
        )
        self.reset_parameters()

    def _make_module(self, *args, **kwargs) -> nn.RNNBase:
        return getattr(nn, self.torch_class)(*args, **kwargs)

    def reset_parameters(self) -> None:
        """PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H)); subclasses add e.g. forget bias."""
        self.rnn.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features per time step of the output: ``hidden_size * num_directions``."""
        return self.hidden_size * self.num_directions

    def extra_repr(self) -> str:
        return f"backend={self.backend}"

    def config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` that rebuild this core (see :func:`build_core`).

        ``input_size`` is left out: the model that owns the core supplies it.
        """
        names = list(inspect.signature(type(self).__init__).parameters)[2:]  # self, input_size
        private = {"compile": self._compile}  # names that nn.Module already uses
        args = {name: private[name] if name in private else getattr(self, name) for name in names}
        return {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "init_args": args,
        }

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state for ``batch_size`` sequences: ``(L * D, B, H)`` (a pair for LSTM)."""
        weight = self.rnn.weight_hh_l0
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device or weight.device, dtype=dtype or weight.dtype)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run the stack over a batch of sequences.

        Args:
            x: ``(B, T, input_size)`` inputs.
            state: initial state, ``None`` for zeros.
            lengths: ``(B,)`` valid lengths for padded batches (a CPU tensor avoids a device sync
                in the fused backend). Outputs past a sequence's length are zero and its final
                state is taken at its last valid step, as with packed sequences.

        Returns:
            ``(B, T, output_size)`` outputs and the final state.
        """
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        if self.backend == "fused":
            return self._forward_fused(x, state, lengths)
        return self._forward_explicit(x, state, lengths)

    # ------------------------------------------------------------------ fused backend
    def _forward_fused(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        if lengths is None:
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, state = self.rnn(packed, state)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        return output, state

    # --------------------------------------------------------------- explicit backend
    def cell(self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, index: int) -> State:
        """One time step of stack entry ``index`` (= layer * num_directions + direction).

        ``x_proj = V x_t + b_ih`` is precomputed for all steps at once; the bias is split in two
        (``b_ih + b_hh``) only to share PyTorch's parameter layout.
        Elman (1990): h_t = g(V x_t + W h_{t-1} + b).
        """
        g = torch.tanh if self.rnn.nonlinearity == "tanh" else torch.relu
        return g(x_proj + state @ w_hh.T + b_hh)

    def bptt(
        self, x_proj: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, State]:
        """One direction through a :mod:`zoo.bptt` Function. x_proj: (B, T, G*H)."""
        raise NotImplementedError

    @staticmethod
    def _hidden(state: State) -> Tensor:
        return state[0] if isinstance(state, tuple) else state

    def _layer_params(self, layer: int, direction: int) -> tuple[Tensor, ...]:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        rnn = self.rnn
        names = ("weight_ih", "bias_ih", "weight_hh", "bias_hh")
        return tuple(getattr(rnn, f"{name}{suffix}") for name in names)

    def _state_at(self, state: State, index: int) -> State:
        if isinstance(state, tuple):
            return tuple(s[index] for s in state)
        return state[index]

    def _run_direction(
        self, x: Tensor, state: State, index: int, mask: Tensor | None
    ) -> tuple[Tensor, State]:
        """Left-to-right pass of stack entry ``index``. x: (B, T, I) -> (B, T, H)."""
        layer, direction = divmod(index, self.num_directions)
        w_ih, b_ih, w_hh, b_hh = self._layer_params(layer, direction)
        x_proj = x @ w_ih.T + b_ih  # (B, T, G*H): V x_t for every t in one matrix product
        if self._compile and self.has_bptt:
            return self.bptt(x_proj, state, w_hh, b_hh, mask)
        outputs = []
        for t in range(x.shape[1]):
            new_state = self.cell(x_proj[:, t], state, w_hh, b_hh, index)
            if mask is not None:  # past a sequence's end the state stays as it was
                keep = mask[:, t, None]
                if isinstance(state, tuple):
                    new_state = tuple(torch.where(keep, n, o) for n, o in zip(new_state, state))
                else:
                    new_state = torch.where(keep, new_state, state)
            state = new_state
            outputs.append(self._hidden(state))
        output = torch.stack(outputs, dim=1)  # (B, T, H)
        if mask is not None:
            output = output * mask[..., None]
        return output, state

    def _forward_explicit(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        batch, steps = x.shape[:2]
        mask = reverse_index = None
        if lengths is not None:
            lengths = lengths.to(x.device)
            positions = torch.arange(steps, device=x.device)
            mask = positions[None, :] < lengths[:, None]  # (B, T)
            # The right-to-left pass reads each sequence backwards from its own last step.
            reverse_index = torch.where(mask, lengths[:, None] - 1 - positions, positions)
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                inputs = layer_input
                if direction:
                    inputs = _reverse_time(layer_input, reverse_index)
                output, final = self._run(inputs, self._state_at(state, index), index, mask)
                if direction:
                    output = _reverse_time(output, reverse_index)
                outputs.append(output)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if layer < self.num_layers - 1 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
        if isinstance(finals[0], tuple):
            return layer_input, tuple(torch.stack(parts) for parts in zip(*finals))
        return layer_input, torch.stack(finals)


def _reverse_time(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse (B, T, F) along time, each sequence within its own length when ``index`` is given."""
    if index is None:
        return x.flip(1)
    return x.gather(1, index[..., None].expand_as(x))


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
        backend: Backend = "explicit",
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


CoreFactory = Callable[[int], RecurrentCore]


def build_core(config: dict[str, Any], input_size: int) -> RecurrentCore:
    """Rebuild a core from :meth:`RecurrentCore.config`; only ``zoo`` cores are accepted."""
    class_path = config.get("class_path", "")
    module_name, _, name = class_path.rpartition(".")
    if not module_name.startswith("zoo."):
        raise ValueError(f"core class_path {class_path!r} is not an rnn-zoo core")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, RecurrentCore)):
        raise ValueError(f"core class_path {class_path!r} is not a RecurrentCore")
    return cls(input_size, **config.get("init_args", {}))
