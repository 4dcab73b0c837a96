"""Extreme eigenvalues of a Hessian from its Hessian-vector products.

:func:`largest_eigenvalue` and :func:`smallest_eigenvalue`: Lanczos
(``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``), a dense eigendecomposition for
small dimensions, or (shifted) power iteration; ``1 / lambda_max(H)`` is the first-order
update's natural step size and the smallest eigenvalue says how far from convex an
objective is (:mod:`oblivio.linalg.solvers` describes the setting).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg

from oblivio.linalg._common import HVP, SolverError, _to_numpy

__all__ = ["largest_eigenvalue", "smallest_eigenvalue"]


def _dense_from_hvp(hvp: HVP, dim: int) -> np.ndarray:
    columns = [_to_numpy(hvp(np.eye(dim)[:, k].copy())) for k in range(dim)]
    matrix = np.column_stack(columns)
    return 0.5 * (matrix + matrix.T)


def _operator(hvp: HVP, dim: int, shift: float = 0.0) -> scipy.sparse.linalg.LinearOperator:
    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        return _to_numpy(hvp(v.copy())) - shift * v

    return scipy.sparse.linalg.LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)


def _lanczos(hvp: HVP, dim: int, which: str, tol: float, maxiter: int | None, seed) -> float:
    if dim <= 3:
        values = np.linalg.eigvalsh(_dense_from_hvp(hvp, dim))
        return float(values[-1] if which == "LA" else values[0])
    v0 = np.random.default_rng(seed).standard_normal(dim)
    try:
        values = scipy.sparse.linalg.eigsh(
            _operator(hvp, dim),
            k=1,
            which=which,
            tol=tol,
            v0=v0,
            maxiter=maxiter,
            return_eigenvectors=False,
        )
    except scipy.sparse.linalg.ArpackNoConvergence as error:
        if len(error.eigenvalues):
            return float(error.eigenvalues[0])
        raise SolverError(
            f"Lanczos did not converge in maxiter={maxiter} for the {which} eigenvalue; "
            "increase maxiter or tol, or use method='power'"
        ) from None
    return float(values[0])


def _power(
    hvp: HVP, dim: int, tol: float, maxiter: int, seed: int | None, shift: float = 0.0
) -> float:
    """Dominant eigenvalue (largest in magnitude) of ``H - shift I`` by power iteration."""
    v = np.random.default_rng(seed).standard_normal(dim)
    v /= np.linalg.norm(v)
    value = 0.0
    for _ in range(maxiter):
        w = _to_numpy(hvp(v.copy())) - shift * v
        new_value = float(v @ w)  # Rayleigh quotient
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v = w / norm
        if abs(new_value - value) <= tol * abs(new_value):
            return new_value
        value = new_value
    return value


def largest_eigenvalue(
    hvp: HVP,
    dim: int,
    *,
    method: str = "lanczos",
    tol: float = 1e-6,
    maxiter: int | None = None,
    seed: int | None = 0,
) -> float:
    """Largest (algebraic) eigenvalue of a symmetric operator given by ``hvp``.

    Used for the first-order step ``tau = 1 / lambda_max(H)`` and the LiSSA scale ``s >
    lambda_max`` (reference §4.3).

    Parameters
    ----------
    hvp : callable
        ``hvp(v) -> H v`` (float64 numpy input; numpy or torch output).
    dim : int
        Dimension of ``v``.
    method : {"lanczos", "power"}
        ``"lanczos"``: ``scipy.sparse.linalg.eigsh(which="LA")`` (implicitly restarted
        Lanczos, ARPACK). ``"power"``: power iteration with a Rayleigh quotient; it finds the
        eigenvalue largest in **magnitude**, which is ``lambda_max`` for positive
        semi-definite ``H`` only.
    tol : float
        Relative accuracy.
    maxiter : int or None
        Iteration cap (ARPACK's default for Lanczos; 1000 for power iteration).
    seed : int or None
        Seed of the random start vector.

    Returns
    -------
    float
    """
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if method == "lanczos":
        return _lanczos(hvp, dim, "LA", tol, maxiter, seed)
    if method == "power":
        return _power(hvp, dim, tol, 1000 if maxiter is None else maxiter, seed)
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")


def smallest_eigenvalue(
    hvp: HVP,
    dim: int,
    *,
    method: str = "lanczos",
    tol: float = 1e-6,
    maxiter: int | None = None,
    seed: int | None = 0,
) -> float:
    """Smallest (algebraic) eigenvalue of a symmetric operator given by ``hvp``.

    A negative value is the damping a non-convex model needs: CG and Cholesky require
    ``damping > -lambda_min``, LiSSA ``d s >= |lambda_min|`` (reference §4.2-4.3).

    Parameters
    ----------
    method : {"lanczos", "power"}
        ``"lanczos"``: ``eigsh(which="SA")``. ``"power"``: shifted power iteration: with
        ``m = lambda_max`` (itself by power iteration), the dominant eigenvalue of
        ``H - m I`` is ``lambda_min - m`` (valid when ``lambda_max >= |lambda_min|``, as for
        regularised losses).

    Other parameters are as in :func:`largest_eigenvalue`.
    """
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if method == "lanczos":
        return _lanczos(hvp, dim, "SA", tol, maxiter, seed)
    if method == "power":
        cap = 1000 if maxiter is None else maxiter
        top = _power(hvp, dim, tol, cap, seed)
        return top + _power(hvp, dim, tol, cap, seed, shift=top)
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
