"""Dense networks over one flat parameter buffer."""

from distnn.nn.mlp import MLP

__all__ = ["MLP"]
