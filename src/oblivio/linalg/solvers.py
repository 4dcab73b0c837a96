r"""Inverse-Hessian-vector products and extreme eigenvalues: pure functions.

The second-order influence update of Warnecke et al. (NDSS 2023, Sec. 4.2; reference
``influence-unlearning.md`` §4) needs ``t = (H + mu I)^{-1} v`` for a Hessian ``H`` of a
training objective; the first-order update needs a step size, naturally ``1 / lambda_max(H)``.
This module offers the three solvers of the reference and the spectral utilities to tune them:

* :func:`cholesky_solve` -- dense ``H`` (models with up to a few thousand parameters),
  ``scipy.linalg.cho_factor``; an indefinite or numerically singular matrix is a clear
  :class:`SolverError`, never a silent garbage solution.
* :func:`cg_solve` -- matrix-free (truncated) conjugate gradients on ``(H + mu I) t = v``,
  stopping on the relative residual ``||(H + mu I) t - v|| / ||v||`` (reference §4.2; the
  original code's CG minimised the quadratic with a wrong gradient, pitfall 2), on an
  iteration cap, or at negative curvature, always returning the iterate reached and the
  decrease of the quadratic model it achieves.
* :func:`lissa` -- the stochastic Neumann series of Agarwal et al. (JMLR 2017) exactly as the
  reference §4.3 defines it, including its patience-based early stopping and divergence flag.
* :func:`largest_eigenvalue`, :func:`smallest_eigenvalue` -- Lanczos
  (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``) or (shifted) power iteration; they
  live in :mod:`oblivio.linalg.eigen` and are re-exported here.

Every function takes plain arrays and callables: ``hvp(v) -> H v`` with ``v`` a float64
numpy vector (the callable may return a numpy array or a torch tensor). Nothing here knows
about models or data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import scipy.sparse.linalg

from oblivio.linalg._common import HVP, BatchHVP, SolverError, _to_numpy
from oblivio.linalg.eigen import largest_eigenvalue, smallest_eigenvalue

__all__ = [
    "SolveResult",
    "SolverError",
    "cg_solve",
    "cholesky_solve",
    "largest_eigenvalue",
    "lissa",
    "smallest_eigenvalue",
]


@dataclass(frozen=True)
class SolveResult:
    """The solution of ``(H + damping I) x = b`` and how it was obtained.

    Attributes
    ----------
    x : np.ndarray
        The solution (float64).
    method : str
        ``"cholesky"``, ``"cg"`` or ``"lissa"``.
    iterations : int
        Solver iterations (0 for Cholesky; for LiSSA summed over rounds).
    hvp_calls : int
        Hessian-vector products evaluated (for LiSSA: mini-batch products).
    residual : float
        Relative residual ``||(H + damping I) x - b|| / ||b||`` where the solver computed
        it (Cholesky, CG); ``nan`` for LiSSA, which never sees the full Hessian.
    converged : bool
        CG: the residual reached ``rtol`` within ``maxiter``; LiSSA: ``not diverged``.
    diverged : bool
        LiSSA only: the series blew up (see :func:`lissa`).
    info : dict
        Solver-specific extras (e.g. the estimated condition number of a Cholesky solve).
    """

    x: np.ndarray
    method: str
    iterations: int = 0
    hvp_calls: int = 0
    residual: float = float("nan")
    converged: bool = True
    diverged: bool = False
    info: dict[str, float] = field(default_factory=dict)


def _check_damping(damping: float) -> float:
    damping = float(damping)
    if not (math.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    return damping


def _check_rhs(b: Any) -> np.ndarray:
    rhs = _to_numpy(b)
    if not np.all(np.isfinite(rhs)):
        raise ValueError("the right-hand side contains non-finite values (nan or inf)")
    return rhs


# -- dense --------------------------------------------------------------------------------
def cholesky_solve(
    matrix: Any,
    b: Any,
    *,
    damping: float = 0.0,
    max_condition: float = 1e12,
) -> SolveResult:
    r"""Solve ``(H + damping I) x = b`` by a Cholesky factorisation.

    For the exact Hessian of a convex model (reference §4.1: ``H = X~^T diag(p(1-p)) X~ +
    lambda n I`` on the edited data) this is the second-order update's exact solve.

    Parameters
    ----------
    matrix : array-like or torch.Tensor of shape (p, p)
        Symmetric matrix ``H`` (symmetrised as ``(H + H^T) / 2`` to remove rounding
        asymmetry).
    b : array-like of shape (p,)
        Right-hand side.
    damping : float
        ``mu >= 0`` added to the diagonal. Non-convex models need ``mu > |lambda_min(H)|``.
    max_condition : float
        Largest acceptable condition number of ``H + mu I``, estimated from the factor by
        LAPACK ``dpocon`` (1-norm estimate, cost ``O(p^2)``). Above it the solve is refused:
        the solution would carry no correct digits in the flat directions.

    Returns
    -------
    SolveResult
        ``residual`` is the exact relative residual; ``info["condition"]`` the estimate;
        ``info["model_change"]`` is ``q(x) = 1/2 x^T A x - b^T x`` (``-1/2 b^T A^{-1} b``).

    Raises
    ------
    SolverError
        If ``H + mu I`` is not positive definite (the message gives its smallest eigenvalue
        and the damping that would fix it) or its condition number exceeds
        ``max_condition``.
    """
    damping = _check_damping(damping)
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    A = np.array(matrix, dtype=np.float64)  # a copy: the damping is added in place
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square, got shape {A.shape}")
    rhs = _check_rhs(b)
    if rhs.size != A.shape[0]:
        raise ValueError(f"b has {rhs.size} entries, the matrix is {A.shape[0]} x {A.shape[1]}")
    if not np.all(np.isfinite(A)):
        raise SolverError("the matrix contains non-finite values (nan or inf)")
    A = 0.5 * (A + A.T)
    A[np.diag_indices_from(A)] += damping
    what = "H + damping*I" if damping else "H (no damping)"
    try:
        factor = scipy.linalg.cho_factor(A, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        smallest = float(scipy.linalg.eigvalsh(A, subset_by_index=[0, 0])[0])
        need = damping + max(-smallest, 0.0)
        raise SolverError(
            f"Cholesky failed: {what} is not positive definite (smallest eigenvalue "
            f"{smallest:.4g}, damping={damping:g}). The objective is not convex here; pass "
            f"damping > {need:.4g} (e.g. {max(2 * need, 1e-8):.3g}) or use solver='cg' with "
            "damping."
        ) from None
    norm_1 = float(np.max(np.sum(np.abs(A), axis=0))) if A.size else 0.0
    rcond, info = scipy.linalg.lapack.dpocon(factor[0], norm_1)
    condition = math.inf if rcond <= 0 or info != 0 else 1.0 / float(rcond)
    if condition > max_condition:
        raise SolverError(
            f"{what} is ill-conditioned: estimated condition number {condition:.3g} > "
            f"max_condition={max_condition:.3g} (smallest diagonal of the Cholesky factor "
            f"{float(np.min(np.abs(np.diag(factor[0])))) ** 2:.3g}); add damping or increase "
            "the model's l2"
        )
    x = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    scale = float(np.linalg.norm(rhs))
    Ax = A @ x
    residual = float(np.linalg.norm(Ax - rhs)) / scale if scale > 0 else 0.0
    model_change = 0.5 * float(x @ Ax) - float(rhs @ x)
    return SolveResult(
        x=x,
        method="cholesky",
        residual=residual,
        info={"condition": condition, "model_change": model_change},
    )


# -- conjugate gradients ----------------------------------------------------------------
def cg_solve(
    hvp: HVP,
    b: Any,
    *,
    damping: float = 0.0,
    rtol: float = 1e-8,
    maxiter: int | None = None,
    x0: Any = None,
    preconditioner: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SolveResult:
    r"""Solve ``(H + damping I) x = b`` matrix-free by (truncated) conjugate gradients.

    CG minimises the quadratic model ``q(x) = 1/2 x^T A x - b^T x``, ``A = H + damping I``,
    over growing Krylov subspaces (reference §4.2; the original code's CG minimised it with a
    wrong gradient, pitfall 2). It stops when

    * the relative residual ``||A x - b|| / ||b||`` reaches ``rtol`` (converged);
    * ``maxiter`` iterations are done (truncated); or
    * a search direction ``p`` has ``p^T A p <= 0`` (**negative curvature**: ``A`` is not
      positive definite, as for a neural network's Hessian with too little damping).

    In the last two cases the iterate reached so far is returned, flagged, never silently
    discarded: every CG iterate before negative curvature is met lowers ``q`` (``q`` is
    non-increasing along CG iterates on the subspace where ``A`` was positive), so ``-x``
    is a descent direction of the quadratic model even when ``x`` is not the solution.
    This is the truncated-Newton rule of Steihaug (SIAM J. Numer. Anal. 20, 1983) and
    Nocedal & Wright (*Numerical Optimization*, 2nd ed., Alg. 7.2) without a trust region:
    a caller decides whether a truncated step is good enough (``info["model_change"]``).
    Written by hand rather than with ``scipy.sparse.linalg.cg``, which can neither stop at
    negative curvature nor report ``q``.

    Parameters
    ----------
    hvp : callable
        ``hvp(v) -> H v`` for a float64 numpy vector ``v`` (numpy or torch output).
    b : array-like of shape (p,)
        Right-hand side.
    damping : float
        ``mu >= 0`` added to the operator. Convex objectives with ``l2 > 0`` work with
        ``mu = 0``; a non-convex Hessian needs ``mu > -lambda_min(H)`` (see
        :func:`smallest_eigenvalue`) for CG to solve the system instead of stopping early.
    rtol : float
        Stop when ``||(H + mu I) x - b|| <= rtol ||b||``.
    maxiter : int or None
        Iteration cap (``10 p`` when None, as scipy's).
    x0 : array-like, optional
        Starting point (zero by default; costs one more product otherwise).
    preconditioner : callable, optional
        ``v -> M^-1 v`` for a symmetric positive definite ``M ~= H + damping I`` (e.g. the
        inverse diagonal, Jacobi): preconditioned CG (Nocedal & Wright, Alg. 5.3). The
        stopping rule stays on the unpreconditioned residual ``||A x - b||``.

    Returns
    -------
    SolveResult
        ``iterations``, ``hvp_calls`` (one more than the iterations: the exact final
        residual is recomputed, since the recursive CG residual drifts in floating point),
        ``residual`` (exact), ``converged`` (the loop met ``rtol`` and the exact residual is
        within ``10 rtol``), ``diverged`` (non-finite values). ``info``:
        ``model_change`` = ``q(x) - q(0)`` computed from the final product (negative: the
        quadratic model decreased), ``negative_curvature`` (1.0 if CG stopped there, with
        ``curvature`` the offending ``p^T A p / p^T p``), ``truncated`` (1.0 if it stopped
        on ``maxiter`` or negative curvature).
    """
    damping = _check_damping(damping)
    if not rtol > 0:
        raise ValueError(f"rtol must be positive, got {rtol!r}")
    if maxiter is not None and maxiter < 1:
        raise ValueError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    rhs = _check_rhs(b)
    dim = rhs.size
    scale = float(np.linalg.norm(rhs))
    if scale == 0.0:
        return SolveResult(
            x=np.zeros(dim),
            method="cg",
            residual=0.0,
            info={"model_change": 0.0, "negative_curvature": 0.0, "truncated": 0.0},
        )
    cap = 10 * dim if maxiter is None else int(maxiter)
    calls = 0

    def matvec(v: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        out = _to_numpy(hvp(np.array(v, dtype=np.float64)))
        if out.size != dim:
            raise ValueError(f"hvp returned {out.size} entries for a vector of {dim}")
        return out + damping * v

    def precondition(v: np.ndarray) -> np.ndarray:
        return v if preconditioner is None else _to_numpy(preconditioner(v))

    x = np.zeros(dim) if x0 is None else _to_numpy(x0).copy()
    r = rhs - matvec(x) if x0 is not None else rhs.copy()
    z = precondition(r)
    p = z.copy()
    rr = float(r @ z)
    iterations = 0
    met = float(np.linalg.norm(r)) <= rtol * scale
    negative = False
    curvature = math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        while not met and iterations < cap:
            Ap = matvec(p)
            pAp = float(p @ Ap)
            if not math.isfinite(pAp):
                break
            if pAp <= 0.0:
                negative = True
                curvature = pAp / float(p @ p)
                break
            alpha = rr / pAp
            x = x + alpha * p
            r = r - alpha * Ap
            iterations += 1
            met = float(np.linalg.norm(r)) <= rtol * scale
            z = precondition(r)
            rr_new = float(r @ z)
            p = z + (rr_new / rr) * p
            rr = rr_new
    if not np.all(np.isfinite(x)):
        return SolveResult(
            x=x,
            method="cg",
            iterations=iterations,
            hvp_calls=calls,
            residual=math.inf,
            converged=False,
            diverged=True,
            info={
                "model_change": math.nan,
                "negative_curvature": float(negative),
                "truncated": 1.0,
            },
        )
    if x.any():
        Ax = matvec(x)
        residual = float(np.linalg.norm(Ax - rhs)) / scale
        model_change = 0.5 * float(x @ Ax) - float(rhs @ x)
    else:
        residual, model_change = 1.0, 0.0
    info = {
        "model_change": model_change,
        "negative_curvature": float(negative),
        "truncated": float(not met),
    }
    if negative:
        info["curvature"] = curvature
    return SolveResult(
        x=x,
        method="cg",
        iterations=iterations,
        hvp_calls=calls,
        residual=residual,
        converged=bool(met and residual <= 10 * rtol),
        info=info,
    )


# -- LiSSA -------------------------------------------------------------------------------
def lissa(
    hvp: BatchHVP,
    b: Any,
    *,
    n_records: int,
    batch_size: int,
    scale: float,
    damping: float = 0.0,
    max_iter: int | None = None,
    rounds: int = 1,
    patience: int = 5,
    seed: int | None = 0,
) -> SolveResult:
    r"""Stochastic Neumann-series estimate of ``(H + damping * scale * I)^{-1} b`` (LiSSA).

    Agarwal, Bullins & Hazan, *Second-Order Stochastic Optimization for Machine Learning in
    Linear Time*, JMLR 2017; as used by Koh & Liang (ICML 2017) and Warnecke et al. (NDSS
    2023). This is the procedure of reference §4.3, step for step::

        repeat R rounds:
            order <- random permutation of the records; u <- b; best <- inf; since_best <- 0
            for j = 0 .. J-1:
                h <- hvp(next B records of order, wrapping around, u)   # batch-mean Hessian
                u_new <- b + (1 - d) u - h / s
                change <- sum |u_new - u|
                if change > best and since_best >= P: end the round (diverged, see below)
                if change < best: best <- change; since_best <- 1  else since_best += 1
                u <- u_new
                if u is not finite: diverged; end the round
            estimate += (u / s) / R

    The fixed point satisfies ``(H/s + d I) u = b``, so ``u / s -> (H + d s I)^{-1} b``:
    **the damping added to the Hessian is ``d * s``, not ``d``**. After ``J`` steps the
    estimate is the truncated Neumann series ``(1/s) sum_{j<J} A^j b``, ``A = (1-d) I - H/s``;
    it converges when ``s > lambda_max(H_batch)`` and ``d s >= |lambda_min(H)|``.

    Divergence [check]: the reference flags a round as diverged when its patience stop
    happens at ``j < P``. Because ``since_best`` restarts at 1 with each improvement, that
    stop cannot occur before ``j = P``; the reachable reading, used here, is a patience stop
    at ``j <= P``: the step size ``sum |u_new - u|`` never decreased after the first step,
    i.e. the series grew from the start (``s`` too small or a negative curvature direction
    not covered by ``d s``). A non-finite ``u`` is also divergence. A later patience stop is
    the reference's early stopping (not divergence) and keeps the ``u`` reached so far.

    Parameters
    ----------
    hvp : callable
        ``hvp(positions, u) -> H_B u``: the Hessian of the **mean** per-record objective over
        the records at ``positions`` (int array into ``0..n_records-1``) times ``u`` (a
        float64 numpy vector). For a sum-convention Hessian ``H_sum = n H_mean``, solve
        ``H_sum^{-1} g`` as ``lissa(..., b=g / n)``.
    b : array-like of shape (p,)
        Right-hand side.
    n_records : int
        Number of records the batches are drawn from.
    batch_size : int
        ``B`` (capped at ``n_records``).
    scale : float
        ``s > 0``; must exceed the largest eigenvalue of the batch Hessians.
    damping : float
        ``d`` in ``[0, 1)``; the effective damping of ``H`` is ``d * s``.
    max_iter : int or None
        ``J`` per round; ``None`` is one pass over the data, ``ceil(n_records / B)``.
    rounds : int
        ``R``, independent rounds averaged.
    patience : int
        ``P``, steps without a smaller ``change`` before a round ends.
    seed : int or None
        Seed of the permutations.

    Returns
    -------
    SolveResult
        ``iterations`` summed over rounds, ``hvp_calls`` (mini-batch products),
        ``diverged``, ``converged = not diverged``; ``info`` has ``effective_damping``
        (``d s``), ``rounds_stopped_early`` and ``final_change`` (last round's L1 step).
    """
    rhs = _check_rhs(b)
    if not (isinstance(n_records, (int, np.integer)) and n_records >= 1):
        raise ValueError(f"n_records must be a positive integer, got {n_records!r}")
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if not (0.0 <= damping < 1.0):
        raise ValueError(f"LiSSA damping d must lie in [0, 1), got {damping!r}")
    if not (isinstance(rounds, (int, np.integer)) and rounds >= 1):
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if not (isinstance(patience, (int, np.integer)) and patience >= 1):
        raise ValueError(f"patience must be a positive integer, got {patience!r}")
    batch = int(min(batch_size, n_records))
    steps = math.ceil(n_records / batch) if max_iter is None else int(max_iter)
    if steps < 1:
        raise ValueError(f"max_iter must be a positive integer or None, got {max_iter!r}")
    rng = np.random.default_rng(seed)
    estimate = np.zeros_like(rhs)
    diverged = False
    iterations = 0
    stopped_early = 0
    change = math.nan
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned
        for _ in range(rounds):
            u, taken, round_diverged, early, change = _lissa_round(
                hvp, rhs, rng.permutation(n_records), batch, scale, damping, steps, patience
            )
            iterations += taken
            stopped_early += int(early)
            diverged = diverged or round_diverged
            estimate = estimate + (u / scale) / rounds
    if not np.all(np.isfinite(estimate)):
        diverged = True
    return SolveResult(
        x=estimate,
        method="lissa",
        iterations=iterations,
        hvp_calls=iterations,
        converged=not diverged,
        diverged=diverged,
        info={
            "effective_damping": damping * scale,
            "rounds_stopped_early": float(stopped_early),
            "final_change": change,
        },
    )


def _lissa_round(
    hvp: BatchHVP,
    rhs: np.ndarray,
    order: np.ndarray,
    batch: int,
    scale: float,
    damping: float,
    steps: int,
    patience: int,
) -> tuple[np.ndarray, int, bool, bool, float]:
    """One round of :func:`lissa`: ``(u, iterations, diverged, stopped_early, change)``."""
    n_records = order.size
    cursor = 0
    u = rhs.copy()
    best = math.inf
    since_best = 0
    change = math.nan
    for j in range(steps):
        positions = order[(cursor + np.arange(batch)) % n_records]
        cursor = (cursor + batch) % n_records
        h = _to_numpy(hvp(positions, u.copy()))
        if h.size != rhs.size:
            raise ValueError(f"hvp returned {h.size} entries for a vector of {rhs.size}")
        u_new = rhs + (1.0 - damping) * u - h / scale
        change = float(np.sum(np.abs(u_new - u)))
        if change > best and since_best >= patience:
            return u, j + 1, j <= patience, True, change
        if change < best:
            best, since_best = change, 1
        else:
            since_best += 1
        u = u_new
        if not np.all(np.isfinite(u)):
            return u, j + 1, True, False, change
    return u, steps, False, False, change
