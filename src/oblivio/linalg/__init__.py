"""Linear algebra for unlearning: inverse-Hessian-vector products and spectral norms.

Pure functions on tensors/arrays and Hessian-vector-product callables; no model code.
"""

from oblivio.linalg.eigen import largest_eigenvalue, smallest_eigenvalue
from oblivio.linalg.solvers import (
    SolverError,
    SolveResult,
    cg_solve,
    cholesky_solve,
    lissa,
)
from oblivio.linalg.spectral import spectral_norm, spectral_norm_bound

__all__: list[str] = [
    "SolveResult",
    "SolverError",
    "cg_solve",
    "cholesky_solve",
    "largest_eigenvalue",
    "lissa",
    "smallest_eigenvalue",
    "spectral_norm",
    "spectral_norm_bound",
]
