"""The contract between optimizers and the strategies that move gradients between ranks.

A strategy knows three things about an optimizer, and nothing else:

1. ``prepare(grad_sum, batch_size)``: on the rank that computed a gradient *sum* over its
   rows, turn it, in place, into what travels: a part whose sum over the workers is what
   the owner of the parameters needs (SGD folds its step size in: ``-lr_t / B * g``; Adam
   sends the mean gradient's part, ``g / B``).
2. ``apply(parts, part=slice)``: on the rank that owns a shard of the parameters (the
   parameter server, an allreduce rank, the serial process), add the parts in the order
   given and update that shard of the parameters and of the state; counts one update.
   ``advance()`` counts an update applied elsewhere, so that a worker's copy of the
   schedule stays in step.
3. ``state``: a dict of flat buffers shaped like the parameters, whose names
   (``state_names``) are known before the optimizer exists, so that a strategy allocates
   them once where they will live (shared memory, one rank) without knowing what they
   mean. Checkpoints store them by name.

An optimizer may also be built on a slice of the parameter vector alone, with state of
that slice's length: one of ``--servers K`` parameter servers owns its shard that way, so
its state costs 1/K of the vector and ``apply`` updates the shard whole.

The schedule (``schedule.py``) gives the learning rate of update ``iterations``.
"""

import numpy as np

from distnn.optim.schedule import Schedule


class Optimizer:
    name = ""
    state_names: tuple[str, ...] = ()
    memory_vectors = 0     # flat vectors it may hold on the applying rank: state and work

    def __init__(self, params: np.ndarray, state: dict | None, schedule: Schedule):
        """``state``: this rank's state buffers by name (allocated here when None; empty
        on a rank that only prepares, such as a parameter-server worker)."""
        if state is None:
            state = {name: np.zeros_like(params) for name in self.state_names}
        unknown = set(state) - set(self.state_names)
        if unknown or (state and set(state) != set(self.state_names)):
            raise ValueError(f"{self.name} keeps state {self.state_names}, got {tuple(state)}")
        for name, buffer in state.items():
            if buffer.shape != params.shape or buffer.dtype != params.dtype:
                raise ValueError(f"state {name!r} must be {params.shape} {params.dtype}, got "
                                 f"{buffer.shape} {buffer.dtype}")
        self.params, self.state, self.schedule = params, state, schedule
        self.iterations = 0

    @classmethod
    def from_config(cls, config, params: np.ndarray, state: dict | None,
                    schedule: Schedule) -> "Optimizer":
        raise NotImplementedError

    @property
    def current_lr(self) -> float:
        return self.schedule(self.iterations)

    @property
    def holds_state(self) -> bool:
        return bool(self.state) or not self.state_names

    def prepare(self, grad_sum: np.ndarray, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def apply(self, parts, part: slice = slice(None), counts: bool = True) -> None:
        """``counts``: whether this call completes the update (a rank that applies its
        share of an update in pieces counts the update once, with its last piece)."""
        if not self.holds_state:
            raise RuntimeError(f"this rank holds no {self.name} state: it prepares, the owner "
                               "of the parameters applies")
        self._update(list(parts), part)
        self.iterations += counts

    def _update(self, parts: list[np.ndarray], part: slice) -> None:
        raise NotImplementedError

    @property
    def folds_preparation(self) -> bool:
        """Whether ``apply_sums`` prepares the sums within the update's own pass over
        memory: then a strategy may send sums unprepared and spare the workers a pass."""
        return False

    def apply_sums(self, sums, batch_size: int, part: slice = slice(None),
                   counts: bool = True) -> None:
        """``apply`` of the workers' gradient *sums* over a batch of ``batch_size`` rows,
        not yet prepared: each is prepared here, in place, first."""
        for row in sums:
            self.prepare(row, batch_size)
        self.apply(sums, part, counts)

    def advance(self) -> None:
        """Count one update applied elsewhere (by a parameter server)."""
        self.iterations += 1

    def step(self, grad_sum: np.ndarray, batch_size: int = 1) -> None:
        """One whole update from a gradient sum on one rank (serial). ``grad_sum`` is
        consumed."""
        self.apply([self.prepare(grad_sum, batch_size)])

    def accelerate(self, kernels) -> None:
        """Use compiled kernels (``distnn.nn.fused``) where this optimizer has one that
        gives bit-identical results; by default there is none."""

    def relocate(self, params: np.ndarray, state: dict) -> None:
        """Take other buffers holding the same values: the end of a run whose buffers lived
        in shared memory that is about to be freed."""
        self.params, self.state = params, state

    def state_dict(self) -> dict:
        return {"iterations": self.iterations,
                "state": {name: buffer.copy() for name, buffer in self.state.items()}}

    def load_state_dict(self, saved: dict, part: slice = slice(None)) -> None:
        """Continue from ``saved``; a rank without state takes the update count only, and
        the owner of a shard of the parameters (a parameter server) takes ``part`` of each
        saved vector."""
        for name, buffer in self.state.items():
            value = np.asarray(saved["state"][name])[part]
            if value.shape != buffer.shape:
                raise ValueError(f"optimizer state {name!r} has shape {value.shape}, the model "
                                 f"needs {buffer.shape}")
            buffer[...] = value
        self.iterations = int(saved["iterations"])


def sum_into(target: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """``target = parts[0] + parts[1] + ...``, added in order (a fixed order keeps results
    the same run to run)."""
    np.copyto(target, parts[0])
    for addend in parts[1:]:
        target += addend
    return target
