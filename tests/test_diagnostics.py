"""The lecture's BPTT claim, checked on a fixed seed."""

from zoo.cli.diagnose import main
from zoo.diagnostics import default_cores, gradient_flow


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
    assert len(rows) == 1 + 4 * 30
    assert "RNN (tanh)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))
