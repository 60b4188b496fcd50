"""A warning when the model is not learning, so that a wasted run is noticed early.

A classifier that learns nothing predicts the class frequencies, and its cross-entropy
sits at about ln K for K balanced classes. If the training loss is still there, and has
not fallen ``PROGRESS`` below its first value, after ``PATIENCE`` evaluations and ``SHARE``
of the run's epochs (hard data such as the spiral sits near ln K for a while, falling
slowly, before it learns), or has risen well above where it started,
the run is almost certainly wasted; the warning names the likely cause from the
configuration.
"""

import math

PATIENCE = 3          # evaluations, and...
SHARE = 0.2           # ...share of the epochs, before "stuck at chance" is judged
AT_CHANCE = 0.97      # loss >= this share of ln K counts as chance
RISE = 1.5            # loss above this multiple of the first evaluation's counts as rising
PROGRESS = 0.02       # a loss this much below the first evaluation's is still learning
MIN_UPDATES = 50      # updates before "stuck" is judged (full-batch runs take one per epoch)


class LearningMonitor:
    """Feed it every evaluation record; ``check`` returns a warning once, or None."""

    def __init__(self, n_classes: int, config):
        self.chance = math.log(n_classes)
        self.config = config
        self.losses: list[float] = []
        self.warnings: list[str] = []

    def check(self, record: dict) -> str | None:
        loss = record["train_loss"]
        if self.warnings or not math.isfinite(loss):
            return None
        self.losses.append(loss)
        if len(self.losses) >= 2 and loss > RISE * self.losses[0]:
            problem = (f"the training loss rose from {self.losses[0]:.3f} to {loss:.3f} by epoch "
                       f"{record['epoch']}")
        elif (len(self.losses) >= PATIENCE and record["epoch"] >= SHARE * self.config.epochs
              and record.get("step", MIN_UPDATES) >= MIN_UPDATES
              and min(self.losses) >= AT_CHANCE * self.chance
              and self.losses[0] - loss < PROGRESS * self.losses[0]):
            problem = (f"the training loss is {loss:.3f} at epoch {record['epoch']}, no lower "
                       f"than chance level (ln {round(math.exp(self.chance))} = {self.chance:.3f})")
        else:
            return None
        self.warnings.append(f"the model is not learning: {problem}; {self._likely_cause()}")
        return self.warnings[-1]

    def _likely_cause(self) -> str:
        config = self.config
        if config.lr >= 0.5 and config.batch_size is not None:
            return (f"--lr {config.lr:g} is likely too high for mini-batches of "
                    f"{config.batch_size}: try --lr 0.05")
        if not config.standardize and config.dataset != "spiral":
            return "the inputs may be on very different scales: try --standardize"
        if config.lr < 1e-3:
            return f"--lr {config.lr:g} is likely too low: try --lr 0.05"
        if 0.01 <= config.lr <= 0.1:
            return ("train longer (--epochs), try a larger model (--hidden), or check that the "
                    "labels match the rows")
        return "try another --lr (0.01 to 0.1 suits most data), or check that labels match rows"
