"""How a command line's mistakes become one line: a key a recipe class does not take (with its
closest spelling and where it came from), a value of the wrong type (with the types its key
takes), and a ValueError an rnn-zoo class raised checking its own arguments, found inside the
exceptions jsonargparse wraps it in."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
from collections.abc import Iterator

from zoo.cli.common import config_paths
from zoo.errors import UserError

_NOT_ACCEPTED_NESTED = re.compile(
    r"Option '([\w.]+)' is not accepted\. Got value: Namespace\(class_path='([\w.]+)'"
)
_UNRECOGNIZED = re.compile(r"unrecognized arguments: --trainer\.(\w+)")
_NOT_ACCEPTED = re.compile(
    r"class_path '([\w.]+)': (?:Option|Key) '([\w.]+)' is not (?:accepted|expected)"
)


def misspelt_key(message: str, args: list[str]) -> str | None:
    """One line for a key that a recipe class does not take: the key, its closest valid
    spelling and where it came from (the command line or a recipe file); None if the parser's
    message is about something else."""
    found = _NOT_ACCEPTED.findall(message) or [
        (path, key) for key, path in _NOT_ACCEPTED_NESTED.findall(message)
    ]
    unknown = _UNRECOGNIZED.search(message)
    if not found and unknown:  # a trainer flag: --trainer.max_stepz
        found = [("pytorch_lightning.Trainer", unknown.group(1))]
    if not found:
        return None
    class_path, key = found[-1]  # the innermost class: a core inside a model inside a task
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    except (ImportError, AttributeError, ValueError, TypeError):
        names = []
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(names)}"
    return f"{_source(key, args)}: {class_path.rpartition('.')[2]} has no argument {key!r}{hint}"


_KEY = re.compile(r'Parser key "([\w.]+)": ')
_EXPECTED = re.compile(
    r"Expected a (<class '[\w.]+'>|typing\.Literal\[.*?\])\. Got value: (.*?)(?:\. Got value: | - |$)"
)
_UNION = re.compile(
    r"Does not validate against any of the Union subtypes Subtypes: \[(.*?)\] Errors: .*? "
    r"Given value: (?!NestedArg\(|Namespace\()(.*?)(?:\. Got value: | - |$)"
)
_NO_CLASS = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "NoneType": "null"}  # fmt: skip


def wrong_value(message: str, args: list[str]) -> str | None:
    """One line for a value of the wrong type (``--trainer.max_steps abc``) or a class_path that
    names no class: the key, what it takes, the value and where it came from, in place of
    jsonargparse's dump of every Union member it tried; None if the message is about something
    else. The innermost key it names is the one (a core's inside a model's inside a task's), at
    the path of the keys around it (``model.core.hidden_size``)."""
    keys = list(_KEY.finditer(message))
    for depth in range(len(keys) - 1, -1, -1):
        found = keys[depth]
        key, said = found[1], message[found.end() :].split(" Parser key ")[0]  # of this key alone
        path = ".".join(k[1] for k in keys[: depth + 1])
        if expected := _EXPECTED.match(said):
            takes, value = _kinds(expected[1]), expected[2]
        elif union := _UNION.search(said):
            takes, value = _kinds(union[1]), union[2]
        elif missing := _NO_CLASS.search(said):
            module, name = missing[1], missing[2]
            names = sorted(importlib.import_module(module).CORES) if module == "zoo.cores" else []
            choose = f"; choose from {', '.join(names)}" if names else ""
            return f"{_source_of(path, args)}: {module} has no {name}{choose}"
        else:
            continue
        if takes is None:  # a type it cannot name (a list, a mapping): jsonargparse's own words
            return None
        return f"{_source_of(path, args)}: {key.rsplit('.', 1)[-1]} takes {takes}, not {value!r}"
    return None


def _kinds(subtypes: str) -> str | None:
    """jsonargparse's types (``<class 'int'>``, ``typing.Literal['a', 'b']``, a list of them), in
    words; None if the list holds another kind of type (``list[str]``)."""
    rest = re.sub(r"<class '[\w.]+'>|typing\.Literal\[.*?\]", "", subtypes)
    if rest.replace(",", "").strip():
        return None
    classes = [c.rpartition(".")[2] for c in re.findall(r"<class '([\w.]+)'>", subtypes)]
    literals = ", ".join(re.findall(r"typing\.Literal\[(.*?)\]", subtypes))
    choices = list(dict.fromkeys(v.strip(" '\"") for v in literals.split(",") if v.strip()))
    if "int" in classes and "float" in classes:
        classes.remove("int")  # a number, whole or not
    words = [f"one of {', '.join(choices)}"] if choices else []
    words += [_TYPE_WORDS.get(kind, f"a {kind}") for kind in classes]
    return " or ".join(words)


def unrecognized(message: str) -> str | None:
    """An option no class takes (``--bogus 1``): it can only have come from the command line."""
    if not message.startswith("unrecognized arguments: "):
        return None
    return f"command line: {message}; --help lists the options"


def _source_of(path: str, args: list[str]) -> str:
    """Where the key at ``path`` (``model.core.hidden_size``) was given: the command line's flag
    for it or for a part of it (``--model.init_args.core.init_args.hidden_size``,
    ``--model.core.class_path`` for ``model.core``), else the recipe files."""
    flags = _flags(args)
    parts = [".".join(p for p in flag[2:].split(".") if p != "init_args") for flag in flags]
    return _where([f for f, p in zip(flags, parts) if p == path or p.startswith(f"{path}.")], args)


def _source(key: str, args: list[str]) -> str:
    """Where ``key`` (``trainer.max_steps``, or a class's own ``hidden_size``), known without the
    keys around it, was given: the last command-line flag that names it, else the recipe files."""
    return _where([f for f in _flags(args) if f == f"--{key}" or f".{key}." in f"{f}."], args)


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def _where(typed: list[str], args: list[str]) -> str:
    return (
        f"command line {typed[-1]}"
        if typed
        else ", ".join(map(str, config_paths(args))) or "recipe"
    )


def _chain(err: BaseException | None, context: bool = True) -> Iterator[BaseException]:
    """``err`` and what it was raised from (``__cause__``, else ``__context__`` if asked)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (err.__context__ if context else None)


def user_error_in(err: BaseException) -> UserError | None:
    """The :class:`UserError` an exception was raised from, if any (its cause chain)."""
    return next((e for e in _chain(err) if isinstance(e, UserError)), None)


def own_check(err: BaseException) -> UserError | None:
    """A ValueError that an rnn-zoo class raised checking its own arguments (``hidden_size must
    be >= 1, got 0``), or the Trainer checking its settings (an unknown accelerator), found in
    the chain jsonargparse wraps it in, as one line; None if the chain holds none (then it is a
    bug, and its traceback is shown)."""
    for cause in _chain(err, context=False):
        frames, tb = [], cause.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        raised_in = frames[-1].f_globals.get("__name__", "") if frames else ""
        if type(cause) is not ValueError:
            continue
        if raised_in.partition(".")[0] in ("zoo", "datamodules"):
            return UserError(f"{_checked_by(frames) or raised_in}: {cause}")
        if raised_in.startswith("pytorch_lightning.trainer.connectors."):  # the Trainer's checks
            return UserError(f"trainer: {' '.join(str(cause).split())}")
    return None


def _checked_by(frames: list) -> str | None:
    """The class whose arguments were refused: the innermost ``self`` of rnn-zoo's frames from the
    raise outward, passing over helper functions (``check_dropout``) and the building blocks of
    zoo.layers (a Dropout's p is the model's dropout)."""
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        if module.partition(".")[0] not in ("zoo", "datamodules"):
            return None  # out of rnn-zoo's code: into the parser that called it
        owner = frame.f_locals.get("self")
        if owner is not None and module != "zoo.layers":
            return type(owner).__name__
    return None


@contextlib.contextmanager
def own_checks() -> Iterator[None]:
    """While the recipe is parsed and its classes built (not while a fit runs, where a ValueError
    is a bug): a ValueError an rnn-zoo class raised checking its arguments becomes its one line
    (:func:`own_check`) in place of jsonargparse's wrapping."""
    try:
        yield
    except (ValueError, TypeError) as err:
        cause = user_error_in(err) or own_check(err)
        if cause is None:
            raise
        raise cause from None
