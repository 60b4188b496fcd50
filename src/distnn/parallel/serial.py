"""The baseline: one process, the whole batch, no communication."""

from distnn.data.sampler import batch_length
from distnn.parallel.strategy import Strategy


class Serial(Strategy):
    name = "serial"

    def step(self, batch) -> None:
        self.local_gradient_sum(batch)
        self.optimizer.step(self.model.grads, batch_length(batch))
        self.timer.lap("compute")
