"""rnn-zoo: a PyTorch Lightning model zoo of recurrent networks.

::

    import zoo
    zoo.list_pretrained()
    lm = zoo.load("char_lm-lstm-shakespeare-v1")
    print(lm.generate("ROMEO:", 200))

``zoo.load`` and ``zoo.list_pretrained`` are :mod:`zoo.predict`'s, imported on first use so that
``import zoo`` (and ``rnn-zoo --help``) stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "list_pretrained", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "list_pretrained"):
        import zoo.predict

        return getattr(zoo.predict, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
