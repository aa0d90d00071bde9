"""minGRU, minLSTM (Feng et al. 2024), sLSTM (Beck et al. 2024): scan == step by step == log space,
sLSTM == the paper's equations and finite, and all three in every model that takes a core."""

import functools
import itertools
import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import LambdaCallback

from datamodules.char_text import CharTextDataModule
from zoo.cores import (
    GRU,
    LSTM,
    SLSTM,
    MinGRU,
    MinLSTM,
    build_core,
    detach_state,
    scan,
    select_state,
    state_from_parts,
    state_parts,
)
from zoo.decoding import beam_search, greedy_search
from zoo.layers import Bridge, FinalStateBridge
from zoo.models.captioning import ImageEncoder, ShowAndTell, ShowAttendTell
from zoo.models.translation import LuongNMT, RNNSearch, Seq2Seq
from zoo.predict.char_lm import generate_text, stream_text
from zoo.tasks.char_lm import CharLanguageModel

pytestmark = pytest.mark.usefixtures("one_thread")
P = functools.partial
MINIMAL = {"mingru": MinGRU, "minlstm": MinLSTM}
NEW = {**MINIMAL, "slstm": P(SLSTM, num_heads=2)}


def _twin(core, **kwargs):
    """The same core class and weights with other arguments (e.g. another backend)."""
    config = core.config()
    other = build_core({**config, "init_args": {**config["init_args"], **kwargs}}, core.input_size)
    other.load_state_dict(core.state_dict())
    return other.to(next(core.parameters()).dtype)


def _run(core, x, state, lengths=None, stepwise=False):
    """Outputs, final state and gradients (x, state, params); ``stepwise``: a call per step."""
    core.zero_grad()
    x = x.clone().requires_grad_(True)
    parts = [] if state is None else [s.clone().requires_grad_(True) for s in state_parts(state)]
    carried = state_from_parts(parts) if parts else None
    if stepwise:
        outputs = []
        for t in range(x.shape[1]):
            step_lengths = None if lengths is None else (lengths > t).long()
            output, carried = core(x[:, t : t + 1], carried, step_lengths)
            outputs.append(output)
        output, final = torch.cat(outputs, dim=1), carried
    else:
        output, final = core(x, carried, lengths)
    weights = torch.linspace(-1, 1, output.shape[-1], dtype=x.dtype)
    (output * weights).sum().add(sum((f**2).sum() for f in state_parts(final))).backward()
    params = [p.grad for _, p in sorted(core.named_parameters())]
    return [output, *state_parts(final)], [x.grad, *(p.grad for p in parts), *params]


def _assert_all_close(got, want, atol=1e-10):
    torch.testing.assert_close(list(got), list(want), atol=atol, rtol=0)  # and equal lengths


@pytest.fixture(params=[{}, {"CHUNKED_ON_CPU": True}, {"CPU_BLOCK_STEPS": 7}],
                ids=["sequential", "chunked", "blocks-of-7"])  # fmt: skip
def kernels(request, monkeypatch):
    """The scan on a CPU (one step at a time, in 64-step blocks), chunked, in 7-step blocks."""
    for name, value in request.param.items():
        monkeypatch.setattr(scan, name, value)


@pytest.mark.parametrize("steps", [1, 2, 15, 16, 17, 23, 64, 101])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_is_the_recurrence(kernels, steps, reverse):
    torch.manual_seed(0)
    a, b = torch.rand(2, steps, 3).double(), torch.randn(2, steps, 3).double()
    for initial in (torch.randn(2, 3).double(), None):
        h = torch.zeros(2, 3).double() if initial is None else initial
        expected = torch.empty_like(b)
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            h = expected[:, t] = a[:, t] * h + b[:, t]
        torch.testing.assert_close(scan.linear_scan_(b.clone(), a, initial, reverse), expected)


@pytest.mark.parametrize(
    "name,num_layers,carried,bidirectional,with_lengths",
    list(itertools.product(MINIMAL, [1, 2], [False, True], [False, True], [False, True])),
)
def test_scan_equals_log_space_and_step_by_step(
    kernels, name, num_layers, carried, bidirectional, with_lengths
):
    torch.manual_seed(0)
    core = MINIMAL[name](5, 6, num_layers=num_layers, bidirectional=bidirectional).double()
    x = torch.randn(4, 23, 5, dtype=torch.double)  # 23 steps: 5 chunks of 4 and a rest of 3
    lengths = torch.tensor([23, 3, 1, 17]) if with_lengths else None
    state = torch.randn_like(core.init_state(4)) if carried else None  # may be negative
    values, grads = _run(core, x, state, lengths)
    for backend in ("log", "explicit"):
        got_values, got_grads = _run(_twin(core, backend=backend), x, state, lengths)
        _assert_all_close(got_values + got_grads, values + grads)
    if not bidirectional:  # one call per step: the step function, as sampling runs it
        got_values, got_grads = _run(core, x, state, lengths, stepwise=True)
        _assert_all_close(got_values + got_grads, values + grads)
    if with_lengths:  # zero past the end, as with packed sequences
        assert values[0][1, 3:].abs().max() == 0 and values[0][2, 1:].abs().max() == 0


@pytest.mark.parametrize("name", MINIMAL)
def test_linear_space_scan_stays_accurate_in_float32_where_log_space_drifts(name):
    torch.manual_seed(0)
    core = MINIMAL[name](4, 8).requires_grad_(False)
    x = torch.randn(2, 2048, 4)
    reference = _twin(core, backend="explicit").double()(x.double())[0]
    error = {
        backend: (_twin(core, backend=backend)(x)[0].double() - reference).abs().max().item()
        for backend in ("scan", "log")
    }
    assert error["scan"] < 2e-6 and error["scan"] < error["log"] / 10


def test_stacked_layers_are_pre_norm_residual_blocks():
    torch.manual_seed(0)
    stack = MinGRU(5, 6, num_layers=2).double()
    first, second = MinGRU(5, 6).double(), MinGRU(6, 6).double()
    with torch.no_grad():
        for layer, core in ((0, first), (1, second)):
            for name in ("weight_ih", "bias_ih"):
                getattr(core.rnn, f"{name}_l0").copy_(getattr(stack.rnn, f"{name}_l{layer}"))
        stack.rnn.norm_l1.weight.uniform_(0.5, 1.5)
    below, h_first = first(x := torch.randn(3, 20, 5, dtype=torch.double))
    above, h_second = second(stack.rnn.norm_l1(below))
    output, state = stack(x)
    torch.testing.assert_close(output, below + above)  # u_1 = u_0 + minGRU(LN(u_0))
    torch.testing.assert_close(state, torch.cat([h_first, h_second]))


# ---------------------------------------------------------------------------------- sLSTM
def _slstm_reference(core, x, state, stabilised=True):
    """xLSTM section 2.2, one layer and direction: stacked [i; f; z; o] rows, a dense block-diagonal
    R, m = i~ on an empty state; ``stabilised=False``: raw gates, c_t = f c + exp(i~) z, etc."""
    w_ih, bias, w_hh, _ = core._layer_params(0, 0)
    heads, size = core.num_heads, core.hidden_size // core.num_heads
    rows = torch.arange(4 * core.hidden_size).view(heads, 4, size).transpose(0, 1).flatten()
    w, b = w_ih[rows], bias[rows]  # (gate, head, unit) order
    r = torch.cat([torch.block_diag(*(w_hh[k, g * size : (g + 1) * size] for k in range(heads)))
                   for g in range(4)])  # fmt: skip
    h, c, n, m = (s[0] for s in state)
    outputs = []
    for t in range(x.shape[1]):
        i, f, z, o = (x[:, t] @ w.T + h @ r.T + b).chunk(4, dim=-1)
        log_f = F.logsigmoid(f) if core.forget_gate == "sigmoid" else f
        if stabilised:  # an empty state has nothing to forget (and exp(log f - i~) may be inf)
            empty = bool((n == 0).all())
            m_new = i if empty else torch.maximum(log_f + m, i)
            f_gate = torch.zeros_like(i) if empty else torch.exp(log_f + m - m_new)
            i_gate, m = torch.exp(i - m_new), m_new
        else:
            i_gate, f_gate = torch.exp(i), torch.exp(log_f)
        c = f_gate * c + i_gate * torch.tanh(z)
        n = f_gate * n + i_gate
        h = torch.sigmoid(o) * c / n
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("carried", [False, True])
def test_slstm_is_the_papers_equations(forget_gate, carried):
    torch.manual_seed(0)
    core = SLSTM(3, 6, num_heads=3, forget_gate=forget_gate).double()
    x = torch.randn(2, 9, 3, dtype=torch.double, requires_grad=True)
    state = core.init_state(2)
    if carried:  # a state from an earlier window: n > 0, any m
        h, c, n, m = torch.randn(4, 1, 2, 6, dtype=torch.double)
        state = (h, c, n.abs() + 0.5, m)
    output, final = core(x, state)
    expected, h = _slstm_reference(core, x, state)
    _assert_all_close([output, final[0][0]], [expected, h], atol=1e-12)
    grads = [torch.autograd.grad(y.sum(), [x, *core.parameters()]) for y in (output, expected)]
    _assert_all_close(*grads, atol=1e-12)
    if not carried:  # the stabiliser changes nothing but the scale of c and n
        raw, _ = _slstm_reference(core, x, state, stabilised=False)
        torch.testing.assert_close(output, raw, atol=1e-10, rtol=0)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_slstm_stays_finite_on_long_sequences_with_huge_inputs(forget_gate):
    torch.manual_seed(0)
    core = SLSTM(3, 8, num_heads=2, forget_gate=forget_gate)
    x = (torch.randn(2, 1500, 3) * 100).requires_grad_(True)  # pre-activations in the hundreds
    output, (h, c, n, m) = core(x)
    assert torch.isfinite(output).all() and all(torch.isfinite(s).all() for s in (h, c, n, m))
    assert output.abs().max() <= 1 and n.min() >= 1  # |h| <= o |c / n| <= 1; n_t >= 1
    output.sum().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():  # exp(i~) = 0 in float32 from the first step on: starts at m_1 = i~
        core.rnn.bias_l0.view(2, 4, -1)[:, 0] = -1000.0
        expected, _ = _slstm_reference(core.double(), x[:, :20].double(), core.init_state(2))
        got = core.float()(x[:, :20])[0]
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"hidden_size": 6, "num_heads": 4}, r"\(6\) must be a multiple of num_heads \(4\)"),
     ({"forget_gate": "tanh"}, "forget_gate"), ({"backend": "fused"}, "no backend 'fused'")],
)  # fmt: skip
def test_slstm_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SLSTM(3, **{"hidden_size": 8, **kwargs})


@pytest.mark.slow
def test_compiled_slstm_matches_eager():
    torch.manual_seed(0)
    eager, x, lengths = SLSTM(3, 4, num_heads=2), torch.randn(2, 3, 3), torch.tensor([3, 2])
    values, grads = _run(eager, x, None, lengths)
    got_values, got_grads = _run(_twin(eager, compile=True), x, None, lengths)
    _assert_all_close(got_values + got_grads, values + grads, atol=1e-5)


# ------------------------------------------------------------------ the RecurrentCore interface
@pytest.mark.parametrize("name", NEW)
def test_config_round_trips_and_autocast_recurs_in_float32(name):
    torch.manual_seed(0)
    core = NEW[name](5, 8, num_layers=2, dropout=0.1, bidirectional=True).eval()
    config = json.loads(json.dumps(core.config()))
    assert config["class_path"] == f"zoo.cores.{type(core).__name__}"
    rebuilt = build_core(config, 5).eval()
    assert type(rebuilt) is type(core) and rebuilt.config() == config
    rebuilt.load_state_dict(core.state_dict())
    output = core(x := torch.randn(2, 40, 5))[0]
    torch.testing.assert_close(rebuilt(x)[0], output)
    assert core.output_size == 16 and output.shape == (2, 40, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 logits, a float32 recurrence
        low, state = core(x)
    assert low.dtype == torch.float32 and all(s.dtype == torch.float32 for s in state_parts(state))
    torch.testing.assert_close(low, output, atol=0.01, rtol=0)  # 0.02 scanned in bfloat16


@pytest.mark.parametrize("name", NEW)
def test_state_carried_across_windows_and_state_helpers(name):
    torch.manual_seed(0)
    core = NEW[name](5, 6, num_layers=2).double()
    whole, final = core(x := torch.randn(3, 30, 5, dtype=torch.double))
    first, state = core(x[:, :20])  # a truncated-BPTT window, then the next
    second, state = core(x[:, 20:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    _assert_all_close(state_parts(state), state_parts(final), atol=1e-12)
    parts = state_parts(core.init_state(3))
    assert len(parts) == len(core.state_names) and all(p.shape == (2, 3, 6) for p in parts)
    picked = state_parts(select_state(final, torch.tensor([2, 0])))
    for part, full in zip(picked, state_parts(final)):
        torch.testing.assert_close(part, full[:, [2, 0]])


@pytest.mark.parametrize("name", NEW)
def test_padding_changes_nothing_in_both_directions(name):
    torch.manual_seed(0)
    core = NEW[name](5, 6, num_layers=2, bidirectional=True).double()
    x, lengths = torch.randn(3, 19, 5, dtype=torch.double), torch.tensor([19, 4, 11])
    output, final = core(x, None, lengths)
    for b, length in enumerate(lengths.tolist()):
        alone, alone_final = core(x[b : b + 1, :length])
        torch.testing.assert_close(output[b, :length], alone[0], atol=1e-12, rtol=0)
        assert (output[b, length:] == 0).all()
        for part, want in zip(state_parts(final), state_parts(alone_final)):
            torch.testing.assert_close(part[:, b], want[:, 0], atol=1e-12, rtol=0)


def test_bridges_read_and_write_each_kind_of_state():
    slstm, lstm, gru = SLSTM(3, 4, num_heads=2), LSTM(3, 4), GRU(3, 4)
    _, final = SLSTM(3, 2, bidirectional=True, num_heads=1)(torch.randn(2, 5, 3))
    passed = FinalStateBridge(SLSTM(3, 2, bidirectional=True, num_heads=1), slstm)(final)
    assert len(passed) == 4  # the whole (h, c, n, m), directions joined: no projection
    torch.testing.assert_close(passed[2], torch.cat([final[2][0], final[2][1]], dim=-1)[None])
    h, c, n, m = Bridge(7, slstm)(torch.randn(2, 7))
    assert (n == 1).all() and (m == 0).all()  # so that c / n = c_0
    h, c = FinalStateBridge(slstm, lstm)(slstm(torch.randn(2, 5, 3))[1])
    assert h.shape == c.shape == (1, 2, 4)
    assert torch.is_tensor(Bridge(7, gru)(torch.randn(2, 7)))  # existing kinds as before
    assert FinalStateBridge(lstm, lstm).project is None


# ------------------------------------------------------------------------------- in the models
@pytest.mark.parametrize("name", NEW)
def test_char_language_model_learns_and_checkpoints_its_state(name, tmp_path):
    pl.seed_everything(0)
    (text := tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 60)
    dm = CharTextDataModule([str(text)], batch_size=4, seq_len=24, val_fraction=0.1)
    task = CharLanguageModel(
        dm.vocab_size,
        core=P(NEW[name], hidden_size=32, num_layers=2),
        embedding_dim=16,
        optimizer=P(torch.optim.Adam, lr=1e-2),
    )
    losses = []
    record = LambdaCallback(on_train_batch_end=lambda *args: losses.append(args[2]["loss"].item()))
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = pl.Trainer(max_steps=25, limit_val_batches=0, callbacks=[record], **quiet,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, dm)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    trainer.save_checkpoint(tmp_path / "lm.ckpt")  # the truncated-BPTT state goes with it
    restored = CharLanguageModel.load_from_checkpoint(tmp_path / "lm.ckpt")
    restored.on_train_start()
    _assert_all_close(state_parts(restored._train_state), state_parts(task._train_state), 0)


@pytest.mark.parametrize("name", NEW)
def test_sampling_steps_match_scoring_the_whole_text(name, tmp_path):
    dm = CharTextDataModule(batch_size=2, seq_len=16)
    torch.manual_seed(0)
    model = CharLanguageModel(dm.vocab_size, core=P(NEW[name], hidden_size=16)).model.double()
    text = generate_text(model, dm.vocab, "ROMEO:", 40, greedy=True)  # one token at a time
    ids = dm.vocab.encode(text)[None]  # (1, T)
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])  # the whole text in one call: the parallel scan
    assert logits[0, 5:].argmax(-1).tolist() == ids[0, 6:].tolist()
    sampled = generate_text(model, dm.vocab, "A", 30, temperature=0.8, seed=1)
    pieces = stream_text(model, dm.vocab, "A", 30, temperature=0.8, seed=1, chunk=7)
    assert sampled == "".join(pieces)  # the state carries across pieces


BOS, EOS = 1, 2
RNNSEARCH = P(RNNSearch, attention_size=6, maxout_size=4)
# (model, encoder, decoder): passed-through states (same kind and shape), bridges between kinds.
TRANSLATION = {
    "seq2seq-mingru2>mingru2": (Seq2Seq, P(MinGRU, hidden_size=6, num_layers=2),
                                P(MinGRU, hidden_size=6, num_layers=2)),
    "seq2seq-slstm-bi>slstm": (Seq2Seq, P(SLSTM, hidden_size=4, num_heads=2, bidirectional=True),
                               P(SLSTM, hidden_size=8)),
    "seq2seq-lstm>slstm": (Seq2Seq, P(LSTM, hidden_size=5), P(SLSTM, hidden_size=6, num_heads=3)),
    "rnnsearch-minlstm-bi>slstm": (RNNSEARCH, P(MinLSTM, hidden_size=5, bidirectional=True),
                                   P(SLSTM, hidden_size=6, num_heads=2)),
    "luong-slstm>minlstm": (LuongNMT, P(SLSTM, hidden_size=6, num_heads=2),
                            P(MinLSTM, hidden_size=6, num_layers=2)),
}  # fmt: skip


def _log_prob(net, src, lengths, hyp):
    with torch.no_grad():
        log_probs = net(src, lengths, torch.tensor([[BOS, *hyp]])).log_softmax(-1)
    return log_probs.gather(-1, torch.tensor([[*hyp, EOS]])[..., None]).sum()


@pytest.mark.parametrize("case", TRANSLATION)
def test_translation_decoding_matches_teacher_forcing(case):
    model, encoder, decoder = TRANSLATION[case]
    torch.manual_seed(0)
    net = model(11, 13, encoder=encoder, decoder=decoder, embedding_dim=5).double().eval()
    g = torch.Generator().manual_seed(1)
    src, lengths = torch.randint(3, 11, (3, 6), generator=g), torch.tensor([5, 2, 6])
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 13, (3, 4), generator=g)], 1)
    logits = net(src, lengths, tgt_in)  # Seq2Seq: the decoder scans all steps at once
    state = net.encode(src, lengths)
    for t in range(tgt_in.shape[1]):
        step_logits, state = net.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=0, atol=1e-12)
    with torch.no_grad():
        greedy = greedy_search(net.decode_step, net.encode(src, lengths), BOS, EOS, lengths + 2)
        search = P(beam_search, net.decode_step, net.reorder_state)
        beam_1 = search(net.encode(src, lengths), BOS, EOS, lengths + 2, beam_size=1)
        beam = search(net.encode(src, lengths), BOS, EOS, lengths + 2, beam_size=3, n_best=2,
                      length_penalty=0.0)  # fmt: skip
    assert beam_1.tokens == greedy.tokens
    for b, hyps in enumerate(beam.tokens):  # rescoring by teacher forcing recovers each score
        for k, hyp in enumerate(hyps):
            score = _log_prob(net, src[b : b + 1], lengths[b : b + 1], hyp)
            torch.testing.assert_close(beam.scores[b, k], score, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("model", [ShowAndTell, ShowAttendTell])
def test_captioning_decoders_step_as_they_run_whole_captions(model, name):
    torch.manual_seed(0)
    encoder, decoder = ImageEncoder("small", channels=8), P(NEW[name], hidden_size=8)
    net = model(13, encoder=encoder, decoder=decoder, embedding_dim=6).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.double)
    captions = torch.cat([torch.full((2, 1), BOS), torch.randint(4, 13, (2, 4))], dim=1)
    logits = net(images, captions)
    state = net.encode(images)
    for t in range(captions.shape[1]):
        step_logits, state = net.decode_step(captions[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=0, atol=1e-12)
    with torch.no_grad():
        search = P(beam_search, net.decode_step, net.reorder_state, batch_size=2)
        hyps = search(net.encode(images), BOS, EOS, 6)
    assert len(hyps.tokens) == 2 and torch.isfinite(hyps.scores).all()
