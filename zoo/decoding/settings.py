"""One set of decoding settings for every task, and the search they choose.

A recipe, a published file, a predictor's keyword arguments and a command's flags all describe a
search with the same six numbers; :class:`DecodeSettings` holds them, checks them where they enter,
and :func:`search` runs greedy search or beam search accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from zoo.decoding.beam import beam_search
from zoo.decoding.common import Hypotheses, ReorderFn, StepFn
from zoo.decoding.greedy import greedy_search

#: Longest output any search may be asked for: beyond it a typo (``--max-len-b 10000000``) would
#: allocate the whole output buffer before the first step.
MAX_TOKENS = 10_000


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode: beam search, or greedy search when ``beam_size`` and ``n_best`` are 1.

    Attributes:
        beam_size: hypotheses kept per input, K.
        n_best: hypotheses returned per input, ``1 <= n_best <= beam_size``.
        length_penalty: hypotheses are ranked by ``log p / len ** length_penalty``.
        early_stopping: a search ends once its ``n_best`` best beams have ended (OpenNMT-py,
            Joey NMT), else once all have.
        max_len_a, max_len_b: most output tokens, ``ceil(a * n) + b`` for an input of ``n``
            tokens (fairseq's ``max_len_a`` / ``max_len_b``); captioning uses ``a = 0``.

    Raises:
        ValueError: one line naming the setting that is out of range (not finite, below 1, ...).
    """

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = True
    max_len_a: float = 1.5
    max_len_b: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.beam_size <= 1000:
            raise ValueError(f"beam_size must be between 1 and 1000, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise ValueError(f"n_best must be between 1 and beam_size ({self.beam_size})")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}")
        if not -10 <= self.length_penalty <= 10:  # beyond, every long hypothesis underflows
            raise ValueError(
                f"length_penalty must be between -10 and 10, got {self.length_penalty}"
            )
        if not (math.isfinite(self.max_len_a) and 0 <= self.max_len_a <= 100):
            raise ValueError(f"max_len_a must be between 0 and 100, got {self.max_len_a}")
        if not 0 <= self.max_len_b <= MAX_TOKENS:
            raise ValueError(f"max_len_b must be between 0 and {MAX_TOKENS}, got {self.max_len_b}")
        if self.max_len_a == 0 and self.max_len_b == 0:
            raise ValueError("max_len_a and max_len_b are both 0: every output would be empty")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, **defaults: Any) -> DecodeSettings:
        """Settings from a checkpoint's or file's ``decoding`` entry, over ``defaults``.

        Unknown keys are ignored; captioning's ``max_len`` (an absolute length) means
        ``max_len_a = 0, max_len_b = max_len``.
        """
        values = dict(values or {})
        if "max_len" in values:
            values.setdefault("max_len_a", 0.0)
            values.setdefault("max_len_b", values.pop("max_len"))
        names = {f.name for f in fields(cls)}
        return cls(**{**defaults, **{k: v for k, v in values.items() if k in names}})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as checkpoints and published files store it."""
        return asdict(self)

    def override(self, **changes: Any) -> DecodeSettings:
        """A copy with the given settings changed; None leaves a setting as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def max_lengths(self, src_lengths: Tensor) -> Tensor:
        """``(B,)`` most output tokens, ``ceil(a * n) + b`` for ``n`` input tokens (a source's
        length counts its ``</s>``, which is not a token of the sentence). On the CPU, so the
        search reads its loop bound without a device sync."""
        tokens = (src_lengths.cpu() - 1).clamp(min=0).double()
        return torch.ceil(self.max_len_a * tokens).long() + self.max_len_b


def search(
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    state: Any,
    bos: Tensor | int,
    eos: int,
    max_len: Tensor | int,
    settings: DecodeSettings,
    *,
    batch_size: int | None = None,
    reorder_beams_fn: ReorderFn | None = None,
) -> Hypotheses:
    """Greedy search when ``settings`` ask for one hypothesis of a beam of one, else beam search;
    the arguments are those of :func:`~zoo.decoding.beam_search`."""
    if settings.beam_size == 1 and settings.n_best == 1:
        return greedy_search(
            step_fn, state, bos, eos, max_len,
            batch_size=batch_size, length_penalty=settings.length_penalty,
        )  # fmt: skip
    return beam_search(
        step_fn, reorder_fn, state, bos, eos, max_len,
        beam_size=settings.beam_size, length_penalty=settings.length_penalty,
        n_best=settings.n_best, batch_size=batch_size, reorder_beams_fn=reorder_beams_fn,
        early_stopping=settings.early_stopping,
    )  # fmt: skip
