"""zoo.layers.Dropout: nn.Dropout's distribution from a quarter of the random draws on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers import Dropout, keep_scale


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_the_drop_rate_and_the_scale_are_dropouts(p):
    torch.manual_seed(0)
    mask = keep_scale((1000, 1000), p, torch.float32)
    dropped = (mask == 0).double().mean().item()
    assert abs(dropped - p) < 0.002  # 10 standard deviations of 10^6 draws
    kept = mask[mask != 0].unique()
    assert kept.numel() == 1 and abs(kept.item() - 1 / (1 - p)) < 1e-4
    assert abs(mask.double().mean().item() - 1.0) < 0.005  # E[mask] = 1: no rescaling bias


def test_every_16_bit_lane_of_a_draw_is_uniform_and_independent():
    # Four elements share each 64-bit draw: each lane must drop at p by itself (a draw whose top
    # bit were always 0, as int64's random_() gives, would keep every fourth element), and the
    # lanes must not drop together.
    torch.manual_seed(1)
    dropped = keep_scale((250_000, 4), 0.5, torch.float32) == 0
    lane_rate = dropped.double().mean(0)
    assert torch.all((lane_rate - 0.5).abs() < 0.005), lane_rate
    together = (dropped[:, 0] & dropped[:, 1]).double().mean().item()
    assert abs(together - 0.25) < 0.005


def test_the_mask_follows_the_seed_and_changes_between_calls():
    x = torch.ones(8, 50, 16)
    layer = Dropout(0.3)
    torch.manual_seed(7)
    first, second = layer(x), layer(x)
    torch.manual_seed(7)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_gradients_flow_through_the_kept_elements_only():
    torch.manual_seed(0)
    x = torch.randn(4, 30, 12, requires_grad=True)
    y = Dropout(0.25)(x)
    y.sum().backward()
    kept = y != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 65536 / (65536 - 16384)))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


def test_bfloat16_keeps_its_dtype_and_scale():
    torch.manual_seed(0)
    x = torch.ones(64, 64, dtype=torch.bfloat16)
    y = Dropout(0.2)(x)
    assert y.dtype == torch.bfloat16
    assert set(y.unique().tolist()) == {0.0, 1.25}


def test_eval_zero_rate_and_everything_dropped_are_as_nn_dropout():
    x = torch.randn(3, 5, 7, requires_grad=True)
    layer = Dropout(0.4).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    everything = Dropout(1.0)(x)
    torch.testing.assert_close(everything, nn.Dropout(1.0)(x))  # zeros, no NaN
    everything.sum().backward()  # still in the graph (DDP needs every parameter used)
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_a_rate_below_the_16_bit_resolution_drops_nothing():
    # round(p * 2**16) = 0 below 2**-17: documented, and then nothing is dropped at all.
    torch.manual_seed(0)
    assert torch.equal(keep_scale((100, 100), 1e-6, torch.float32), torch.ones(100, 100))
