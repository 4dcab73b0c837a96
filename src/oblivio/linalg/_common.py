"""What the solvers and the eigenvalue routines share: the Hessian-vector-product types,
:class:`SolverError` and the conversion of a product to a float64 numpy vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BatchHVP", "HVP", "SolverError"]

HVP = Callable[[np.ndarray], Any]
BatchHVP = Callable[[np.ndarray, np.ndarray], Any]


class SolverError(ValueError):
    """A linear system could not be solved reliably (indefinite, singular or divergent)."""


def _to_numpy(value: Any) -> np.ndarray:
    """float64 flat numpy copy of a numpy array or torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)
