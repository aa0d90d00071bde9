"""The interface every recurrent core shares, and its two backends (see :mod:`zoo.cores`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.classpath import resolve_class

#: ``h``, or a tuple of parts with ``h`` first: ``(h, c)`` for an LSTM, ``(h, c, n, m)`` for sLSTM.
State = Tensor | tuple[Tensor, ...]
Backend = Literal["fused", "explicit"]


def detach_state(state: State | None) -> State | None:
    """Cut the autograd graph behind a state (truncated BPTT); works for tensors and tuples."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_parts(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors: ``(h,)``, or ``(h, c)`` for an LSTM (``h`` first)."""
    return state if isinstance(state, tuple) else (state,)


def state_from_parts(parts: tuple[Tensor, ...] | list[Tensor]) -> State:
    """The inverse of :func:`state_parts`: one part is the tensor ``h``, more are a tuple."""
    return parts[0] if len(parts) == 1 else tuple(parts)


def carries_cell(core: RecurrentCore) -> bool:
    """Does the core's state hold a cell ``c`` beside ``h``? (LSTM and its variants, sLSTM.)"""
    return "c" in core.state_names


def select_state(state: State, index: Tensor) -> State:
    """Gather batch entries of a state (batch is dim 1), e.g. to reorder beams."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def check_dropout(dropout: float) -> float:
    """``dropout`` itself if it is a probability, else a ValueError saying so (NaN fails too)."""
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout is a probability, between 0 and 1; got {dropout}")
    return dropout


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

    #: Name of the ``torch.nn`` class holding the parameters (and running the fused backend);
    #: None for cores that build their own parameters (:meth:`_make_module`).
    torch_class: str | None = "RNN"
    #: Gate blocks stacked in ``weight_ih`` (4 for LSTM, 3 for GRU, 1 for RNN).
    num_gates: int = 1
    #: Backends this core implements.
    backends: tuple[str, ...] = ("fused", "explicit")
    #: Whether :meth:`bptt` implements this cell with backpropagation written out.
    has_bptt: bool = False
    #: The parts of the state, in order (see :data:`State`).
    state_names: tuple[str, ...] = ("h",)

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
        for name, value in (
            ("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)
        ):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = check_dropout(dropout)
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
        module = type(self).__module__
        if module.startswith("zoo.cores."):  # files name the public path, not the family file
            module = "zoo.cores"
        return {
            "class_path": f"{module}.{type(self).__qualname__}",
            "init_args": args,
        }

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """Zero state for ``batch_size`` sequences: ``(L * D, B, H)`` (a pair for LSTM)."""
        weight = next(self.rnn.parameters())
        shape = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        return torch.zeros(shape, device=device or weight.device, dtype=dtype or weight.dtype)

    # A bridge (zoo.layers) reads an encoder's state and writes a decoder's as (h,) or (h, c):
    # cores whose state holds more (sLSTM) say how theirs maps to and from that pair.
    @classmethod
    def bridge_parts(cls, state: State) -> tuple[Tensor, ...]:
        """What a bridge reads of a state: ``(h,)``, or ``(h, c)`` for a core with a cell."""
        return state_parts(state)

    @classmethod
    def state_from_bridge(cls, h: Tensor, c: Tensor | None = None) -> State:
        """A state from a bridge's ``h`` (and ``c`` for a core with a cell), each ``(L, B, H)``."""
        return h if c is None else (h, c)

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
        # unbind, not x_proj[:, t]: each indexing's backward would write a zero (B, T, G*H)
        # gradient, O(T^2) memory traffic; unbind's backward stacks the T gradients once.
        for t, x_t in enumerate(x_proj.unbind(1)):
            new_state = self.cell(x_t, state, w_hh, b_hh, index)
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
        mask, reverse_index = length_mask(lengths, x.shape[1], x.device)
        finals = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                inputs = layer_input
                if direction:
                    inputs = reverse_time(layer_input, reverse_index)
                output, final = self._run(inputs, self._state_at(state, index), index, mask)
                if direction:
                    output = reverse_time(output, reverse_index)
                outputs.append(output)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if layer < self.num_layers - 1 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
        if isinstance(finals[0], tuple):
            return layer_input, tuple(torch.stack(parts) for parts in zip(*finals))
        return layer_input, torch.stack(finals)


def length_mask(
    lengths: Tensor | None, steps: int, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """``(B, T)`` bool mask of valid steps and the ``(B, T)`` index that reverses each sequence
    within its own length (padding stays in place); both None without ``lengths``."""
    if lengths is None:
        return None, None
    lengths = lengths.to(device)
    positions = torch.arange(steps, device=device)
    mask = positions[None, :] < lengths[:, None]  # (B, T)
    # The right-to-left pass reads each sequence backwards from its own last step.
    return mask, torch.where(mask, lengths[:, None] - 1 - positions, positions)


def reverse_time(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse (B, T, F) along time, each sequence within its own length when ``index`` is given."""
    if index is None:
        return x.flip(1)
    return x.gather(1, index[..., None].expand_as(x))


CoreFactory = Callable[[int], RecurrentCore]


def build_core(config: dict[str, Any], input_size: int) -> RecurrentCore:
    """Rebuild a core from :meth:`RecurrentCore.config`; only ``zoo`` cores are accepted."""
    cls = resolve_class(config.get("class_path", ""), RecurrentCore)
    return cls(input_size, **config.get("init_args", {}))
