"""A scikit-learn style classifier over distnn, for Python code and pipelines.

    from distnn.estimator import MLPClassifier
    clf = MLPClassifier(hidden=(64,), epochs=300, batch_size=64, lr=0.1).fit(X, y)
    clf.predict(X), clf.predict_proba(X), clf.score(X, y)

Trains serially in this process (``MPI.COMM_SELF``); labels may be any sortable values
(``classes_`` maps them to the model's outputs, as scikit-learn does).
"""

import inspect

import numpy as np

from distnn.config import make_config
from distnn.data import Dataset


class MLPClassifier:
    def __init__(self, hidden=(64,), epochs=200, batch_size=None, lr=0.1, lr_decay=1e-3,
                 momentum=0.9, dtype="float32", init="he", seed=0, shuffle=True):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.momentum = momentum
        self.dtype = dtype
        self.init = init
        self.seed = seed
        self.shuffle = shuffle

    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> "MLPClassifier":
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for MLPClassifier; "
                                 f"valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def fit(self, X, y) -> "MLPClassifier":
        from mpi4py import MPI

        from distnn.train import train

        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X must be (n_samples, n_features) with one label per row; got "
                             f"X {X.shape} and y {y.shape}")
        self.classes_, labels = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError("y holds a single class; classification needs at least 2")
        params = self.get_params()
        params["hidden"] = tuple(params["hidden"])
        config = make_config(**params, eval_every=max(self.epochs, 1))
        x = X.astype(config.dtype)
        data = Dataset("array", x, labels, x, labels, int(self.classes_.size))
        self.model_, self.result_ = train(config, MPI.COMM_SELF, data)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=self.model_.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[-1]} features; the model was fit on "
                             f"{self.n_features_in_}")
        return self.model_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))
