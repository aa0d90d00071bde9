"""Translation models: one interface, teacher forcing == step-by-step decoding, padding invariance,
search on top of decode_step / reorder_state, config round trips, and tiny learning tasks."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from torch import nn

from zoo.cores import GRU, LSTM, RNN, LayerNormLSTM
from zoo.decoding import beam_search, greedy_search
from zoo.models.translation import LuongNMT, RNNSearch, Seq2Seq, TranslationModel

PAD, BOS, EOS = 0, 1, 2
SRC_VOCAB, TGT_VOCAB = 11, 13

# (encoder, decoder) pairs: equal shapes (no bridge), concatenated directions (no bridge), and
# bridges between different sizes, layer counts and state kinds; both backends.
CORES = {
    "lstm>lstm": (partial(LSTM, hidden_size=6), partial(LSTM, hidden_size=6)),
    "gru-bi>gru": (partial(GRU, hidden_size=5, bidirectional=True), partial(GRU, hidden_size=10)),
    "lstm-bi2>gru": (
        partial(LSTM, hidden_size=4, num_layers=2, bidirectional=True),
        partial(GRU, hidden_size=7),
    ),
    "rnn-bi>lstm2": (
        partial(RNN, hidden_size=4, bidirectional=True),
        partial(LSTM, hidden_size=7, num_layers=2),
    ),
    "gru-explicit>lnlstm": (
        partial(GRU, hidden_size=5, backend="explicit"),
        partial(LayerNormLSTM, hidden_size=6),
    ),
}
MODELS = {
    "seq2seq": partial(Seq2Seq, embedding_dim=5),
    "rnnsearch": partial(RNNSearch, embedding_dim=5, attention_size=6, maxout_size=4),
    "luong": partial(LuongNMT, embedding_dim=5),
}
CASES = [(model, cores) for model in MODELS for cores in CORES] + [
    ("luong-dot", "gru-bi>gru"),
    ("luong-nofeed", "rnn-bi>lstm2"),
    ("rnnsearch-reversed", "lstm-bi2>gru"),
]
VARIANTS = {
    "luong-dot": partial(LuongNMT, embedding_dim=5, score="dot"),
    "luong-nofeed": partial(LuongNMT, embedding_dim=5, input_feed=False, attentional_size=3),
    "rnnsearch-reversed": partial(
        RNNSearch, embedding_dim=5, attention_size=6, maxout_size=4, reverse_source=True
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(model: str, cores: str, dtype=torch.double) -> TranslationModel:
    torch.manual_seed(0)
    encoder, decoder = CORES[cores]
    factory = MODELS.get(model) or VARIANTS[model]
    return factory(SRC_VOCAB, TGT_VOCAB, encoder=encoder, decoder=decoder).to(dtype).eval()


def batch(lengths=(5, 2, 3), width=6, tgt_len=4, seed=1):
    """Source ids with *non-pad* garbage past each length (lengths alone mark the padding)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    src = torch.randint(3, SRC_VOCAB, (len(lengths), width), generator=g)
    tgt_in = torch.randint(3, TGT_VOCAB, (len(lengths), tgt_len), generator=g)
    tgt_in[:, 0] = BOS
    return src, lengths, tgt_in


def cases():
    return pytest.mark.parametrize("model,cores", CASES, ids=[f"{m}-{c}" for m, c in CASES])


@cases()
def test_shapes(model, cores):
    net = build(model, cores)
    src, lengths, tgt_in = batch()
    assert net(src, lengths, tgt_in).shape == (3, 4, TGT_VOCAB)
    state = net.encode(src, lengths)
    logits, state = net.decode_step(tgt_in[:, 0], state)
    assert logits.shape == (3, TGT_VOCAB)
    if model == "seq2seq":
        assert state.memory is None and state.attention_weights is None
    else:
        assert state.memory.shape == (3, 6, net.encoder.output_size)
        assert state.mask.tolist() == (torch.arange(6) < lengths[:, None]).tolist()
        assert state.attention_weights.shape == (3, 6)
        assert (state.attention_weights[~state.mask] == 0).all()
        torch.testing.assert_close(state.attention_weights.sum(-1), torch.ones(3).double())


@cases()
def test_decode_step_matches_forward(model, cores):
    net = build(model, cores)
    src, lengths, tgt_in = batch()
    logits = net(src, lengths, tgt_in)  # (B, T, V)
    state = net.encode(src, lengths)
    for t in range(tgt_in.shape[1]):
        step_logits, state = net.decode_step(tgt_in[:, t], state)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=0, atol=1e-12)


@cases()
def test_padding_does_not_change_results(model, cores):
    net = build(model, cores)
    src, lengths, tgt_in = batch()
    logits = net(src, lengths, tgt_in)
    weights = _attention_after_steps(net, src, lengths, tgt_in)
    for b, length in enumerate(lengths.tolist()):
        alone = net(src[b : b + 1, :length], lengths[b : b + 1], tgt_in[b : b + 1])
        torch.testing.assert_close(alone[0], logits[b], rtol=0, atol=1e-12)
        if weights is not None:
            alone_weights = _attention_after_steps(
                net, src[b : b + 1, :length], lengths[b : b + 1], tgt_in[b : b + 1]
            )
            torch.testing.assert_close(alone_weights[0], weights[b, :, :length], rtol=0, atol=1e-12)
            assert (weights[b, :, length:] == 0).all()


def _attention_after_steps(net, src, lengths, tgt_in):
    """``(B, T, S)`` attention weights of every teacher-forced step, None for Seq2Seq."""
    state, weights = net.encode(src, lengths), []
    for t in range(tgt_in.shape[1]):
        _, state = net.decode_step(tgt_in[:, t], state)
        weights.append(state.attention_weights)
    return None if weights[0] is None else torch.stack(weights, dim=1)


@cases()
def test_reorder_state_gathers_every_part(model, cores):
    net = build(model, cores)
    src, lengths, tgt_in = batch()
    index = torch.tensor([2, 0, 0, 1, 2])
    state = net.encode(src, lengths)
    logits, stepped = net.decode_step(tgt_in[:, 0], state)
    reordered_logits, reordered = net.decode_step(tgt_in[index, 0], net.reorder_state(state, index))
    torch.testing.assert_close(reordered_logits, logits[index], rtol=0, atol=1e-12)
    expected = net.reorder_state(stepped, index)
    for got, want in zip(_tensors(reordered), _tensors(expected)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _tensors(state):
    rnn = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
    return [*rnn, *(x for x in state[1:] if x is not None)]


def _beam(net, src, lengths, max_len, **kwargs):
    state = net.encode(src, lengths)
    return beam_search(net.decode_step, net.reorder_state, state, BOS, EOS, max_len, **kwargs)


@cases()
def test_greedy_and_beam_search_score_what_forward_scores(model, cores):
    net = build(model, cores)
    src, lengths, _ = batch()
    max_len = lengths + 2
    with torch.no_grad():
        greedy = greedy_search(net.decode_step, net.encode(src, lengths), BOS, EOS, max_len)
        beam_1 = _beam(net, src, lengths, max_len, beam_size=1)
        beam = _beam(net, src, lengths, max_len, beam_size=4, n_best=3, length_penalty=0.0)
    assert beam_1.tokens == greedy.tokens
    torch.testing.assert_close(beam_1.scores, greedy.scores)
    # Rescoring every beam hypothesis by teacher forcing recovers its score: the reordering of
    # every part of the state (memory, mask, RNN state, input feeding) is consistent.
    for b, hyps in enumerate(beam.tokens):
        assert len(hyps) == 3
        for k, hyp in enumerate(hyps):
            score = _log_prob(net, src[b : b + 1], lengths[b : b + 1], hyp)
            torch.testing.assert_close(beam.scores[b, k], score, rtol=0, atol=1e-10)


@cases()
def test_beam_reorders_that_skip_the_memory_change_nothing(model, cores):
    net = build(model, cores)
    src, lengths, _ = batch()
    with torch.no_grad():
        full = _beam(net, src, lengths, lengths + 2, beam_size=4, n_best=2)
        cheap = _beam(net, src, lengths, lengths + 2, beam_size=4, n_best=2,
                      reorder_beams_fn=net.reorder_beams)  # fmt: skip
    assert cheap.tokens == full.tokens
    torch.testing.assert_close(cheap.scores, full.scores, rtol=0, atol=0)


def _log_prob(net, src, lengths, hyp):
    tgt_in = torch.tensor([[BOS, *hyp]])
    tgt_out = torch.tensor([[*hyp, EOS]])
    with torch.no_grad():
        log_probs = net(src, lengths, tgt_in).log_softmax(-1)
    return log_probs.gather(-1, tgt_out[..., None]).sum()


@cases()
def test_config_round_trip(model, cores):
    net = build(model, cores, dtype=torch.float)
    config = json.loads(json.dumps(net.config()))
    rebuilt = type(net).from_config(config).eval()
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.config() == net.config()
    src, lengths, tgt_in = batch()
    assert torch.equal(rebuilt(src, lengths, tgt_in), net(src, lengths, tgt_in))


@cases()
def test_empty_source_gives_finite_results(model, cores):
    net = build(model, cores)
    src, lengths, tgt_in = batch(lengths=(3, 0))
    logits = net(src, lengths, tgt_in)
    assert torch.isfinite(logits).all()
    weights = _attention_after_steps(net, src, lengths, tgt_in)
    if weights is not None:
        assert (weights[1] == 0).all()
    empty = torch.zeros(2, 0, dtype=torch.long)  # a batch whose sources are all empty
    assert torch.isfinite(net(empty, torch.tensor([0, 0]), tgt_in)).all()


@pytest.mark.parametrize("factory", [Seq2Seq, RNNSearch, LuongNMT])
def test_bidirectional_decoder_is_rejected(factory):
    with pytest.raises(ValueError, match="decoder must be unidirectional"):
        factory(
            SRC_VOCAB,
            TGT_VOCAB,
            encoder=partial(GRU, hidden_size=4),
            decoder=partial(GRU, hidden_size=4, bidirectional=True),
            embedding_dim=5,
        )


def test_luong_dot_needs_matching_sizes():
    with pytest.raises(ValueError, match="score='dot'"):
        LuongNMT(
            SRC_VOCAB,
            TGT_VOCAB,
            encoder=partial(GRU, hidden_size=4, bidirectional=True),
            decoder=partial(GRU, hidden_size=4),
            embedding_dim=5,
            score="dot",
        )


def test_final_state_passes_through_when_shapes_match():
    """Sutskever et al.: encoder layer k's final (h, c) is decoder layer k's initial state."""
    net = build("seq2seq", "gru-bi>gru")
    assert net.bridge.project is None
    src, lengths, _ = batch()
    x = net.src_embedding(_reverse(src, lengths))  # Sutskever et al.: the source read backwards
    _, final = net.encoder(x, None, lengths)  # (2, B, 5): forward, backward
    state = net.encode(src, lengths)
    torch.testing.assert_close(state.rnn, torch.cat([final[0], final[1]], dim=-1)[None])
    assert build("seq2seq", "rnn-bi>lstm2").bridge.project is not None


def _reverse(src, lengths):
    return torch.stack([torch.cat([s[:n].flip(0), s[n:]]) for s, n in zip(src, lengths)])


def test_rnnsearch_initial_state_reads_the_first_backward_annotation():
    """s_0 = tanh(W_s ←h_1) (Bahdanau et al. 2014, A.2.2): ←h_1 is memory[:, 0, n:]."""
    net = build("rnnsearch", "gru-bi>gru")
    src, lengths, _ = batch()
    state = net.encode(src, lengths)
    backward_first = state.memory[:, 0, 5:]  # (B, n), n = 5 units per direction
    expected = torch.tanh(net.bridge.hidden(backward_first))
    torch.testing.assert_close(state.rnn, expected[None])


# ------------------------------------------------------------------ tiny learning tasks

LEARN_VOCAB = 13  # PAD, BOS, EOS and 10 symbols
MAX_LEN = 6


def _task(g: torch.Generator, size: int, reverse: bool):
    """Random sequences of 1..6 symbols; the target is the source, or the source reversed."""
    lengths = torch.randint(1, MAX_LEN + 1, (size,), generator=g)
    src = torch.randint(3, LEARN_VOCAB, (size, MAX_LEN), generator=g)
    src = src.masked_fill(torch.arange(MAX_LEN) >= lengths[:, None], PAD)
    targets = [s[:n].flip(0) if reverse else s[:n] for s, n in zip(src, lengths.tolist())]
    tgt_in = torch.full((size, MAX_LEN + 1), PAD)
    tgt_out = torch.full((size, MAX_LEN + 1), PAD)
    for b, y in enumerate(targets):
        tgt_in[b, : len(y) + 1] = torch.cat([torch.tensor([BOS]), y])
        tgt_out[b, : len(y) + 1] = torch.cat([y, torch.tensor([EOS])])
    return src, lengths, tgt_in, tgt_out, [y.tolist() for y in targets]


def _train(net: TranslationModel, reverse: bool, steps: int, lr: float = 1e-2) -> None:
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        src, lengths, tgt_in, tgt_out, _ = _task(g, 32, reverse)
        logits = net(src, lengths, tgt_in)
        loss = nn.functional.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()


def _greedy_accuracy(net: TranslationModel, reverse: bool) -> float:
    """Token accuracy of greedy decoding on fresh sequences; wrong lengths count as errors."""
    src, lengths, _, _, targets = _task(torch.Generator().manual_seed(123), 200, reverse)
    with torch.no_grad():
        hyps = greedy_search(
            net.decode_step, net.encode(src, lengths), BOS, EOS, MAX_LEN + 2, batch_size=200
        ).best
    correct = sum(sum(a == b for a, b in zip(h, y)) for h, y in zip(hyps, targets))
    return correct / sum(max(len(h), len(y)) for h, y in zip(hyps, targets))


def _mirrored_attention(net: RNNSearch) -> float:
    """Mean weight that step i puts on source position L - 1 - i (the reversal's alignment)."""
    src, lengths, tgt_in, _, _ = _task(torch.Generator().manual_seed(7), 200, reverse=True)
    with torch.no_grad():
        weights = _attention_after_steps(net, src, lengths, tgt_in)  # (B, T, S)
    on_target = [weights[b, i, n - 1 - i] for b, n in enumerate(lengths.tolist()) for i in range(n)]
    return torch.stack(on_target).mean().item()


def test_seq2seq_learns_to_copy():
    torch.manual_seed(0)
    net = Seq2Seq(
        LEARN_VOCAB,
        LEARN_VOCAB,
        encoder=partial(LSTM, hidden_size=64),
        decoder=partial(LSTM, hidden_size=64),
        embedding_dim=16,
    )
    _train(net, reverse=False, steps=500)
    assert _greedy_accuracy(net, reverse=False) > 0.9


def test_rnnsearch_learns_to_reverse_and_aligns_with_the_mirrored_position():
    torch.manual_seed(0)
    net = RNNSearch(
        LEARN_VOCAB,
        LEARN_VOCAB,
        encoder=partial(GRU, hidden_size=16, bidirectional=True),
        decoder=partial(GRU, hidden_size=32),
        embedding_dim=16,
        attention_size=32,
        maxout_size=32,
    )
    _train(net, reverse=True, steps=400)
    assert _greedy_accuracy(net, reverse=True) > 0.9
    assert _mirrored_attention(net) > 0.5


def test_luong_learns_to_reverse():
    torch.manual_seed(0)
    net = LuongNMT(
        LEARN_VOCAB,
        LEARN_VOCAB,
        encoder=partial(LSTM, hidden_size=32),
        decoder=partial(LSTM, hidden_size=32),
        embedding_dim=16,
    )
    _train(net, reverse=True, steps=300)
    assert _greedy_accuracy(net, reverse=True) > 0.9
