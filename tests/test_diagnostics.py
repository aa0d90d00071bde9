"""The lecture's BPTT claim, checked on a fixed seed."""

import pytest
import torch

from zoo import diagnostics
from zoo.cli.diagnose import main
from zoo.cores import GRU, LSTM, RNN, MinGRU
from zoo.diagnostics import default_cores, gradient_flow
from zoo.errors import UserError


@pytest.mark.parametrize("make", [RNN, GRU, LSTM], ids=["RNN", "GRU", "LSTM"])
def test_stepping_the_core_gives_the_gradients_of_its_cell_equations(make):
    """The path minGRU and minLSTM take (the core's own one-step forward), checked against the
    cell equations' path on the classic cores, whose fused kernel it then runs."""
    torch.manual_seed(3)
    core = make(8, 12, num_layers=2).double()  # layer 0 is measured; the one above changes nothing
    x = torch.randn(16, 25, 8, dtype=torch.double)
    v = torch.randn(12, dtype=torch.double)
    stepped = diagnostics._unroll_steps(core, x)
    by_cell = diagnostics._unroll(core, x)[0]
    assert len(stepped) == len(by_cell) == 25
    torch.testing.assert_close(
        diagnostics._norms_back_from_end((stepped[-1] * v).sum(), stepped),
        diagnostics._norms_back_from_end((by_cell[-1] * v).sum(), by_cell),
        rtol=1e-10, atol=0,
    )  # fmt: skip


def test_mingru_gradient_is_the_product_of_its_open_gates():
    torch.manual_seed(0)
    core = MinGRU(8, 12, num_layers=2)
    flow = gradient_flow(core, steps=30, seed=2)
    generator = torch.Generator().manual_seed(2)  # the inputs and v that gradient_flow draws
    x = torch.randn(16, 30, 8, generator=generator, dtype=torch.double)
    v = torch.randn(12, generator=generator, dtype=torch.double)
    weight, bias = core.rnn.weight_ih_l0[:12].double(), core.rnn.bias_ih_l0[:12].double()
    keep = 1 - torch.sigmoid(x @ weight.T + bias)  # 1 - z_k, (B, T, H)
    # dh_T/dh_t = prod_{k=t+1..T} diag(1 - z_k), so ||v * that product|| for each distance
    products = torch.cumprod(keep.flip(1), dim=1)  # distance d: the last d factors
    expected = [v.norm()] + [(v * products[:, d - 1]).norm(dim=-1).mean() for d in range(1, 30)]
    torch.testing.assert_close(flow.hidden, torch.stack(expected), rtol=1e-10, atol=0)


def test_every_core_is_measured_and_a_bidirectional_one_is_refused():
    cores = default_cores(hidden_size=16, seed=0)
    assert {"MinGRU", "MinLSTM", "SLSTM (4 heads)"} <= set(cores)
    for name, core in cores.items():
        flow = gradient_flow(core, steps=12, seed=0)
        assert flow.hidden.shape == (12,) and torch.isfinite(flow.hidden).all(), name
        assert (flow.cell_state is not None) == (name.startswith(("LSTM", "SLSTM"))), name
    with pytest.raises(UserError, match="GRU: gradient flow is measured left to right"):
        gradient_flow(GRU(4, 8, bidirectional=True), steps=5)


def test_rnn_gradient_vanishes_much_faster_than_lstm():
    cores = default_cores(hidden_size=64, seed=0)
    rnn = gradient_flow(cores["RNN (tanh)"], steps=60, seed=0)
    lstm = gradient_flow(cores["LSTM (forget bias 1)"], steps=60, seed=0)
    closed = gradient_flow(cores["LSTM (forget bias 0)"], steps=60, seed=0)
    # Over 50 steps the vanilla RNN's gradient shrinks at least 100x more than the LSTM's.
    assert rnn.decay(50) >= 100 * lstm.decay(50)
    # The forget-gate bias is what keeps the LSTM's path open.
    assert closed.decay(50) > 10 * lstm.decay(50)
    # Norms decrease with distance, and the LSTM's cell-state path is measured too.
    assert rnn.hidden[10] < rnn.hidden[1] and lstm.cell_state is not None
    assert rnn.cell_state is None


def test_cli_writes_plot_and_csv(tmp_path, capsys):
    assert (
        main(["gradient-flow", "--out", str(tmp_path), "--steps", "30", "--hidden-size", "16"]) == 0
    )
    png = (tmp_path / "gradient_flow.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "gradient_flow.csv").read_text().splitlines()
    assert rows[0] == "core,distance,grad_norm_h,grad_norm_c"
    assert len(rows) == 1 + 7 * 30
    assert "RNN (tanh)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("flag,value", [("--steps", "1"), ("--steps", "1000000"),
                                        ("--hidden-size", "0"), ("--hidden-size", "100000")])  # fmt: skip
def test_cli_refuses_sizes_out_of_range_before_measuring(tmp_path, flag, value):
    with pytest.raises(UserError, match=f"--steps must be 2 to 10,000 .*{value}"):
        main(["gradient-flow", "--out", str(tmp_path / "out"), flag, value])
    assert not (tmp_path / "out").exists()
