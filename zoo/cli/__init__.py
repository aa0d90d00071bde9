"""The ``rnn-zoo`` command: one module per subcommand under :mod:`zoo.cli`.

``rnn-zoo fit|validate|test|predict --config RECIPE`` is LightningCLI (:mod:`zoo.cli.lightning`);
the other subcommands are small argparse programs that parse, call a library function and print.
Errors that are the user's to fix (:class:`zoo.errors.UserError`) print as one line and exit with
status 2; set ``RNN_ZOO_DEBUG=1`` for the traceback. Nothing here imports torch before the
arguments are parsed, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

import zoo
from zoo.cli.common import ReaderClosed
from zoo.errors import UserError

#: subcommand -> the module whose ``main(argv)`` runs it.
COMMANDS = {
    "fit": "zoo.cli.lightning",
    "validate": "zoo.cli.lightning",
    "test": "zoo.cli.lightning",
    "predict": "zoo.cli.lightning",
    "sample": "zoo.cli.sample",
    "translate": "zoo.cli.translate",
    "caption": "zoo.cli.caption",
    "diagnose": "zoo.cli.diagnose",
    "prepare": "zoo.cli.prepare",
    "pretrained": "zoo.cli.pretrained",
    "export": "zoo.cli.export",
    "recipes": "zoo.cli.recipes",
    "demo": "zoo.cli.demo",
    "plot": "zoo.cli.plot",
    "compare": "zoo.cli.compare",
}
USAGE = """usage: rnn-zoo COMMAND [...]

commands:
  fit | validate | test | predict --config RECIPE        train / evaluate (LightningCLI)
  recipes                                               the bundled recipes and their targets
  sample --checkpoint PATH | --pretrained NAME ...      generate text from a char model
  translate --checkpoint PATH | --pretrained NAME       translate lines (stdin to stdout)
  caption --checkpoint PATH | --pretrained NAME IMAGE   caption pictures
  diagnose gradient-flow [--out DIR]                    the vanishing-gradient plot
  prepare {shakespeare,bible,shapes,tuxpaint,coco,wmt14} ...  build corpora / fetch COCO, WMT'14
  pretrained list | info NAME | download NAME            published weights
  export --checkpoint RUN.ckpt --name NAME              a checkpoint -> safetensors + entry
  demo                                                  train the demo char model, then sample
  plot RUN_DIR                                          a run's logged curves, as a PNG
  compare --config RECIPE --cores RNN GRU LSTM ...      cells side by side, equal time budget

options: -h/--help, --version. Run 'rnn-zoo COMMAND --help' for a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(USAGE)
        except BrokenPipeError:  # rnn-zoo --help | head: the reader has all it wanted
            sys.stderr.close()
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"rnn-zoo {zoo.__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "rnn-zoo --help lists the commands"
        print(f"rnn-zoo: error: unknown command {command!r}; {hint}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    try:
        return module.main(argv if module.__name__ == "zoo.cli.lightning" else argv[1:])
    except ReaderClosed:  # rnn-zoo sample | head: quiet, as cat ends there (write_stdout)
        try:  # nothing more reaches the closed pipe, not even the interpreter's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stand-in stdout without a file (tests)
            pass
        return 141
    except UserError as err:
        return fail(err)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        return fail(f"{err.filename}: {err.strerror}")
    except OSError as err:  # a full disk, a read-only folder: name the file
        where = f"{err.filename}: " if err.filename else ""
        return fail(f"{where}{err.strerror or err}")
    except KeyboardInterrupt:
        print("rnn-zoo: interrupted", file=sys.stderr)
        return 130


def fail(message: object) -> int:
    """Print ``rnn-zoo: error: MESSAGE`` (one line) and return 2; re-raise with RNN_ZOO_DEBUG."""
    if os.environ.get("RNN_ZOO_DEBUG"):
        raise  # noqa: PLE0704 - re-raise the exception being handled
    print(f"rnn-zoo: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
