"""What several commands share: where the model comes from, the device, reading a recipe."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from zoo.errors import UserError


def cpu_bfloat16() -> str | None:
    """Why this CPU computes bfloat16 natively (AMX, AVX512-BF16), or None where it emulates it."""
    import torch  # here, not at the top: a command's ``--help`` stays fast

    for probe, name in (
        ("_is_amx_tile_supported", "AMX"),
        ("_is_avx512_bf16_supported", "AVX512-BF16"),
    ):
        if getattr(torch.cpu, probe, lambda: False)():
            return f"this CPU has {name}"
    return None


def native_bfloat16() -> str | None:
    """Why the device the demo trains on computes bfloat16 natively, or None where it does not
    (the demo's ``accelerator: auto`` takes a CUDA GPU first; on Apple's MPS it says None)."""
    import torch

    if torch.cuda.is_available():
        native = torch.cuda.is_bf16_supported(including_emulation=False)  # Ampere and later
        return "this GPU computes bfloat16" if native else None
    if torch.backends.mps.is_available():
        return None
    return cpu_bfloat16()


def emulated_bfloat16(precision: Any, accelerator: Any) -> str | None:
    """A warning when a run computes in bfloat16 on a CPU that only emulates it: a recipe meant
    for a GPU (``precision: bf16-mixed``) run on a laptop is then slower than in float32."""
    from pytorch_lightning.accelerators import CPUAccelerator

    if not str(precision).startswith("bf16") or not isinstance(accelerator, CPUAccelerator):
        return None
    if cpu_bfloat16() is not None:
        return None
    return (
        f"warning: trainer.precision is {precision}, but this CPU has neither AMX nor "
        "AVX512-BF16, so bfloat16 is emulated, usually slower than float32 "
        "(--trainer.precision 32-true)"
    )


def fused_with_clipping(config: Any, trainer: Any) -> str | None:
    """Lightning refuses to clip a fused optimizer's gradients in mixed precision (the optimizer
    unscales them itself), but only at the first optimizer step, with a traceback: the one-line
    error for a recipe that asks for both, before anything trains."""
    fused = config.get("model.init_args.optimizer.init_args.fused")
    clip = trainer.gradient_clip_val
    if not (fused and clip and trainer.precision in ("16-mixed", "bf16-mixed")):
        return None
    return (
        f"model.optimizer has fused: true and trainer.gradient_clip_val is {clip}: Lightning "
        f"cannot clip a fused optimizer's gradients in {trainer.precision} precision; drop one "
        "of the two (in 32-true precision both work)"
    )


def nothing_to_train(trainer: Any, checkpoint: dict | None = None) -> str | None:
    """Why a fit (resumed from ``checkpoint``) would end before its first step, if it would:
    Lightning then ends it at once with exit status 0, which reads as a finished training."""
    for name in ("max_steps", "max_epochs"):
        if getattr(trainer, name, None) == 0:
            return f"trainer.{name} is 0: the fit would end before its first step; raise it"
    if not checkpoint:
        return None
    step = checkpoint.get("global_step", 0)
    if 0 < trainer.max_steps <= step:
        return (
            f"is at step {step:,} and trainer.max_steps is {trainer.max_steps:,}: nothing is left "
            "to train; raise --trainer.max_steps"
        )
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epoch = (loop.get("epoch_progress") or {}).get("current", {})
    epochs = epoch.get("processed")
    if epochs is not None and loop.get("epoch_loop.batch_progress", {}).get("is_last_batch"):
        # saved after an epoch's last batch (last.ckpt is), before Lightning counted the epoch
        epochs += epoch.get("started", 0) > epochs
    if epochs is not None and 0 < (trainer.max_epochs or 0) <= epochs:
        return (
            f"has trained {epochs:,} epoch{'s' * (epochs != 1)} and trainer.max_epochs is "
            f"{trainer.max_epochs:,}: nothing is left to train; raise --trainer.max_epochs"
        )
    from pytorch_lightning.callbacks import Timer

    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    budget = getattr(timer, "_duration", None)  # max_time in seconds; Lightning's own field
    spent = (checkpoint.get("callbacks") or {}).get("Timer", {}).get("time_elapsed", {})
    if budget is not None and spent.get("train", 0) >= budget:
        return (
            f"has trained {spent['train']:,.0f} s and trainer.max_time is {budget:,.0f} s: "
            "nothing is left to train; raise --trainer.max_time (DD:HH:MM:SS, the whole budget)"
        )
    return None


def check_char_lm(recipe: Path, config: dict, does: str) -> None:
    """Refuse a recipe whose model is not the char-LM task, for a command that ``does`` to one
    what only makes sense there (before any training)."""
    model = config.get("model")
    task = model.get("class_path", "") if isinstance(model, dict) else ""
    if task.rpartition(".")[2] != "CharLanguageModel":
        raise UserError(
            f"{recipe}: {does} a char-LM recipe (model: zoo.tasks.char_lm.CharLanguageModel), "
            f"not {task or 'one without a model class_path'}"
        )


def check_duration(option: str, text: str | None) -> None:
    """A ``--max-time`` value: DD:HH:MM:SS and longer than zero, else a one-line error (Lightning
    would take ``00:00:00:00`` and end the fit before its first step, with exit status 0)."""
    if text is None:
        return
    parts = text.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise UserError(f"{option} {text!r}: write DD:HH:MM:SS, e.g. 00:00:02:00")
    if not any(int(p) for p in parts):
        raise UserError(
            f"{option} {text!r}: a budget of zero trains nothing; give e.g. 00:00:02:00"
        )


class ReaderClosed(Exception):
    """Standard output's reader closed the pipe (``rnn-zoo sample | head``): it has what it wanted,
    so the command ends quietly, as ``cat`` does (:func:`zoo.cli.main` exits with 141)."""


def write_stdout(text: str) -> None:
    """Write ``text`` on standard output and flush it (so nothing is left buffered to fail again
    at exit). A write that fails (a full disk behind ``> file``, ``> /dev/full``) is one error
    line that names standard output."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise ReaderClosed from None
    except OSError as err:
        raise UserError(f"standard output: could not be written ({err.strerror or err})") from None


def add_model_source(parser: argparse.ArgumentParser, task: str) -> None:
    """``--checkpoint PATH`` (a training checkpoint) or ``--pretrained NAME|FILE`` (a published
    model, by name or as a local ``.safetensors`` file), exactly one of them."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help=f"a {task} training checkpoint (.ckpt)")
    source.add_argument(
        "--pretrained",
        metavar="NAME|FILE",
        help="a published model (see: rnn-zoo pretrained list) or a .safetensors file",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def load_model(args: argparse.Namespace, task: str) -> Any:
    """The predictor that ``--checkpoint`` / ``--pretrained`` and ``--device`` name."""
    from zoo.predict import PREDICTORS, load, resolve_device

    device = resolve_device(args.device)  # a bad device is refused before any file is read
    if args.pretrained:
        return load(args.pretrained, device, task=task)
    return PREDICTORS[task].from_checkpoint(args.checkpoint, device)


def config_paths(argv: list[str]) -> list[Path]:
    """The ``--config`` files of a command line."""
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            paths.append(Path(arg.split("=", 1)[1]))
    return paths


def read_recipe(path: str | Path) -> dict:
    """A recipe file's settings, as a mapping; a missing file, bad YAML or a top level that is not
    a mapping is a one-line :class:`UserError` that names the file."""
    import yaml  # here: 'rnn-zoo --help' and 'rnn-zoo demo --help' import this module

    path = Path(path)
    if not path.is_file():
        what = "a folder, not a recipe file" if path.is_dir() else "no such recipe file"
        raise UserError(f"{path}: {what}; 'rnn-zoo recipes' lists the bundled ones")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a recipe (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if config is None:
        raise UserError(f"{path}: empty; a recipe has model:, data: and trainer: sections")
    if not isinstance(config, dict):
        raise UserError(
            f"{path}: a recipe is a mapping of sections (model:, data:, trainer:), "
            f"not a {type(config).__name__}"
        )
    return config
