"""Spectral norms ``||X||_2`` of dense and sparse matrices.

The certified-removal bounds (Guo et al., ICML 2020, Cor. 1) multiply by the spectral norm
of the training matrix, so they need an *upper* bound on it: an estimate from below (as the
20 power iterations of the original code give) makes the certificate optimistic. This module
offers

* :func:`spectral_norm` -- the value itself, by a dense symmetric eigensolver, Lanczos
  (``scipy.sparse.linalg.svds``) or power iteration;
* :func:`spectral_norm_bound` -- a value guaranteed to be ``>= ||X||_2`` (up to a rounding
  margin that is added explicitly): the exact dense eigenvalue of the smaller Gram matrix,
  inflated by a rounding allowance, or, when the matrix is too large for that, the smaller
  of the Frobenius norm and ``sqrt(||X||_1 ||X||_inf)`` (both classical upper bounds).

All functions are pure: they read ``X`` and return a float.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg

__all__ = ["spectral_norm", "spectral_norm_bound"]

_DENSE_LIMIT = 4096  # smaller side of X up to which the Gram eigensolver is used


def _as_matrix(X: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float64)
    array = np.asarray(X, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim > 2:
        array = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
    return array


def _gram_small_side(X: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """``X^T X`` or ``X X^T``, whichever is smaller, as a dense array."""
    n, d = X.shape
    if sp.issparse(X):
        gram = (X.T @ X) if d <= n else (X @ X.T)
        return np.asarray(gram.todense())
    return X.T @ X if d <= n else X @ X.T


def _dense_norm(X: np.ndarray | sp.csr_matrix) -> float:
    gram = _gram_small_side(X)
    top = scipy.linalg.eigvalsh(gram, subset_by_index=[gram.shape[0] - 1, gram.shape[0] - 1])
    return float(np.sqrt(max(float(top[0]), 0.0)))


def _lanczos_norm(X: np.ndarray | sp.csr_matrix, tol: float, seed: int | None) -> float:
    if min(X.shape) == 1:
        return float(scipy.sparse.linalg.norm(X) if sp.issparse(X) else np.linalg.norm(X))
    v0 = np.random.default_rng(seed).standard_normal(min(X.shape))
    values = scipy.sparse.linalg.svds(
        X, k=1, tol=tol, v0=v0, return_singular_vectors=False, solver="arpack"
    )
    return float(np.max(values))


def _power_norm(
    X: np.ndarray | sp.csr_matrix, tol: float, max_iter: int, seed: int | None
) -> float:
    v = np.random.default_rng(seed).standard_normal(X.shape[1])
    v /= np.linalg.norm(v)
    estimate = 0.0
    for _ in range(max_iter):
        w = np.asarray(X.T @ np.asarray(X @ v).ravel()).ravel()
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        new_estimate = float(np.sqrt(norm))  # ||X^T X v|| with ||v|| = 1 -> lambda_max
        v = w / norm
        if abs(new_estimate - estimate) <= tol * new_estimate:
            return new_estimate
        estimate = new_estimate
    return estimate


def spectral_norm(
    X: Any,
    *,
    method: str = "auto",
    tol: float = 1e-10,
    max_iter: int = 10_000,
    seed: int | None = 0,
) -> float:
    """Largest singular value ``||X||_2`` of a dense or sparse matrix.

    Parameters
    ----------
    X : array-like or scipy sparse matrix of shape (n, d)
        Extra trailing dimensions are flattened.
    method : {"auto", "dense", "lanczos", "power"}
        ``"dense"``: exact symmetric eigensolver on the smaller Gram matrix (``O(n d min(n,
        d))``); ``"lanczos"``: ARPACK through :func:`scipy.sparse.linalg.svds`, run to
        ``tol``; ``"power"``: power iteration on ``X^T X`` until the relative change is below
        ``tol`` (approaches the norm from below). ``"auto"`` is dense when the smaller side is
        at most 4096, Lanczos otherwise.
    tol : float
        Relative tolerance of the iterative methods.
    max_iter : int
        Iteration cap of the power method.
    seed : int or None
        Seed of the random start vector of the iterative methods.

    Returns
    -------
    float
        The spectral norm (0 for an empty matrix).
    """
    X = _as_matrix(X)
    if X.shape[0] == 0 or X.shape[1] == 0:
        return 0.0
    if method == "auto":
        method = "dense" if min(X.shape) <= _DENSE_LIMIT else "lanczos"
    if method == "dense":
        return _dense_norm(X)
    if method == "lanczos":
        return _lanczos_norm(X, tol, seed)
    if method == "power":
        return _power_norm(X, tol, max_iter, seed)
    raise ValueError(f"method must be 'auto', 'dense', 'lanczos' or 'power', got {method!r}")


def spectral_norm_bound(
    X: Any, *, dense_limit: int = _DENSE_LIMIT, gram: np.ndarray | None = None
) -> float:
    """A guaranteed upper bound on ``||X||_2``, for certificates.

    When the smaller side of ``X`` is at most ``dense_limit``, this is the exact norm from a
    dense symmetric eigensolver, inflated by ``(1 + 8 (n + d) u)`` (``u`` the float64 unit
    round-off) to cover the rounding of forming the Gram matrix and of the eigensolver
    (backward-stable; errors of order ``(n + d) u ||X||_2^2`` on the squared norm). Otherwise
    it is ``min(||X||_F, sqrt(||X||_1 ||X||_inf))``: both are classical upper bounds of the
    spectral norm (Golub & Van Loan, Matrix Computations, Sec. 2.3), looser but computable in
    one pass over the non-zeros. Iterative estimates (Lanczos, power iteration) are not used
    here because they approach the norm from below (the pitfall of the original certified-
    removal code, which used 20 power iterations).

    Parameters
    ----------
    X : array-like or scipy sparse matrix of shape (n, d)
    dense_limit : int
        Largest smaller side for which the exact dense route is taken.
    gram : ndarray of shape (d, d), optional
        ``X^T X`` if the caller already has it (saves forming it again).

    Returns
    -------
    float
        ``b >= ||X||_2``.
    """
    X = _as_matrix(X)
    n, d = X.shape
    if n == 0 or d == 0:
        return 0.0
    unit = np.finfo(np.float64).eps / 2
    if gram is not None:
        top = scipy.linalg.eigvalsh(gram, subset_by_index=[d - 1, d - 1])
        return float(np.sqrt(max(float(top[0]), 0.0))) * (1.0 + 8.0 * (n + d) * unit)
    if min(n, d) <= dense_limit:
        return _dense_norm(X) * (1.0 + 8.0 * (n + d) * unit)
    if sp.issparse(X):
        absolute = abs(X)
        frobenius = float(scipy.sparse.linalg.norm(X))
        norm_1 = float(absolute.sum(axis=0).max())
        norm_inf = float(absolute.sum(axis=1).max())
    else:
        frobenius = float(np.linalg.norm(X))
        norm_1 = float(np.abs(X).sum(axis=0).max())
        norm_inf = float(np.abs(X).sum(axis=1).max())
    return min(frobenius, float(np.sqrt(norm_1 * norm_inf)))
