"""``rnn-zoo demo`` trains in bfloat16 only where the machine computes it natively."""

import logging

import pytest
import torch

from zoo.callbacks import LastCheckpoint  # Lightning imported before any test mocks torch's probes
from zoo.cli import demo
from zoo.errors import UserError

RECIPE = demo.RECIPES / "char_lm" / "demo.yaml"


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu(cpu_only, monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    precision, why = demo.training_precision("auto", RECIPE)
    assert precision == ("bf16-mixed" if native else None)  # None: the recipe's float32
    assert ("AVX512-BF16" in why) == native


def test_asked_precision_wins_and_a_torch_without_the_probes_is_float32(cpu_only, monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert demo.native_bfloat16() is None
    assert demo.training_precision("bf16", RECIPE)[0] == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert demo.training_precision("32", RECIPE)[0] == "32-true"


def test_auto_keeps_a_recipe_that_sets_its_precision(cpu_only, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(RECIPE.read_text() + "  precision: 16-mixed\n")  # trainer is the last key
    assert demo.training_precision("auto", recipe) == (None, "the recipe's precision (16-mixed)")


def mock_the_commands(monkeypatch) -> list[list[str]]:
    """The demo's fit, validation and sampling record their arguments instead of running; the
    fit's Trainer has taken a step and saved its last.ckpt."""
    calls = []
    trainer = type("Trainer", (), {"callbacks": [], "global_step": 1})()
    last = LastCheckpoint()
    monkeypatch.setattr(last, "path", lambda trainer: demo.Path("runs/x/last.ckpt"))
    trainer.callbacks.append(last)
    monkeypatch.setattr(demo.lightning, "trained", lambda argv: calls.append(argv) or trainer)
    monkeypatch.setattr(demo.lightning, "main", lambda argv: calls.append(argv))
    monkeypatch.setattr(demo.sample, "main", lambda argv: calls.append(argv) or 0)
    return calls


@pytest.mark.parametrize("native", [True, False])
def test_only_the_fit_gets_the_precision(cpu_only, monkeypatch, native, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    calls = mock_the_commands(monkeypatch)
    assert demo.main(["--max-time", "00:00:00:05"]) == 0
    fit, validate, _ = calls
    assert fit[0] == "fit" and validate[0] == "validate"
    assert ("--trainer.precision" in fit) == native
    if native:
        assert fit[fit.index("--trainer.precision") + 1] == "bf16-mixed"
    assert "--trainer.precision" not in validate  # the final score is the recipe's float32
    assert capsys.readouterr().out.startswith(
        "rnn-zoo demo: training in " + ("bf16 mixed precision" if native else "float32")
    )


def test_a_recipe_named_like_the_bundled_ones_is_read_for_its_precision(cpu_only, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    # shakespeare-mingru sets bf16-mixed itself: auto leaves it, by name as by path.
    expected = (None, "the recipe's precision (bf16-mixed)")
    assert demo.training_precision("auto", demo.Path("char_lm/shakespeare-mingru")) == expected


def test_a_prime_outside_the_vocabulary_is_refused_before_training(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    calls = mock_the_commands(monkeypatch)
    with pytest.raises(UserError, match=r"--prime: characters not in the model's vocabulary: '日"):
        demo.main(["--prime", "To be 日本", "--max-time", "00:00:00:05"])
    assert calls == [] and not list(tmp_path.iterdir())  # nothing trained, nothing written
    demo.main(["--prime", "To be", "--max-time", "00:00:00:05"])  # its characters are all known
    assert [argv[0] for argv in calls] == ["fit", "validate", "--checkpoint"]


def test_a_bf16_fit_on_a_cpu_that_emulates_bfloat16_says_so(monkeypatch, tmp_path, caplog):
    lightning_log = logging.getLogger("pytorch_lightning")  # its own handler, no propagation
    monkeypatch.setattr(lightning_log, "handlers", [*lightning_log.handlers, caplog.handler])
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    argv = ["fit", "--config", "char_lm/tiny", "--trainer.precision", "bf16-mixed",
            "--trainer.accelerator", "cpu",
            "--trainer.max_steps", "1", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    assert demo.lightning.main(argv) == 0
    err = caplog.text
    assert "warning: trainer.precision is bf16-mixed, but this CPU has neither AMX" in err
    assert "--trainer.precision 32-true" in err


@pytest.mark.parametrize(
    ("precision", "accelerator", "native", "warned"),
    [
        ("bf16-mixed", "cpu", False, True),
        ("bf16-true", "cpu", False, True),
        ("bf16-mixed", "cpu", True, False),  # AVX512-BF16: native
        ("32-true", "cpu", False, False),
        ("16-mixed", "cpu", False, False),
        ("bf16-mixed", "gpu", False, False),  # a GPU's bfloat16 is not the CPU's business
    ],  # fmt: skip
)
def test_only_bfloat16_on_a_cpu_without_it_is_warned(
    cpu_only, monkeypatch, precision, accelerator, native, warned
):
    from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator

    from zoo.cli.common import emulated_bfloat16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    device = CPUAccelerator() if accelerator == "cpu" else CUDAAccelerator()
    assert (emulated_bfloat16(precision, device) is not None) == warned


def test_the_demo_recipe_trains_with_its_fused_adam(tmp_path, monkeypatch):
    """The recipe's fused Adam steps under Lightning, which refuses a fused optimizer together
    with gradient clipping in mixed precision (the demo's bf16): adding ``gradient_clip_val``
    back to the recipe fails here."""
    from zoo.cli.zoo_cli import ZooCLI, find_task_class

    monkeypatch.chdir(tmp_path)  # the recipe's checkpoints go under ./runs
    args = ["--config", str(RECIPE), "--trainer.accelerator", "cpu", "--trainer.logger", "false",
            "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "3",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cli = ZooCLI(find_task_class(args), args=args, run=False)
    before = {name: p.detach().clone() for name, p in cli.model.named_parameters()}
    cli.trainer.fit(cli.model, cli.datamodule)
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["fused"]
    assert cli.trainer.global_step == 3
    unchanged = [n for n, p in cli.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_the_demo_scores_and_samples_the_checkpoint_its_own_recipe_writes(
    tmp_path, monkeypatch, capsys
):
    """A recipe of one's own puts its last.ckpt elsewhere: the demo scores and samples that one,
    not an older runs/char_lm/demo/checkpoints/last.ckpt (here a file that is no checkpoint)."""
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "runs/char_lm/demo/checkpoints/last.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older run's file")
    tiny = (demo.RECIPES / "char_lm" / "tiny.yaml").read_text()
    mine = tmp_path / "mine.yaml"
    mine.write_text(tiny.replace("enable_checkpointing: false", "enable_checkpointing: true")
                    .replace("runs/char_lm/tiny", "runs/mine"))  # fmt: skip
    argv = ["--recipe", str(mine), "--precision", "32", "--length", "30", "--prime", "ROMEO"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "30 characters sampled from runs/mine/checkpoints/last.ckpt" in out
    assert (tmp_path / "runs/mine/checkpoints/last.ckpt").is_file()
    assert stale.read_bytes() == b"an older run's file"


def test_a_fit_that_took_no_step_is_not_scored():
    import pytorch_lightning as pl

    trainer = pl.Trainer(callbacks=[LastCheckpoint()], logger=False, accelerator="cpu")
    with pytest.raises(UserError, match=r"mine.yaml: the fit ended before its first step"):
        demo.final_checkpoint(trainer, demo.Path("mine.yaml"))
    trainer = pl.Trainer(enable_checkpointing=False, logger=False, accelerator="cpu")
    with pytest.raises(UserError, match=r"mine.yaml: its fit saves no last.ckpt"):
        demo.final_checkpoint(trainer, demo.Path("mine.yaml"))


def test_a_recipe_of_another_task_is_refused_before_training(monkeypatch):
    calls = mock_the_commands(monkeypatch)
    with pytest.raises(UserError, match=r"translation/demo-bible: the demo trains and samples a "
                       r"char-LM recipe .*, not zoo.tasks.translation.TranslationTask"):  # fmt: skip
        demo.main(["--recipe", "translation/demo-bible"])
    assert calls == []


def test_a_recipe_with_checkpointing_off_is_refused_before_training(monkeypatch, tmp_path):
    calls = mock_the_commands(monkeypatch)
    tiny = demo.RECIPES / "char_lm" / "tiny.yaml"
    assert "enable_checkpointing: false" in tiny.read_text()
    with pytest.raises(UserError, match=r"tiny.yaml: trainer.enable_checkpointing is false: its "
                       "fit would save no final weights to score; set it to true"):  # fmt: skip
        demo.main(["--recipe", str(tiny)])
    assert calls == []


@pytest.mark.parametrize(
    ("value", "message"),
    [("00:00:00:00", "a budget of zero trains nothing"), ("5 min", "write DD:HH:MM:SS")],
)
def test_a_budget_of_zero_or_garbage_is_refused_before_training(monkeypatch, value, message):
    calls = mock_the_commands(monkeypatch)
    with pytest.raises(UserError, match=f"--max-time '{value}': {message}"):
        demo.main(["--max-time", value])
    assert calls == []
