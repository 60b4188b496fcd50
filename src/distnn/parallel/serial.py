"""The baseline: one process, the whole batch, no communication."""

import numpy as np

from distnn.data.sampler import batch_length
from distnn.parallel.strategy import Strategy


class Serial(Strategy):
    name = "serial"

    def __init__(self, comm, roles, model, optimizer, data, timer, placement, config):
        super().__init__(comm, roles, model, optimizer, data, timer, placement, config)
        if self.micro_batches is not None:
            # The running sum (the model's gradient buffer) and one micro-batch's sum.
            self._rows = [model.gradient_buffer(model.grads),
                          model.gradient_buffer(np.zeros_like(model.grads))]

    def step(self, batch) -> None:
        if self.micro_batches is not None:
            self.micro_gradient_sums(batch, self._rows, add_as_you_go=True)
            self.apply_total(self._rows[0][0], batch_length(batch))
            self.timer.lap("compute")
            return
        self.local_gradient_sum(batch)
        self.optimizer.step(self.model.grads, batch_length(batch))
        self.timer.lap("compute")
