"""The explicit backend is the lecture's equations; it must match the fused kernels exactly."""

import itertools

import pytest
import torch

from zoo import bptt
from zoo.cores import GRU, LSTM, RNN, LayerNormLSTM, detach_state, select_state

CELLS = {
    "rnn-tanh": lambda **kw: RNN(nonlinearity="tanh", **kw),
    "rnn-relu": lambda **kw: RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTM(**kw),
    "gru": lambda **kw: GRU(**kw),
}


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _random_state(core, batch):
    state = core.init_state(batch)
    return (
        tuple(torch.randn_like(s) for s in state)
        if isinstance(state, tuple)
        else torch.randn_like(state)
    )


def _run(core, x, state, lengths):
    """Outputs, final states and the gradients of a loss touching all of them."""
    core.zero_grad()
    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in _as_tuple(state))
    output, final = core(x, state if len(state) > 1 else state[0], lengths)
    loss = (output * torch.linspace(-1, 1, output.shape[-1], dtype=x.dtype)).sum()
    loss = loss + sum((f**2).sum() for f in _as_tuple(final))
    loss.backward()
    grads = [x.grad, *[s.grad for s in state]]
    grads += [p.grad for _, p in sorted(core.named_parameters())]
    return [output, *_as_tuple(final)], grads


@pytest.mark.parametrize(
    "cell,bidirectional,num_layers,with_lengths",
    list(itertools.product(CELLS, [False, True], [1, 2], [False, True])),
)
def test_explicit_matches_fused(cell, bidirectional, num_layers, with_lengths):
    torch.manual_seed(0)
    kwargs = dict(input_size=5, hidden_size=6, num_layers=num_layers, bidirectional=bidirectional)
    fused = CELLS[cell](**kwargs).double()
    explicit = CELLS[cell](backend="explicit", **kwargs).double()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(4, 7, 5, dtype=torch.double)
    lengths = torch.tensor([7, 3, 1, 5]) if with_lengths else None
    state = _random_state(fused, 4)

    values_f, grads_f = _run(fused, x, state, lengths)
    values_e, grads_e = _run(explicit, x, state, lengths)
    for a, b in zip(values_f, values_e):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert len(grads_f) == len(grads_e)
    for a, b in zip(grads_f, grads_e):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    if with_lengths:  # padded positions are zero, as with packed sequences
        assert values_e[0][1, 3:].abs().max() == 0


@pytest.fixture
def eager_bptt_kernels(monkeypatch):
    """compile=True runs zoo.bptt's written-out BPTT; its maths checked here without compiling."""
    monkeypatch.setattr(bptt, "COMPILE_KERNELS", False)


@pytest.mark.parametrize(
    "cell,bidirectional,num_layers,with_lengths",
    list(itertools.product(CELLS, [False, True], [1, 2], [False, True])),
)
def test_written_out_bptt_matches_fused(
    eager_bptt_kernels, cell, bidirectional, num_layers, with_lengths
):
    torch.manual_seed(0)
    kwargs = dict(input_size=5, hidden_size=6, num_layers=num_layers, bidirectional=bidirectional)
    fused = CELLS[cell](**kwargs).double()
    manual = CELLS[cell](backend="explicit", compile=True, **kwargs).double()
    manual.load_state_dict(fused.state_dict())
    x = torch.randn(4, 2 * bptt.CHUNK + 3, 5, dtype=torch.double)  # several chunks and a rest
    lengths = torch.tensor([x.shape[1], 3, 1, bptt.CHUNK + 1]) if with_lengths else None
    state = _random_state(fused, 4)
    values_f, grads_f = _run(fused, x, state, lengths)
    values_m, grads_m = _run(manual, x, state, lengths)
    for a, b in zip(values_f + grads_f, values_m + grads_m):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_lstm_forget_bias_in_both_backends():
    for backend in ("fused", "explicit"):
        core = LSTM(3, 8, num_layers=2, bidirectional=True, forget_bias=1.0, backend=backend)
        for layer, suffix in itertools.product(range(2), ["", "_reverse"]):
            b_ih = getattr(core.rnn, f"bias_ih_l{layer}{suffix}")
            b_hh = getattr(core.rnn, f"bias_hh_l{layer}{suffix}")
            total = (b_ih + b_hh)[8:16]  # gate order i, f, g, o
            torch.testing.assert_close(total, torch.ones(8))
    other = LSTM(3, 8, forget_bias=2.5)
    assert torch.allclose((other.rnn.bias_ih_l0 + other.rnn.bias_hh_l0)[8:16], torch.tensor(2.5))


def test_output_size_and_state_shapes():
    core = GRU(4, 10, num_layers=3, bidirectional=True)
    assert core.output_size == 20
    out, state = core(torch.randn(2, 5, 4))
    assert out.shape == (2, 5, 20) and state.shape == (6, 2, 10)
    lstm = LSTM(4, 10, num_layers=2)
    h, c = lstm.init_state(3)
    assert h.shape == c.shape == (2, 3, 10)


def test_state_helpers_cover_lstm_tuple():
    lstm = LSTM(3, 4)
    _, state = lstm(torch.randn(2, 3, 3))
    detached = detach_state(state)
    assert all(not s.requires_grad for s in detached)
    picked = select_state(state, torch.tensor([1, 1, 0]))
    assert picked[0].shape == (1, 3, 4)
    torch.testing.assert_close(picked[1][:, 2], state[1][:, 0])


def test_layer_norm_lstm_trains_and_normalises():
    torch.manual_seed(0)
    core = LayerNormLSTM(3, 16, num_layers=2)
    x = torch.randn(8, 12, 3) * 50  # badly scaled input: LN keeps the gates in range
    out, (h, c) = core(x)
    assert out.shape == (8, 12, 16) and torch.isfinite(out).all()
    gate_bias = core.rnn.bias_hh_l0[16:32]
    torch.testing.assert_close(gate_bias, torch.ones(16))
    # It learns: fit a fixed target in a few steps.
    target = torch.randn(8, 12, 16).tanh() * 0.5
    opt = torch.optim.Adam(core.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((core(x)[0] - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_layer_norm_lstm_refuses_fused_backend():
    with pytest.raises(ValueError, match="no backend 'fused'"):
        LayerNormLSTM(3, 4, backend="fused")


def test_compiled_lstm_matches_eager_with_gradients():
    """The real torch.compile path, once: fused kernels give the same numbers."""
    torch.manual_seed(0)
    eager = LSTM(3, 5, backend="explicit")
    compiled = LSTM(3, 5, backend="explicit", compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, bptt.CHUNK, 3)  # one chunk: one program to compile each way
    lengths = torch.tensor([bptt.CHUNK, 4])
    state = _random_state(eager, 2)
    values_e, grads_e = _run(eager, x, state, lengths)
    values_c, grads_c = _run(compiled, x, state, lengths)
    for a, b in zip(values_e + grads_e, values_c + grads_c):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_layer_norm_lstm_compiles_its_whole_loop():
    torch.manual_seed(0)
    eager = LayerNormLSTM(3, 4)
    compiled = LayerNormLSTM(3, 4, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 3)
    torch.testing.assert_close(compiled(x)[0], eager(x)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_cores_train_under_cpu_bf16_autocast(cell):
    """bf16-mixed training on any CPU: without AVX512 oneDNN has no bfloat16 LSTM, and PyTorch's
    autocast asked it for one anyway (an error on an AVX2 laptop). Outputs, the carried state and
    the gradients (as a whole) stay within bfloat16's reach of float32's, lengths or not."""
    torch.manual_seed(0)
    core = CELLS[cell](input_size=8, hidden_size=16, num_layers=2)
    x, state = torch.randn(3, 7, 8), _random_state(core, 3)
    lengths = torch.tensor([7, 4, 2])
    for lengths_or_none in (None, lengths):
        expected, expected_grads = _run(core, x, state, lengths_or_none)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, grads = _run(core, x, state, lengths_or_none)
            _, carried = core(x[:, :3], detach_state(got[1] if len(got) == 2 else tuple(got[1:])))
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a.float(), b, atol=0.05, rtol=0.05)
        for a, b in zip(grads, expected_grads, strict=True):  # relu's kinks move a few entries
            assert (a.float() - b).norm() <= 0.05 * b.norm()
        assert all(torch.isfinite(part).all() for part in _as_tuple(carried))
