"""Tests for zoo.decoding against brute force, a plain reference beam search and exact sampling."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from zoo import decoding
from zoo.decoding import beam_search, filter_logits, greedy_search, sample

EOS = 0
CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
)


class ToyModel:
    """A deterministic "decoder" whose logits depend on the whole history and the sentence.

    logits = table[prev] + memory[sentence] + by_step[t] + (sum of past token embeddings) @ readout

    State: ``hist`` (2, N, 3) with the batch on dim 1 (row 0 counts steps, row 1 sums token
    embeddings) and ``memory`` (N, V) with the batch on dim 0, like an encoder memory. Token
    ``V`` is BOS: it has a row in the table but is never emitted.
    """

    def __init__(self, vocab_size, batch_size, seed=0, eos_bias=0.0, device="cpu"):
        g = torch.Generator().manual_seed(seed)

        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device)

        self.vocab_size, self.bos = vocab_size, vocab_size
        self.table = randn(vocab_size + 1, vocab_size, scale=2.0)
        self.table[:, EOS] += eos_bias
        self.by_step = randn(8, vocab_size, scale=0.5)
        self.embed = randn(vocab_size + 1, 3)
        self.readout = randn(3, vocab_size, scale=0.5)
        self.memory = randn(batch_size, vocab_size)
        self.calls = 0
        self.rows = []  # rows decoded at each call

    def initial_state(self, rows=None):
        hist = torch.zeros(
            2, self.memory.shape[0], 3, dtype=torch.float64, device=self.table.device
        )
        state = (hist, self.memory)
        return state if rows is None else self.reorder(state, torch.as_tensor(rows))

    def step(self, tokens, state):
        self.calls += 1
        self.rows.append(tokens.shape[0])
        hist, memory = state  # (2, N, 3), (N, V)
        count = hist[0, :, 0].long().clamp(max=self.by_step.shape[0] - 1)  # (N,)
        logits = self.table[tokens] + memory + self.by_step[count] + hist[1] @ self.readout
        hist = torch.stack([hist[0] + 1, hist[1] + self.embed[tokens]])
        return logits, (hist, memory)

    @staticmethod
    def reorder(state, index):
        hist, memory = state
        index = index.to(memory.device)
        return hist[:, index], memory[index]


def sequence_log_prob(model, row, bos, tokens):
    """log p(tokens + [EOS]) for sentence ``row``, fed one token at a time."""
    state, prev, total = model.initial_state([row]), torch.tensor([bos]), 0.0
    for token in [*tokens, EOS]:
        logits, state = model.step(prev, state)
        total += logits.log_softmax(-1)[0, token].item()
        prev = torch.tensor([token])
    return total


def brute_force(model, row, bos, max_len, length_penalty):
    """Every complete hypothesis of sentence ``row``, as (score, tokens), best first."""
    results = []
    for n in range(max_len + 1):
        combos = list(itertools.product(range(1, model.vocab_size), repeat=n))
        seqs = torch.tensor(combos, dtype=torch.long).reshape(len(combos), n)  # (M, n)
        full = torch.cat([seqs, torch.full((len(combos), 1), EOS)], dim=1)  # (M, n + 1)
        state = model.initial_state([row] * len(combos))
        prev, total = torch.full((len(combos),), bos), torch.zeros(len(combos), dtype=torch.float64)
        for t in range(n + 1):
            logits, state = model.step(prev, state)
            total += logits.log_softmax(-1).gather(1, full[:, t : t + 1]).squeeze(1)
            prev = full[:, t]
        scores = total / (n + 1) ** length_penalty
        results += list(zip(scores.tolist(), seqs.tolist(), strict=True))
    return sorted(results, key=lambda r: -r[0])


def reference_beam(model, row, bos, max_len, beam_size, length_penalty):
    """One sentence, one hypothesis at a time, written plainly; (score, tokens), best first."""

    def normalized(beam):
        return beam[0] / len(beam[1]) ** length_penalty

    beams = [(0.0, [], False, model.initial_state([row]), bos)]  # raw, tokens, done, state, prev
    for t in range(max_len + 1):
        candidates = []
        for raw, tokens, done, state, prev in beams:
            if done:
                candidates.append((raw, tokens, done, state, prev))
                continue
            logits, new_state = model.step(torch.tensor([prev]), state)
            log_probs = logits.log_softmax(-1)[0].tolist()
            for v in range(model.vocab_size):
                if t < max_len or v == EOS:
                    candidates.append((raw + log_probs[v], [*tokens, v], v == EOS, new_state, v))
        beams = sorted(candidates, key=normalized, reverse=True)[:beam_size]
        if all(beam[2] for beam in beams):
            break
    return [(normalized(beam), beam[1][:-1]) for beam in beams]


def run_beam(model, max_len, bos=None, state=None, **kwargs):
    bos = model.bos if bos is None else bos
    state = model.initial_state() if state is None else state
    kwargs.setdefault(
        "batch_size", None if isinstance(max_len, torch.Tensor) else state[1].shape[0]
    )
    return beam_search(model.step, model.reorder, state, bos, EOS, max_len, **kwargs)


def assert_hypotheses_equal(hyps, expected, row):
    """``expected`` is a (score, tokens) list, best first."""
    assert hyps.tokens[row] == [tokens for _, tokens in expected]
    scores = hyps.scores[row, : len(expected)].tolist()
    assert scores == pytest.approx([score for score, _ in expected], abs=1e-9)


# --------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_exhaustive_beam_matches_brute_force(length_penalty):
    # V=4 has 3 content tokens: at most 1 + 3 + 9 + 27 = 40 hypotheses, so a beam of 40 is exact.
    model = ToyModel(vocab_size=4, batch_size=3, seed=1)
    max_len = torch.tensor([3, 2, 0])
    hyps = run_beam(model, max_len, beam_size=40, n_best=5, length_penalty=length_penalty)
    for row, limit in enumerate(max_len.tolist()):
        expected = brute_force(model, row, model.bos, limit, length_penalty)[:5]
        assert_hypotheses_equal(hyps, expected, row)
    assert hyps.tokens[2] == [[]]  # max_len 0: only the empty hypothesis ...
    assert hyps.scores[2, 1:].isneginf().all()  # ... and no others


def test_length_penalty_changes_the_winner():
    # Raw log-prob favours short outputs, a strong penalty favours long ones (brute force above
    # checks the exact values); make sure this toy actually exercises that difference.
    model = ToyModel(vocab_size=4, batch_size=1, seed=2)
    short = run_beam(model, 3, beam_size=40, length_penalty=0.0).best[0]
    long = run_beam(model, 3, beam_size=40, length_penalty=2.0).best[0]
    assert len(short) < len(long)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_matches_reference_beam(length_penalty):
    model = ToyModel(vocab_size=5, batch_size=4, seed=2)
    max_len, bos = torch.tensor([6, 4, 1, 5]), torch.tensor([5, 5, 2, 3])
    hyps = run_beam(model, max_len, bos=bos, beam_size=3, n_best=3, length_penalty=length_penalty)
    for row in range(4):
        expected = reference_beam(
            model, row, bos[row].item(), max_len[row].item(), 3, length_penalty
        )
        assert_hypotheses_equal(hyps, expected, row)


def test_batch_equals_each_sentence_alone():
    model = ToyModel(vocab_size=5, batch_size=4, seed=3)
    max_len = torch.tensor([5, 2, 0, 3])
    batched = run_beam(model, max_len, beam_size=3, n_best=2)
    for row in range(4):
        alone = run_beam(
            model, max_len[row : row + 1], state=model.initial_state([row]), beam_size=3, n_best=2
        )
        assert batched.tokens[row] == alone.tokens[0]
        torch.testing.assert_close(batched.scores[row], alone.scores[0])


def test_scores_are_length_normalised_log_probs():
    model = ToyModel(vocab_size=5, batch_size=2, seed=4)
    hyps = run_beam(model, 4, beam_size=3, n_best=3, length_penalty=0.7)
    for row in range(2):
        for tokens, score in zip(hyps.tokens[row], hyps.scores[row].tolist(), strict=True):
            log_prob = sequence_log_prob(model, row, model.bos, tokens)
            assert score == pytest.approx(log_prob / (len(tokens) + 1) ** 0.7)


def test_n_best_distinct_and_sorted():
    model = ToyModel(vocab_size=6, batch_size=3, seed=5)
    hyps = run_beam(model, 6, beam_size=5, n_best=5)
    for row in range(3):
        assert len(hyps.tokens[row]) == 5
        assert len({tuple(h) for h in hyps.tokens[row]}) == 5
    assert (hyps.scores[:, :-1] >= hyps.scores[:, 1:]).all()


def test_beam_size_one_equals_greedy():
    model = ToyModel(vocab_size=6, batch_size=4, seed=6)
    max_len, bos = torch.tensor([7, 3, 0, 5]), torch.tensor([6, 1, 6, 2])
    state = model.initial_state()
    greedy = greedy_search(model.step, state, bos, EOS, max_len, length_penalty=0.5)
    beam = run_beam(model, max_len, bos=bos, beam_size=1, length_penalty=0.5)
    assert beam.tokens == greedy.tokens
    torch.testing.assert_close(beam.scores, greedy.scores)


def test_greedy_is_argmax_chain():
    model = ToyModel(vocab_size=6, batch_size=3, seed=7)
    max_len = torch.tensor([6, 2, 0])
    hyps = greedy_search(model.step, model.initial_state(), model.bos, EOS, max_len)
    for row, limit in enumerate(max_len.tolist()):
        state, prev, tokens, log_prob = model.initial_state([row]), model.bos, [], 0.0
        for t in range(limit + 1):
            logits, state = model.step(torch.tensor([prev]), state)
            log_probs = logits.log_softmax(-1)[0]
            prev = EOS if t == limit else log_probs.argmax().item()
            log_prob += log_probs[prev].item()
            if prev == EOS:
                break
            tokens.append(prev)
        assert hyps.tokens[row] == [tokens]
        assert hyps.scores[row, 0].item() == pytest.approx(log_prob / (len(tokens) + 1))


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_per_sentence_max_len_is_respected(search):
    # EOS is very unlikely, so every hypothesis runs to its own max_len and ends with forced EOS.
    model = ToyModel(vocab_size=5, batch_size=4, seed=8, eos_bias=-30.0)
    max_len = torch.tensor([4, 1, 0, 6])
    if search == "greedy":
        hyps = greedy_search(model.step, model.initial_state(), model.bos, EOS, max_len)
    else:
        hyps = run_beam(model, max_len, beam_size=3, n_best=3)
    for row, limit in enumerate(max_len.tolist()):
        assert all(len(h) == limit for h in hyps.tokens[row])


def test_every_beam_ends_early():
    # EOS dominates: after two steps all beams have ended, and decoding stops at the next check.
    model = ToyModel(vocab_size=5, batch_size=2, seed=9, eos_bias=20.0)
    hyps = run_beam(model, 50, beam_size=3, n_best=3)
    assert model.calls == decoding.FINISHED_CHECK_EVERY
    for row in range(2):
        assert hyps.tokens[row][0] == []
        assert [len(h) for h in hyps.tokens[row][1:]] == [1, 1]
    assert hyps.scores.isfinite().all()


@pytest.mark.parametrize("seed", range(4))
def test_early_stopping_is_exact_without_length_penalty(seed):
    # Raw log-probs only fall as a hypothesis grows: once the best beam has ended, nothing open
    # can overtake it, so stopping then gives the exhaustive search's answer with fewer steps.
    early_model = ToyModel(vocab_size=6, batch_size=4, seed=seed)
    early = run_beam(early_model, 7, beam_size=4, length_penalty=0.0)
    full_model = ToyModel(vocab_size=6, batch_size=4, seed=seed)
    full = run_beam(full_model, 7, beam_size=4, length_penalty=0.0, early_stopping=False)
    assert early.tokens == full.tokens
    torch.testing.assert_close(early.scores, full.scores)
    assert sum(early_model.rows) <= sum(full_model.rows)
    for row in range(4):
        expected = reference_beam(full_model, row, full_model.bos, 7, 4, 0.0)[:1]
        assert_hypotheses_equal(early, expected, row)


def test_early_stopping_saves_steps():
    # EOS is likely: the best beam ends at once while the others wander to max_len.
    runs = {}
    for early_stopping in (True, False):
        model = ToyModel(vocab_size=6, batch_size=3, seed=0, eos_bias=2.0)
        run_beam(model, 20, beam_size=4, early_stopping=early_stopping)
        runs[early_stopping] = sum(model.rows)
    assert runs[True] < runs[False] / 2, runs


def test_ended_sentences_leave_the_batch():
    # EOS is very unlikely, so each sentence runs to its max_len; the short one leaves at the
    # first check and the rest is decoded with 3 rows, not 6. Results as if decoded alone.
    model = ToyModel(vocab_size=5, batch_size=2, seed=12, eos_bias=-30.0)
    max_len = torch.tensor([1, 10])
    hyps = run_beam(model, max_len, beam_size=3, n_best=2)
    every = decoding.FINISHED_CHECK_EVERY
    assert model.rows == [6] * every + [3] * (11 - every)
    for row in range(2):
        alone = run_beam(
            model, max_len[row : row + 1], state=model.initial_state([row]), beam_size=3, n_best=2
        )
        assert hyps.tokens[row] == alone.tokens[0]
        torch.testing.assert_close(hyps.scores[row], alone.scores[0])


def test_beam_larger_than_vocab():
    model = ToyModel(vocab_size=4, batch_size=2, seed=10)
    # max_len 1 allows 4 hypotheses: all found, the other 6 slots are -inf and not returned.
    hyps = run_beam(model, 1, beam_size=10, n_best=10)
    for row in range(2):
        assert_hypotheses_equal(hyps, brute_force(model, row, model.bos, 1, 1.0), row)
    assert hyps.scores[:, 4:].isneginf().all()
    # 13 hypotheses for 10 slots: pruning happens, results stay distinct and sorted.
    hyps = run_beam(model, 2, beam_size=10, n_best=10)
    assert [len({tuple(h) for h in sentence}) for sentence in hyps.tokens] == [10, 10]
    assert (hyps.scores[:, :-1] >= hyps.scores[:, 1:]).all()


def test_max_len_zero():
    model = ToyModel(vocab_size=5, batch_size=2, seed=11)
    for hyps in (
        run_beam(model, 0, beam_size=4, n_best=2),
        greedy_search(model.step, model.initial_state(), model.bos, EOS, 0, batch_size=2),
    ):
        assert hyps.best == [[], []]
        for row in range(2):
            expected = sequence_log_prob(model, row, model.bos, [])
            assert hyps.scores[row, 0].item() == pytest.approx(expected)


def test_low_precision_logits_are_promoted():
    # bf16 logits must be scored in float32: same result as float32 logits of the same values.
    model = ToyModel(vocab_size=6, batch_size=3, seed=12)

    def step_as(dtype):
        def step(tokens, state):
            logits, state = model.step(tokens, state)
            return logits.to(torch.bfloat16).to(dtype), state

        return step

    kwargs = dict(bos=model.bos, eos=EOS, max_len=5, beam_size=3, n_best=3, batch_size=3)
    low = beam_search(step_as(torch.bfloat16), model.reorder, model.initial_state(), **kwargs)
    high = beam_search(step_as(torch.float32), model.reorder, model.initial_state(), **kwargs)
    assert low.scores.dtype == torch.float32
    assert low.tokens == high.tokens
    torch.testing.assert_close(low.scores, high.scores)


def test_padded():
    hyps = decoding.Hypotheses(tokens=[[[4, 5], []], [[3]]], scores=torch.zeros(2, 2))
    tokens, lengths = hyps.padded(pad=9)
    assert tokens.tolist() == [[[4, 5], [9, 9]], [[3, 9], [9, 9]]]
    assert lengths.tolist() == [[2, 0], [1, 0]]


def test_argument_errors():
    model = ToyModel(vocab_size=4, batch_size=2)
    with pytest.raises(ValueError, match="n_best"):
        run_beam(model, 3, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="max_len"):
        run_beam(model, torch.tensor([2, -1]))
    with pytest.raises(ValueError, match="batch size"):
        beam_search(model.step, model.reorder, model.initial_state(), 4, EOS, 3)  # B unknown
    with pytest.raises(ValueError, match="batch size"):
        run_beam(model, torch.tensor([2, 3]), bos=torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="eos=7"):
        beam_search(model.step, model.reorder, model.initial_state(), 4, 7, 3, batch_size=2)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_devices_agree(device):
    # Same toy on the device and on the CPU: same hypotheses, scores equal up to float64 rounding.
    cpu, other = ToyModel(5, 3, seed=13), ToyModel(5, 3, seed=13, device=device)
    max_len = torch.tensor([5, 0, 3])
    expected = run_beam(cpu, max_len, beam_size=3, n_best=2)
    got = run_beam(other, max_len.to(device), beam_size=3, n_best=2)
    assert got.tokens == expected.tokens
    assert got.scores.device.type == device
    torch.testing.assert_close(got.scores.cpu(), expected.scores)
    greedy = greedy_search(other.step, other.initial_state(), other.bos, EOS, 4, batch_size=3)
    assert greedy.scores.device.type == device  # device found in the state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_few_host_syncs_on_cuda(search):
    model = ToyModel(5, 3, seed=14, device="cuda")
    max_len = torch.tensor([13, 3, 7])  # on the CPU: reading the loop bound costs no device sync
    bos = torch.full((3,), model.bos, device="cuda")
    state = model.initial_state()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            if search == "greedy":
                greedy_search(model.step, state, bos, EOS, max_len)
            else:
                beam_search(model.step, model.reorder, state, bos, EOS, max_len, beam_size=3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "called a synchronizing" in str(w.message)]
    # Copying max_len to the GPU, "all finished?" after steps 4, 8, 12 (of at most 14), and one
    # transfer of the results: nothing per step.
    assert len(syncs) <= 1 + 14 // decoding.FINISHED_CHECK_EVERY + 1, syncs


# --------------------------------------------------------------------------- sampling


def fixed_step(log_probs):
    """A step function ignoring its input: every row has the same distribution."""

    def step(tokens, state):
        return log_probs.expand(tokens.shape[0], -1), state + 1

    return step


def test_sample_greedy_is_argmax_chain():
    model = ToyModel(vocab_size=6, batch_size=3, seed=20)
    first = torch.tensor([6, 2, 4])
    out, state = sample(model.step, model.initial_state(), first, 5, greedy=True)
    prev, ref_state = first, model.initial_state()
    for t in range(5):
        logits, ref_state = model.step(prev, ref_state)
        prev = logits.argmax(-1)
        assert out[:, t].tolist() == prev.tolist()
    # The final state has consumed first + out[:, :-1]: five steps.
    assert (state[0][0] == 5).all()
    torch.testing.assert_close(state[0], ref_state[0])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_sample_seed_reproducible(device):
    model = ToyModel(vocab_size=6, batch_size=4, seed=21, device=device)
    first = torch.full((4,), 6, device=device)

    def draw(seed):
        generator = torch.Generator(device).manual_seed(seed)
        kwargs = dict(temperature=2.0, generator=generator)
        return sample(model.step, model.initial_state(), first, 20, **kwargs)[0]

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_top_k_one_equals_greedy():
    model = ToyModel(vocab_size=6, batch_size=4, seed=22)
    first = torch.full((4,), 6)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(temperature=3.0, top_k=1, generator=generator)
    top1, _ = sample(model.step, model.initial_state(), first, 12, **kwargs)
    greedy, _ = sample(model.step, model.initial_state(), first, 12, greedy=True)
    assert torch.equal(top1, greedy)


def kept(logits):
    return (logits > -math.inf).nonzero().flatten().tolist()


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()  # sorted: 1 (.5), 3 (.3), 0 (.15), 2 (.05)
    assert kept(filter_logits(logits, top_p=0.3)) == [1]
    assert kept(filter_logits(logits, top_p=0.7)) == [1, 3]
    assert kept(filter_logits(logits, top_p=0.85)) == [0, 1, 3]
    assert kept(filter_logits(logits, top_p=0.97)) == [0, 1, 2, 3]
    assert kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3]
    # Top-k first: {1, 3} renormalised to (.625, .375), then the nucleus of that.
    assert kept(filter_logits(logits, top_k=2, top_p=0.6)) == [1]
    assert kept(filter_logits(logits, top_k=2, top_p=0.7)) == [1, 3]
    # Exactly at the boundary (uniform: masses .25, .5, .75 are exact): two tokens reach .5.
    assert len(kept(filter_logits(torch.zeros(4), top_p=0.5))) == 2
    # Kept entries are unchanged.
    torch.testing.assert_close(filter_logits(logits, top_p=0.7)[[1, 3]], logits[[1, 3]])


def test_top_k_keeps_exactly_k_per_row():
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, -2.0, 1.0, 0.0]])
    filtered = filter_logits(logits, top_k=2)
    assert (filtered > -math.inf).tolist() == [
        [False, True, False, True],
        [True, False, True, False],
    ]
    assert torch.equal(filter_logits(logits, top_k=10), logits)


def test_low_temperature_approaches_argmax():
    log_probs = torch.tensor([1.0, 1.2, 0.9, 1.1])
    first = torch.zeros(2000, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    cold, _ = sample(fixed_step(log_probs), 0, first, 1, temperature=1e-3, generator=generator)
    warm, _ = sample(fixed_step(log_probs), 0, first, 1, temperature=1.0, generator=generator)
    assert (cold == 1).all()
    assert (warm != 1).float().mean() > 0.5


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(), [0.4, 0.25, 0.2, 0.1, 0.05]),
        (dict(top_k=3), [0.4 / 0.85, 0.25 / 0.85, 0.2 / 0.85, 0, 0]),
        (dict(top_p=0.6), [0.4 / 0.65, 0.25 / 0.65, 0, 0, 0]),
        (dict(temperature=2.0), None),  # p ** (1 / 2), renormalised
    ],
)
def test_empirical_frequencies(kwargs, expected):
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05], dtype=torch.float64)
    if expected is None:
        expected = (probs**0.5 / (probs**0.5).sum()).tolist()
    n = 20_000
    generator = torch.Generator().manual_seed(0)
    first = torch.zeros(n, dtype=torch.long)
    out, state = sample(fixed_step(probs.log()), 0, first, 2, generator=generator, **kwargs)
    assert state == 2
    frequencies = torch.bincount(out.flatten(), minlength=5) / out.numel()
    # Standard error is <= sqrt(.25 / 40000) = .0025; allow 6 of them.
    torch.testing.assert_close(frequencies, torch.tensor(expected), atol=0.015, rtol=0.0)


def test_sampling_argument_errors():
    step = fixed_step(torch.zeros(3))
    first = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"temperature.*0\.0"):
        sample(step, 0, first, 3, temperature=0.0)
    with pytest.raises(ValueError, match="-1.5"):
        sample(step, 0, first, 3, temperature=-1.5)
    assert sample(step, 0, first, 3, temperature=0.0, greedy=True)[0].shape == (2, 3)
    with pytest.raises(ValueError, match="top_p"):
        sample(step, 0, first, 3, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        filter_logits(torch.zeros(3), top_k=0)
