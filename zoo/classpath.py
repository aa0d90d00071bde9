"""One ``class_path`` resolver, with the guard every file-driven import needs.

Checkpoints and published files name the classes that rebuild them (``zoo.cores.LSTM``,
``zoo.models.translation.RNNSearch``). A file from outside must not choose what Python imports, so
only modules under an allowed prefix are imported, and the class must be a subclass of what the
caller expects.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

T = TypeVar("T")


def resolve_class(class_path: object, base: type[T], prefix: str = "zoo.") -> type[T]:
    """The class ``class_path`` names, checked to be a ``base`` under ``prefix``.

    Raises:
        ValueError: a path outside ``prefix``, one that does not import, or not a ``base``.
    """
    module_name, _, name = str(class_path).rpartition(".")
    if not (module_name + ".").startswith(prefix):
        raise ValueError(f"class_path {class_path!r} is not an rnn-zoo class (not under {prefix})")
    try:
        cls = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"class_path {class_path!r} is not a {base.__name__}")
    return cls
