"""Learning-rate schedules from the papers, as LightningCLI-injectable classes."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class DecayAfter(LambdaLR):
    """Multiply the learning rate by ``gamma`` once per step of this scheduler from ``start`` on.

    char-rnn: ``learning_rate_decay 0.97`` every epoch after ``learning_rate_decay_after 10``.
    Sutskever et al. (2014) halve the rate every half epoch after 5 epochs: step this scheduler
    every half epoch (``interval: step`` with a matching frequency) and use ``gamma: 0.5``.

    Args:
        optimizer: the optimizer to schedule.
        gamma: factor per scheduler step.
        start: scheduler steps (epochs by default) at full learning rate.
    """

    def __init__(self, optimizer: Optimizer, gamma: float = 0.97, start: int = 10) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.gamma = gamma
        self.start = start
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        return self.gamma ** max(0, step - self.start + 1)

    def state_dict(self) -> dict:
        # LambdaLR would try to save the bound method; gamma and start rebuild it.
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}


def budget_factor(progress: float, warmup: float = 0.02, final: float = 0.0,
                  shape: str = "linear") -> float:  # fmt: skip
    """The learning-rate multiplier at ``progress`` (0 to 1) through a run's budget: a linear
    warm-up over the first ``warmup`` of it, then a decay to ``final`` at the end, ``linear``
    (budgeted training decays linearly to zero: Li et al. 2020, "Budgeted Training") or
    ``cosine`` (Loshchilov & Hutter 2017, without restarts)."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)
    rest = (progress - warmup) / max(1.0 - warmup, 1e-9)  # 0 -> 1 after the warm-up
    if shape == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * rest))
    return final + (1.0 - final) * (1.0 - rest)
