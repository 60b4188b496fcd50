"""The spiral data set of the original, exactly as ``nnfs.datasets.spiral_data`` makes it."""

import numpy as np


def spiral_data(samples: int, classes: int, rng: np.random.RandomState | None = None,
                float32: bool = False):
    """``classes`` interleaved spiral arms of ``samples`` points each.

    With ``float32``, the noise and the points are rounded to float32 as they are after
    ``nnfs.init()`` (its default dtype), which made the original's data files: the points
    are then those files' values exactly.

    Draws ``randn(samples)`` once per class, in class order, from ``rng`` (the global
    NumPy state when None), so that with the same seed state the output is identical to
    ``nnfs.datasets.spiral_data(samples, classes)`` (after CS231n's case study).

    Returns
    -------
    X : (samples * classes, 2) float64 (float32 with ``float32``)
    y : (samples * classes,) class labels, in blocks of ``samples``: uint8 as nnfs makes
        them, or the smallest unsigned type that holds them beyond 256 classes (uint8
        would wrap round).
    """
    randn = np.random.randn if rng is None else rng.randn
    X = np.zeros((samples * classes, 2), dtype=np.float32 if float32 else np.float64)
    y = np.zeros(samples * classes, dtype=np.min_scalar_type(max(classes - 1, 0)))
    for class_number in range(classes):
        ix = range(samples * class_number, samples * (class_number + 1))
        r = np.linspace(0.0, 1, samples)
        noise = randn(samples)
        if float32:
            noise = noise.astype(np.float32)
        t = np.linspace(class_number * 4, (class_number + 1) * 4, samples) + noise * 0.2
        X[ix] = np.c_[r * np.sin(t * 2.5), r * np.cos(t * 2.5)]
        y[ix] = class_number
    return X, y
