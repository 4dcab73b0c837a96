"""Constants, rounding bounds and matrix helpers of certified removal.

The derivations these serve are in :mod:`oblivio.unlearners.certified`; ``_UNIT`` and
``_UNIT32`` are the unit roundoffs of float64 and float32 used by every rounding bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats
from scipy.special import expit

from oblivio.data.blocked import BlockedRows, ChunkedRows, needs_blocking
from oblivio.linalg.spectral import spectral_norm_bound

GAMMA = 0.25  # Lipschitz constant used for l'' of the logistic loss (any >= 1/(6 sqrt 3) works)
_ROW_NORM_TOL = 1e-6
_GRAM_LIMIT = 4096  # largest d for which the Gram matrix X^T X is kept
_GRAM_BLOCK = 4096  # rows per rank-k update of a weighted Gram matrix
_UNIT = np.finfo(np.float64).eps / 2
_UNIT32 = float(np.finfo(np.float32).eps) / 2


def _gamma(count: int, unit: float = _UNIT32) -> float:
    """Higham's ``gamma_m = m u / (1 - m u)``: relative error of an ``m``-term dot product."""
    return count * unit / (1.0 - count * unit)


def noise_constant(delta: float) -> float:
    """``c = sqrt(2 ln(1.5 / delta))`` of Guo et al., Thm 3 (``delta = 1.5 exp(-c^2 / 2)``)."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def budget(epsilon: float, delta: float, sigma: float) -> float:
    """Total gradient-residual budget ``sigma * epsilon / c`` (Guo et al., Thm 3)."""
    return sigma * epsilon / noise_constant(delta)


def _row_norms(X: Any) -> np.ndarray:
    if sp.issparse(X):
        return np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    if isinstance(X, BlockedRows):
        return X.row_norms()
    if isinstance(X, ChunkedRows):
        return BlockedRows(X).row_norms()
    X = np.asarray(X)
    if needs_blocking(X.reshape(X.shape[0], -1)):  # float32 / memory-mapped: no float64 copy
        return BlockedRows(X.reshape(X.shape[0], -1)).row_norms()
    X = np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1)
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def _frobenius_sq(X: Any) -> float:
    if sp.issparse(X):
        return float(X.multiply(X).sum())
    return float(np.sum(np.square(X)))


def _rows(X: Any, positions: np.ndarray) -> Any:
    return X[positions]


def _inverse(factor: tuple) -> np.ndarray:
    """Explicit inverse from a Cholesky factor (used only as a preconditioner)."""
    size = factor[0].shape[0]
    return scipy.linalg.cho_solve(factor, np.eye(size), check_finite=False)


def _apply_mask(mask: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Zero ``arrays`` (each shaped like ``mask``) in place where ``mask`` is False.

    Usually only the few rows removed since the last compaction are masked: touching just
    those rows avoids full ``(n, K)`` passes. Returns the last array.
    """
    rows = np.flatnonzero(~mask.all(axis=1))
    if rows.size * 8 < mask.shape[0]:
        keep = mask[rows]
        for array in arrays:
            array[rows] *= keep
    else:
        for array in arrays:
            array *= mask
    return arrays[-1]


def _float32_shadow(X: Any) -> np.ndarray | None:
    """float32 copy of a dense ``X`` for the per-step pass (half the memory traffic; its
    rounding is bounded rigorously in ``_measure``); None for sparse ``X``. Data already
    stored as float32 (:class:`BlockedRows`, e.g. memory-mapped) is used as it is."""
    if sp.issparse(X):
        return None
    if isinstance(X, BlockedRows):
        if X.data.dtype == np.float32 and not X.intercept:
            return X.data
        shadow = np.empty(X.shape, dtype=np.float32)
        for start, stop, part in X.blocks():
            shadow[start:stop] = part
        return shadow
    return np.ascontiguousarray(X, dtype=np.float32)


def _dense64(X: Any) -> Any:
    """Dense design matrices as C-contiguous float64 (sparse and blocked ones as they are)."""
    if sp.issparse(X) or isinstance(X, BlockedRows):
        return X
    return np.ascontiguousarray(X, dtype=np.float64)


def _norm_bound(X: Any, gram: np.ndarray | None) -> float:
    """Upper bound on ``||X||_2``; from the Gram matrix when there is one (no copy of X)."""
    if gram is None:
        if isinstance(X, BlockedRows):  # Frobenius norm, one blocked pass
            return float(np.sqrt(np.sum(X.row_norms() ** 2))) * (1.0 + 1e-12)
        return spectral_norm_bound(X)
    n, d = X.shape
    top = scipy.linalg.eigvalsh(gram, subset_by_index=[d - 1, d - 1])
    return float(np.sqrt(max(float(top[0]), 0.0))) * (1.0 + 8.0 * (n + d) * _UNIT)


def _set_inverse(cache: dict[str, Any], k: int, inverse: np.ndarray) -> None:
    """Store ``H~^-1`` (float64, kept for Woodbury updates) and its float32 copy.

    The float32 copy is what the solves multiply with: it is only a preconditioner (every
    residual is formed in float64 with ``Hf`` itself and every step is measured or bounded
    afterwards), so its rounding costs iterations, never rigour, and it halves the memory
    read per product.
    """
    cache["Hinv"][k] = inverse
    cache["Hinv32"][k] = inverse.astype(np.float32)


def _weighted_gram(X: Any, weights: np.ndarray | None) -> np.ndarray:
    """``X^T diag(weights) X`` as a dense array (``weights=None``: all ones).

    Non-negative weights on dense data use the symmetric rank-k update (half the flops),
    accumulated over blocks of ``_GRAM_BLOCK`` rows (no scaled copy of ``X``); rows of
    weight zero are skipped.
    """
    if sp.issparse(X):
        scaled = X if weights is None else X.multiply(weights[:, None])
        return np.asarray((X.T @ scaled).todense())
    if isinstance(X, BlockedRows):
        return X.weighted_gram(weights)
    if weights is not None and np.any(weights < 0):
        return X.T @ (X * weights[:, None])
    rows = None if weights is None else np.flatnonzero(weights)
    if rows is not None and rows.size == X.shape[0]:
        rows = None
    count = X.shape[0] if rows is None else rows.size
    upper = np.zeros((X.shape[1], X.shape[1]), order="F")
    for low in range(0, count, _GRAM_BLOCK):
        index = slice(low, low + _GRAM_BLOCK) if rows is None else rows[low : low + _GRAM_BLOCK]
        part = np.asarray(X[index], dtype=np.float64)
        if weights is not None:
            part = part * np.sqrt(weights[index])[:, None]
        upper = scipy.linalg.blas.dsyrk(1.0, part.T, beta=1.0, c=upper, trans=0, overwrite_c=1)
    gram = np.triu(upper)
    gram += np.triu(upper, 1).T
    return gram


def _signs(y: np.ndarray, K: int) -> np.ndarray:
    """``+1`` / ``-1`` targets per class (one column for a binary problem)."""
    if K == 1:
        return (2.0 * y - 1.0)[:, None]
    return np.where(y[:, None] == np.arange(K)[None, :], 1.0, -1.0)


def _curvature(Z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``l''(z) = s(z)(1 - s(z)) = e / (1 + e)^2`` with ``e = exp(-|z|)``, zero outside
    ``mask``.

    In place on one buffer (a few float64 roundings, relative, like ``expit``): these
    ``(n, K)`` element-wise passes cost about as much as the float32 pass over ``X``.
    """
    e = np.abs(Z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    d = e + 1.0
    np.square(d, out=d)
    np.divide(e, d, out=e)
    if mask is not None:
        e *= mask
    return e


def _loss_slope(Z: np.ndarray, S: np.ndarray) -> np.ndarray:
    """d/dz log(1 + exp(-S z)) = -S s(-S z)."""
    return -S * expit(-S * Z)
