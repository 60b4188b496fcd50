"""Learning rate as a function of the number of updates applied so far.

``Schedule(t)`` is pure: every rank that keeps a copy of the schedule (a ps-sync worker
preparing its part of an SGD step, an allreduce rank updating its shard) computes the same
rate from the same update count, without communicating.

Kinds, with ``T`` the run's total number of updates and ``W`` the warm-up updates:

- ``inverse-decay`` (the original's): ``lr / (1 + decay * t)``;
- ``constant``: ``lr``;
- ``step``: ``lr * gamma ** (t // step_every)``;
- ``cosine``: from ``lr`` down to ``lr_min`` at ``t = T``, half a cosine period;
- warm-up: for ``t < W`` the rate rises linearly, ``lr * (t + 1) / W``; afterwards the kind
  runs on ``t - W`` (and cosine over ``T - W`` updates).
"""

import math

KINDS = ("inverse-decay", "constant", "step", "cosine")


class Schedule:
    def __init__(self, lr: float, kind: str = "inverse-decay", *, decay: float = 0.0,
                 step_every: int = 1, gamma: float = 0.1, lr_min: float = 0.0,
                 total: int = 0, warmup: int = 0):
        if kind not in KINDS:
            raise ValueError(f"schedule must be one of {', '.join(KINDS)}, got {kind!r}.")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if decay < 0:
            raise ValueError(f"lr_decay must be >= 0, got {decay}.")
        if step_every < 1 or warmup < 0 or total < 0:
            raise ValueError(f"step_every must be >= 1 and warmup, total >= 0, got "
                             f"{step_every}, {warmup}, {total}.")
        self.lr, self.kind, self.decay = float(lr), kind, float(decay)
        self.step_every, self.gamma, self.lr_min = int(step_every), float(gamma), float(lr_min)
        self.total, self.warmup = int(total), int(warmup)

    @classmethod
    def from_config(cls, config, updates_per_epoch: int, global_batch: int) -> "Schedule":
        """The schedule ``config`` asks for, over ``config.epochs`` epochs of
        ``updates_per_epoch`` updates, with the linear scaling rule applied to ``lr`` when
        asked (Goyal et al.: ``lr * global batch / lr_base_batch``)."""
        lr = config.lr
        if config.lr_scaling == "linear":
            lr *= global_batch / config.lr_base_batch
        return cls(lr, config.schedule, decay=config.lr_decay,
                   step_every=max(1, config.lr_step_epochs * updates_per_epoch),
                   gamma=config.lr_gamma, lr_min=config.lr_min,
                   total=config.epochs * updates_per_epoch,
                   warmup=round(config.warmup_epochs * updates_per_epoch))

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.lr * (t + 1) / self.warmup
        t -= self.warmup
        if self.kind == "inverse-decay":
            return self.lr / (1.0 + self.decay * t)
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** (t // self.step_every)
        horizon = max(1, self.total - self.warmup)
        progress = min(t, horizon) / horizon
        return self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
