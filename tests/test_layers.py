"""Attention layers: the papers' formulas, exact zeros on padding, no NaN for empty sources."""

from __future__ import annotations

import pytest
import torch

from zoo.layers import BahdanauAttention, LuongAttention, masked_softmax

B, S, Q, K = 3, 5, 4, 6
LENGTHS = torch.tensor([5, 2, 0])  # the last row is an empty source


def _attentions():
    torch.manual_seed(0)
    return {
        "bahdanau": BahdanauAttention(Q, K, attention_size=7).double(),
        "luong-dot": LuongAttention(K, K, score="dot").double(),
        "luong-general": LuongAttention(Q, K, score="general").double(),
    }


def _inputs(name, lengths=LENGTHS, seq_len=S):
    g = torch.Generator().manual_seed(1)
    query_size = K if name == "luong-dot" else Q
    query = torch.randn(len(lengths), query_size, generator=g, dtype=torch.double)
    keys = torch.randn(len(lengths), seq_len, K, generator=g, dtype=torch.double)
    mask = torch.arange(seq_len) < lengths[:, None]
    return query, keys, mask


@pytest.mark.parametrize("name", ["bahdanau", "luong-dot", "luong-general"])
def test_masked_positions_get_exactly_zero_weight(name):
    attention = _attentions()[name]
    query, keys, mask = _inputs(name)
    context, weights = attention(query, keys, mask)
    assert context.shape == (B, K) and weights.shape == (B, S)
    assert (weights[~mask] == 0).all()
    assert (weights[mask] > 0).all()
    torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2, dtype=torch.double))
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", weights, keys))


@pytest.mark.parametrize("name", ["bahdanau", "luong-dot", "luong-general"])
def test_empty_source_reads_nothing_and_has_finite_gradients(name):
    """Defined behaviour: a row without valid positions has zero weights and a zero context."""
    attention = _attentions()[name]
    query, keys, mask = _inputs(name)
    query.requires_grad_(True)
    keys.requires_grad_(True)
    context, weights = attention(query, keys, mask)
    assert (weights[2] == 0).all() and (context[2] == 0).all()
    (context.sum() + weights.sum()).backward()
    grads = [query.grad, keys.grad, *(p.grad for p in attention.parameters())]
    assert all(torch.isfinite(grad).all() for grad in grads)
    assert (query.grad[2] == 0).all()


@pytest.mark.parametrize("name", ["bahdanau", "luong-dot", "luong-general"])
def test_padding_values_and_width_do_not_matter(name):
    attention = _attentions()[name]
    query, keys, mask = _inputs(name, lengths=torch.tensor([3, 2]), seq_len=5)
    garbage = keys.masked_fill(~mask[..., None], 1e3)
    context, weights = attention(query, keys, mask)
    context_garbage, weights_garbage = attention(query, garbage, mask)
    context_trimmed, weights_trimmed = attention(query, keys[:, :3], mask[:, :3])
    torch.testing.assert_close(context_garbage, context, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights_garbage, weights, rtol=0, atol=1e-12)
    torch.testing.assert_close(context_trimmed, context)
    torch.testing.assert_close(weights_trimmed, weights[:, :3])


@pytest.mark.parametrize("name", ["bahdanau", "luong-dot", "luong-general"])
def test_precomputed_keys_give_the_same_result(name):
    attention = _attentions()[name]
    query, keys, mask = _inputs(name)
    direct = attention(query, keys, mask)
    cached = attention(query, keys, mask, attention.precompute(keys))
    for a, b in zip(direct, cached):
        assert torch.equal(a, b)


def test_bahdanau_matches_the_paper():
    """e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j), alpha = softmax_j(e), c_i = sum_j alpha_ij h_j."""
    attention = _attentions()["bahdanau"]
    query, keys, mask = _inputs("bahdanau", lengths=torch.tensor([5, 3]))
    w_a = attention.query_layer.weight  # (A, Q)
    u_a = attention.key_layer.weight  # (A, K)
    v_a = attention.energy_layer.weight[0]  # (A,)
    for b in range(2):
        n = int(mask[b].sum())
        energy = torch.stack(
            [v_a @ torch.tanh(w_a @ query[b] + u_a @ keys[b, j]) for j in range(n)]
        )
        alpha = torch.softmax(energy, dim=0)
        context, weights = attention(query[b : b + 1], keys[b : b + 1], mask[b : b + 1])
        torch.testing.assert_close(weights[0, :n], alpha.detach())
        torch.testing.assert_close(context[0], (alpha[:, None] * keys[b, :n]).sum(0).detach())


@pytest.mark.parametrize("score", ["dot", "general"])
def test_luong_matches_the_paper(score):
    """score = h_t^T h̄_s (dot) or h_t^T W_a h̄_s (general); a_t = softmax_s(score) (eq. 7-8)."""
    name = f"luong-{score}"
    attention = _attentions()[name]
    query, keys, mask = _inputs(name, lengths=torch.tensor([5, 5]))
    w_a = torch.eye(K, dtype=torch.double) if score == "dot" else attention.key_layer.weight
    expected = torch.softmax(torch.einsum("bq,qk,bsk->bs", query, w_a, keys), dim=-1)
    _, weights = attention(query, keys, mask)
    torch.testing.assert_close(weights, expected.detach())


def test_luong_dot_needs_equal_sizes():
    with pytest.raises(ValueError, match="score='dot'"):
        LuongAttention(4, 6, score="dot")
    with pytest.raises(ValueError, match="score must be"):
        LuongAttention(4, 4, score="concat")


def test_masked_softmax_half_precision_has_no_nan():
    scores = torch.randn(2, 4).half()
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    weights = masked_softmax(scores, mask)
    assert not weights.isnan().any()
    assert weights[1].eq(0).all() and weights[0, [1, 3]].eq(0).all()
