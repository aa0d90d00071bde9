"""Exact mid-epoch resume for the training loaders, which are plain iterables (Lightning adds no
sampler to them) that Lightning checkpoints: it stores a loader's ``state_dict()`` in the
checkpoint and calls ``load_state_dict`` before iterating again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Resumable:
    """Mixin for a training loader with ``consumed`` (a callable counting the batches of this
    epoch that training processed, or None) and ``__len__``: ``state_dict`` records that count,
    and ``load_state_dict`` makes the next iteration start there (:meth:`start_at`), or at the
    beginning when that epoch had finished."""

    consumed: Callable[[], int] | None
    _start: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.consumed() if self.consumed else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = int(state.get("position", 0))
        self.start_at(position if position < len(self) else 0)  # a finished epoch restarts

    def start_at(self, batch: int) -> None:
        """The next iteration skips ``batch`` batches (read and reset by ``__iter__``)."""
        self._start = batch


def trained_batches(trainer: Any) -> Callable[[], int] | None:
    """A callable counting the batches of the current epoch that ``trainer`` trained on (a
    loader's ``consumed``), or None without a trainer."""
    if trainer is None:
        return None
    return lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
