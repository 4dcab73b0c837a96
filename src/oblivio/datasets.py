"""Public namespace of the dataset loaders: ``ob.datasets.load(name, ...)``."""

from oblivio.data import text as _text  # noqa: F401  (registers the "text" and "alice" loaders)
from oblivio.data.loaders import DataNotFoundError, available, describe, load, register_loader

__all__ = ["DataNotFoundError", "available", "describe", "load", "register_loader"]
