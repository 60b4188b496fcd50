"""glibc's ``rand()``, so that ``--init uniform`` draws the original's very weights.

The original C++ program initialises every weight matrix with Eigen's
``MatrixXd::Random(rows, cols) * 0.01`` and never calls ``srand``. Eigen maps each
``std::rand()`` to ``-1 + 2 * rand() / RAND_MAX`` and fills a matrix in column-major
order; glibc's ``rand()`` is its additive-feedback generator (TYPE_3: degree 31,
separation 3) seeded with 1, and ``srand(0)`` seeds it with 1 as well. Reproducing that
stream makes distnn's initial weights the original's, bit for bit, on any platform.
"""

import numpy as np

RAND_MAX = 2**31 - 1
_DEGREE, _SEPARATION, _DISCARD = 31, 3, 310


class CRand:
    """The sequence of glibc ``rand()`` after ``srand(seed)``."""

    def __init__(self, seed: int = 1):
        seed = int(seed) & 0xFFFFFFFF
        state = [(seed - 2**32 if seed >= 2**31 else seed) or 1]
        for _ in range(1, _DEGREE):
            # Park-Miller 16807 by Schrage's method, in C's signed 32-bit arithmetic.
            word = state[-1]
            hi, lo = int(word / 127773), word - int(word / 127773) * 127773
            word = 16807 * lo - 2836 * hi
            state.append(word + 2147483647 if word < 0 else word)
        state += state[:_SEPARATION]
        self._state = [value & 0xFFFFFFFF for value in state]
        for _ in range(_DISCARD):
            self._next()

    def _next(self) -> int:
        state = self._state
        value = (state[-_DEGREE] + state[-_SEPARATION]) & 0xFFFFFFFF
        state.append(value)
        del state[0]
        return value >> 1

    def rand(self, n: int) -> np.ndarray:
        """The next ``n`` values of ``rand()``, in [0, RAND_MAX]."""
        return np.array([self._next() for _ in range(n)], dtype=np.float64)


def eigen_random(rand: CRand, rows: int, cols: int) -> np.ndarray:
    """Eigen's ``MatrixXd::Random(rows, cols)``: uniform on [-1, 1], column-major fill."""
    values = -1.0 + 2.0 * rand.rand(rows * cols) / float(RAND_MAX)
    return values.reshape(cols, rows).T
