r"""Certified removal for L2-regularised logistic regression (Guo et al., ICML 2020).

C. Guo, T. Goldstein, A. Hannun, L. van der Maaten, *Certified Data Removal from Machine
Learning Models*, ICML 2020 (arXiv:1911.03030). Loss-perturbed training, a Newton step per
removal, a bound on the gradient residual it leaves, and an (epsilon, delta) budget that
triggers retraining when it is spent. See ``reference/certified-removal.md``.

Notation (sum convention, as :class:`~oblivio.models.LogisticRegression`)::

    L_b(w; D) = sum_{i in D} l(w.x_i, y_i) + lam |D| / 2 ||w||^2 + b.w,   b ~ N(0, sigma^2 I)

with ``l(t, y) = log(1 + exp(-y t))``, ``y = ±1``. ``l''(t) = s(t)(1 - s(t))`` (``s`` the
sigmoid) does not depend on ``y`` and is ``gamma``-Lipschitz for ``gamma >= 1/(6 sqrt 3)``;
like the paper we use ``gamma = 1/4``.

The Newton update and what it leaves behind (derivation used for every bound below)
-----------------------------------------------------------------------------------
Let ``w`` be the current weights and ``D'`` the edited training set. Define
``Delta = -grad L_b(w; D')``. If ``w`` minimises ``L_b(.; D)`` exactly, then for a removal of
the records ``R`` (``m = |R|``)::

    grad L_b(w; D') = grad L_b(w; D) - sum_{r in R} grad l(x_r) - lam m w
                    = -(lam m w + sum_{r in R} grad l(x_r))  =: -Delta         (Guo et al., Eq. 5)

and for an edit ``Z -> Z~`` (Relabel, ReplaceFeatures, Replace; ``|D'| = |D|``)
``Delta = sum grad l(Z) - sum grad l(Z~) = -G`` (Warnecke et al., NDSS 2023). ``b`` appears in
neither (it is the same in both objectives). The update is ``w- = w + s`` with ``s ~= H^-1
Delta``. By the fundamental theorem of calculus, with ``H'(v)`` the Hessian of
``L_b(.; D')`` at ``v`` and ``a = X' s`` (``X'`` the rows of ``D'``)::

    grad L_b(w + s; D') = -Delta + int_0^1 H'(w + t s) s dt
                        = [int_0^1 (H'(w + t s) - H'(w)) dt] s  +  (H'(w) s - Delta)
                        =            T1                          +        T2

* ``T1 = X'^T (c * a)`` with ``c_i = int_0^1 (l''(z_i + t a_i) - l''(z_i)) dt`` and
  ``|c_i| <= gamma |a_i| / 2`` (``gamma``-Lipschitz ``l''``; the L2 and ``b`` terms are
  quadratic / linear and drop out). Hence::

      ||T1|| <= ||X'||_2 ||c * a||_2 <= (gamma / 2) ||X'||_2 ||a||_4^2
             <= (gamma / 2) ||X'||_2 ||a||_inf ||a||_2 <= (gamma / 2) ||X'||_2 ||s|| ||X' s||

  (the last step needs ``||x_i|| <= 1``). The rightmost expression is half of Guo et al.'s
  data-dependent bound (Cor. 1, ``gamma ||X||_2 ||s|| ||X s||``); the factor 1/2 comes from
  integrating ``t`` along the step instead of bounding it by 1. ``bound="data"`` accounts
  ``(gamma/2) ||X'||_2 ||a||_4^2``, the tightest of the chain (and reports Cor. 1's value
  as the diagnostic ``bound_cor1``).
  ``bound="worst"`` uses ``||T1|| <= (gamma/2) R sum a_i^2 <= gamma R^3 |D'| ||s||^2`` with
  ``||s||`` replaced by ``max(||s||, ||Delta||_max / (lam |D'|))`` (the exact Newton step has
  ``||s|| <= ||Delta|| / (lam |D'|)``), ``||Delta||_max = m (lam ||w|| + R)`` for removals
  (``2 m R`` for edits) and ``R`` the largest row norm: Guo et al.'s Thm 1 value
  ``4 gamma C^2 m^2 / (lam^2 (n - m))`` when ``R = C = 1`` and ``lam ||w|| <= C`` (true at
  the optimum without noise; with noise ``||w||`` may exceed ``C / lam`` and the paper's
  constant would not cover it, so the actual ``||w||`` is used).
* ``T2`` is zero for the exact Newton step. For any other ``s`` it is computed **exactly**
  with one Hessian-vector product, ``O(n d)``.

``||X'||_2``: for removals ``X'`` is a row subset of the training matrix ``X_D`` at the last
(re)build, so ``||X'||_2 <= ||X_D||_2`` and the norm is computed once
(:func:`~oblivio.linalg.spectral_norm_bound`, exact dense eigensolver, never a power-
iteration estimate from below). For edits ``X'^T X' <= X_D^T X_D + X~_Z^T X~_Z`` in the
Loewner order, so ``||X'||_2^2 <= ||X_D||_2^2 + ||X~_Z||_F^2`` is carried forward.

Hessian modes
-------------
``hessian="exact"`` (the original procedure, with a Cholesky solve instead of an explicit
inverse): ``H'(w)`` is built and factorised for every step, ``O(n d^2 + d^3)``; then
``T2 ~= 0`` (it is still computed and accounted, to cover rounding).

``hessian="amortized"`` (default). A cache holds a fixed SPD matrix
``H~ = sum_i cf_i x_i x_i^T + lam n_f I`` (the Hessian at the last refresh: ``cf_i`` the
curvatures then) and its Cholesky factor. Per step:

1. ``s ~= Hf^-1 Delta`` where ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T -
   lam (n_f - n') I`` is the refresh-time Hessian restricted to the current rows; solved by
   iterative refinement preconditioned with the cached factor, ``O(d^2 + k d)`` per
   iteration (``k`` rows removed since the refresh; contraction about ``k / n``).
2. One blocked pass over ``X`` gives ``a = X' s`` and ``H'(w) s`` at the *current*
   weights, hence ``T2`` exactly and the ``T1`` bound; ``O(n d)``. For dense ``X`` the pass
   reads a float32 copy of ``X`` and computes only ``X'^T ((c - cf) * a)`` with it (``Hf s``
   in float64): half the memory traffic; every rounding error of the float32 arithmetic is
   bounded (``_measure``) and added to ``T2`` and the norms of ``a``, and the margins
   updated with it carry an error bound that is settled by an exact float64 product when
   it would matter.
3. If ``||T2|| > refresh * T1``: a correction ``s <- s - u`` with ``Hf u = T2`` whose
   effect is *bounded* without another pass (see ``_deferred_correction``; ``X u`` is
   folded into the next step's pass), then up to ``refine - 1`` measured corrections
   ``s <- s - H~^-1 (H'(w) s - Delta)`` (one more pass each); if still too large, a partial
   refresh (removed rows taken out of ``H~``, the 2% of rows whose curvature drifted most
   updated, ``O(t d^2 + d^3)``), then a full rebuild of ``H~`` at the current weights
   (``O(n d^2 + d^3)``), after which ``s`` is the exact Newton step.

``hessian="cg"`` (and ``"amortized"`` when ``d > 4096``, e.g. hashed sparse features): no
``d x d`` matrix at all. ``s`` solves ``H'(w) s = Delta`` by conjugate gradients with a Jacobi
preconditioner (``O(nnz(X))`` per iteration; columns no row uses have ``H' = lam n' I`` and
are solved exactly), and ``T2 = ||H'(w) s - Delta||`` is computed exactly with one
Hessian-vector product in float64 (plus a rounding allowance, see ``_measure``); if it is
too large, up to ``refine`` corrections ``s <- s - H'^-1 (H' s - Delta)`` follow.
``||X'||_2`` is then bounded by ``min(||X||_F, sqrt(||X||_1 ||X||_inf))`` when both sides of
``X`` exceed 4096 (:func:`~oblivio.linalg.spectral_norm_bound`).

A certified fit of the amortised mode forms the per-class Hessians once, at the end of a
short L-BFGS run, polishes to the exact optimum with chord-Newton steps using their
factors, and keeps them as the cache (``_fit_with_cached_hessians``). Dense data stored as
float32 or memory-mapped is used through :class:`~oblivio.data.blocked.BlockedRows`
(float64 products a block of rows at a time, no float64 copy); its float32 rows are then
the shadow the per-step pass reads.

Whatever ``s`` is used, ``T2`` is computed exactly or rigorously bounded (deferred
margins, the ``O(d^2)`` correction) and ``T1`` bounded: every certificate is rigorous;
``refresh`` caps the extra budget a step may spend on ``T2`` at ``refresh`` times its ``T1``
bound, or ``refresh * 1e-5`` of the whole budget for steps whose ``T1`` is below that.
Removed rows are folded into the cached inverse every 64 removals (Woodbury,
``O(k d^2)``). ``||X'||_2`` is never recomputed per step.

Accounting and retraining (Sec. 5, Thm 3)
-----------------------------------------
Residuals add up (triangle inequality): after steps ``1..T`` the true residual of the
*b*-objective is at most ``beta = r_0 + sum_t bound_t``, where ``r_0`` is the measured
gradient norm at training time (the solver stops at ``||grad|| <= tol``, not at 0; that
error is accounted, §2.4 of the reference, plus a rounding allowance). Theorem 3: ``w-`` is
the exact minimiser of ``L_{b - r}(.; D')`` with ``||r|| <= beta``, and ``b ~ N(0, sigma^2
I)`` makes this (epsilon, delta)-certified while ``beta <= sigma epsilon / c``,
``c = sqrt(2 ln(1.5 / delta))``. A step that would push ``beta`` over that budget is not
taken: the model is retrained from scratch on ``D'`` with a fresh ``b`` and ``beta`` restarts
at the new ``r_0`` (``retrained=True``). No certificate is ever reported with
``beta > budget``. For one-vs-rest the residual is the stacked vector of the K per-class
residuals and Thm 3 applies to the stacked ``d K`` Gaussian; each step's bound is the
root-sum-square of the per-class bounds (the original code adds them; the RSS is also valid
and tighter, reference §7).

What a certificate on an edit means: for Relabel/ReplaceFeatures/Replace the same argument
shows that the updated model is (epsilon, delta)-indistinguishable from training from
scratch (with a fresh ``b`` from the same distribution) on the *edited* data set ``D~``: the
old labels / feature values of the edited records are certifiably forgotten in the sense of
Guo et al.'s definition with ``A(D \\ x)`` replaced by ``A(D~)``. The bound is the data-
dependent one above; the update itself is Warnecke et al.'s second-order update
``w - H^-1 G``. The guarantee covers the edit as a whole (the old values of the edited
records), not feature columns of records outside the request.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats
from scipy.special import expit

from oblivio.data import Change, Dataset, RequestError
from oblivio.data.blocked import BlockedRows, needs_blocking
from oblivio.linalg.solvers import cg_solve
from oblivio.linalg.spectral import spectral_norm_bound
from oblivio.models.base import Model
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners._passes import BLOCK, fused_pass, thread_pool
from oblivio.unlearners.base import Certificate, Outcome, StateError, Unlearner, register

__all__ = ["CertifiedRemoval", "budget", "noise_constant"]

GAMMA = 0.25  # Lipschitz constant used for l'' of the logistic loss (any >= 1/(6 sqrt 3) works)
_ROW_NORM_TOL = 1e-6
_GRAM_LIMIT = 4096  # largest d for which the Gram matrix X^T X is kept
_BUDGET_FLOOR = 1e-5  # per step, as a share of the budget (see _newton)
_FOLD_ROWS = 64  # fold removed rows into the cached inverse once this many have gathered
_PARTIAL_SHARE = 0.02  # share of rows whose curvature a partial refresh updates
_BATCH_MODES = ("sequential", "joint", "auto")
_COARSE_ITER = 45  # L-BFGS iterations before the chord-Newton polish of a certified fit
_CHORD_STEPS = 40
_CG_RTOL = 1e-5  # relative residual of the matrix-free step (what it leaves is in T2)
_CG_MAXITER = 500
_clock = time.perf_counter  # the clock batch="auto" sizes its steps with
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
    X = np.asarray(X)
    if needs_blocking(X.reshape(X.shape[0], -1)):  # float32 / memory-mapped: no float64 copy
        return BlockedRows(X.reshape(X.shape[0], -1)).row_norms()
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.norm(X.reshape(X.shape[0], -1), axis=1)


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

    Non-negative weights on dense data use the symmetric rank-k update (half the flops).
    """
    if sp.issparse(X):
        scaled = X if weights is None else X.multiply(weights[:, None])
        return np.asarray((X.T @ scaled).todense())
    if isinstance(X, BlockedRows):
        return X.weighted_gram(weights)
    if weights is not None and np.any(weights < 0):
        return X.T @ (X * weights[:, None])
    scaled = X if weights is None else X * np.sqrt(weights)[:, None]
    upper = scipy.linalg.blas.dsyrk(1.0, np.asarray(scaled, dtype=np.float64).T, trans=0)
    return np.triu(upper) + np.triu(upper, 1).T


@register
class CertifiedRemoval(Unlearner):
    r"""Certified removal with Newton updates and an enforced (epsilon, delta) budget.

    Guo et al., *Certified Data Removal from Machine Learning Models*, ICML 2020: training
    minimises the loss-perturbed objective ``L_b`` (Eq. 2, ``b ~ N(0, sigma^2 I)``, Thm 3);
    each removal is a Newton step ``w- = w + H^-1 Delta`` (Eq. 5; batch form Sec. 4.1); the
    gradient residual it leaves is bounded (Thm 1 / Cor. 1) and accumulated, and the model is
    retrained from scratch with a fresh ``b`` when the accumulated bound would exceed
    ``sigma * epsilon / c``. The derivation of the bounds, of the amortised Hessian mode and
    of what a certificate on an edit means is in the module docstring.

    Parameters
    ----------
    model : LogisticRegression
        Template: binary, or ``multi_class="ovr"`` for more classes (one-vs-rest, reference
        §7). Rows of the training data must have Euclidean norm ``<= 1`` (load with
        ``normalize="l2"``).
    epsilon : float
        Certificate epsilon (> 0).
    delta : float
        Certificate delta, ``0 < delta < 1``.
    sigma : float
        Standard deviation of each entry of ``b`` (>= 0). ``sigma=0`` trains without noise
        and takes plain Newton steps; results then carry ``certificate=None``.
    l2 : float or None
        Per-record L2 strength; ``None`` uses ``model.l2``.
    bound : {"data", "worst"}
        Data-dependent bound (Cor. 1, tightened) or the worst-case bound (Thm 1).
    hessian : {"amortized", "exact", "cg"}
        Cached Cholesky factor plus an exactly computed correction term, the Hessian
        rebuilt and factorised at every step (original procedure), or matrix-free: no
        ``d x d`` matrix, the step solved by Jacobi-preconditioned conjugate gradients on
        the current Hessian and ``T2`` computed exactly with one Hessian-vector product
        (high-dimensional sparse data). ``"amortized"`` switches to ``"cg"`` when
        ``d > 4096``.
    batch : {"sequential", "joint", "auto"}
        How the ``m`` records of a removal request are taken out. ``"sequential"``: one
        Newton step per record (``m`` passes over ``X``; usually the least budget, since the
        curvature term of a step grows with the square of the step). ``"joint"``: one
        Newton step for the whole batch (Guo et al., Sec. 4.1; one pass; its bound grows
        about like ``m^2`` for similar records, but less where their gradients cancel).
        ``"auto"``: computes the joint step and the first record's step, keeps whichever
        spends less budget per record (the single step times ``m`` against the joint one),
        and continues with as many steps as ``time_limit`` affords (equal groups sized from
        the measured time per step); it costs one extra pass. ``True`` / ``False`` are
        accepted for ``"joint"`` / ``"sequential"``. Edits (Relabel, ReplaceFeatures,
        Replace) are always one step per request.
    time_limit : float or None
        Seconds a removal request may take with ``batch="auto"`` (None: no limit).
    n_jobs : int
        Threads for the pass over a dense ``X`` (contiguous row ranges; the rounding bounds
        cover any order of the partial sums).
    subsample : float or None
        One-vs-rest negative subsampling ratio ``r`` in (0, 1]: class k trains on all its
        positives and each negative with probability ``r`` (reference §7). Only removals
        are supported with subsampling.
    refine : int
        Correction steps per Newton step in the amortised mode, taken while the correction
        term exceeds ``refresh`` times the curvature term: the first costs ``O(d^2 + n)``
        (its effect is bounded, not measured), each further one an ``O(n d)`` pass. With
        ``refine=0`` a stale cache is refreshed at once (``O(n d^2)``); on Fashion-MNIST
        ``refine=1`` avoids almost all refreshes.
    refresh : float
        Refresh the cached factor when, after refinement, the correction term ``||T2||``
        still exceeds ``refresh`` times the curvature bound ``T1`` (amortised mode).
    verify : bool
        After every request compute the exact gradient residual (one more ``O(n d)`` pass),
        report it as ``diagnostics["gradient_residual"]`` and raise ``RuntimeError`` if it
        ever exceeded the accumulated bound (it cannot, unless there is a bug).
    seed : int or None
        Seed of the noise ``b`` (and the subsampling masks); retrains continue the stream.

    Attributes
    ----------
    model_ : LogisticRegression
        Current model; ``model_.noise`` is the current ``b``.
    budget_used_ : float
        Accumulated residual bound ``beta`` since the last (re)training.

    Notes
    -----
    ``UnlearnResult.diagnostics`` holds ``steps``, ``step_bound`` (bound spent by this
    request), ``correction`` (the ``T2`` part), ``bound_cor1`` (Guo et al.'s Cor. 1 value for
    comparison), ``refreshes``/``full_refreshes``/``corrections``/``solver_iterations``
    (amortised mode), ``budget_left`` and, with ``verify=True``, ``gradient_residual``.
    """

    name = "certified"
    exact = False
    needs = frozenset({"forget", "retain"})

    def __init__(
        self,
        model: Model,
        *,
        epsilon: float = 1.0,
        delta: float = 1e-4,
        sigma: float = 10.0,
        l2: float | None = None,
        bound: str = "data",
        hessian: str = "amortized",
        batch: str | bool = "sequential",
        time_limit: float | None = None,
        n_jobs: int = 1,
        subsample: float | None = None,
        refine: int = 1,
        refresh: float = 0.5,
        verify: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(model)
        self.epsilon = epsilon
        self.delta = delta
        self.sigma = sigma
        self.l2 = l2
        self.bound = bound
        self.hessian = hessian
        self.batch = batch
        self.time_limit = time_limit
        self.n_jobs = n_jobs
        self.subsample = subsample
        self.refine = refine
        self.refresh = refresh
        self.verify = verify
        self.seed = seed

    # -- parameters and data checks ------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.model, LogisticRegression):
            raise TypeError(
                "CertifiedRemoval needs an oblivio.models.LogisticRegression, got "
                f"{type(self.model).__name__}"
            )
        if not (
            isinstance(self.epsilon, (int, float))
            and np.isfinite(self.epsilon)
            and self.epsilon > 0
        ):
            raise ValueError(f"epsilon must be a positive finite number, got {self.epsilon!r}")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta!r}")
        if not (
            isinstance(self.sigma, (int, float)) and np.isfinite(self.sigma) and self.sigma >= 0
        ):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma!r}")
        if self.l2 is not None and not (np.isfinite(self.l2) and self.l2 > 0):
            raise ValueError(f"l2 must be None or a positive finite number, got {self.l2!r}")
        if self.bound not in ("data", "worst"):
            raise ValueError(f"bound must be 'data' or 'worst', got {self.bound!r}")
        if self.hessian not in ("amortized", "exact", "cg"):
            raise ValueError(f"hessian must be 'amortized', 'exact' or 'cg', got {self.hessian!r}")
        if not (isinstance(self.batch, bool) or self.batch in _BATCH_MODES):
            raise ValueError(
                f"batch must be one of {', '.join(map(repr, _BATCH_MODES))} (or a bool), "
                f"got {self.batch!r}"
            )
        if self.time_limit is not None and not (
            isinstance(self.time_limit, (int, float))
            and np.isfinite(self.time_limit)
            and self.time_limit > 0
        ):
            raise ValueError(
                f"time_limit must be None or a positive number of seconds, got {self.time_limit!r}"
            )
        if not (
            isinstance(self.n_jobs, (int, np.integer))
            and not isinstance(self.n_jobs, bool)
            and self.n_jobs >= 1
        ):
            raise ValueError(f"n_jobs must be a positive integer, got {self.n_jobs!r}")
        if self.subsample is not None and not (0 < self.subsample <= 1):
            raise ValueError(f"subsample must be None or in (0, 1], got {self.subsample!r}")
        if not (isinstance(self.refine, (int, np.integer)) and self.refine >= 0):
            raise ValueError(f"refine must be a non-negative integer, got {self.refine!r}")
        if not (self.refresh >= 0):
            raise ValueError(f"refresh must be >= 0, got {self.refresh!r}")

    def _check_data(self, train: Dataset, model: LogisticRegression) -> None:
        if len(train) == 0:
            raise ValueError("cannot train on an empty data set")
        mode = model.mode(train.n_classes)
        if mode == "multinomial":
            raise ValueError(
                f"certified removal covers binary and one-vs-rest logistic regression; the data "
                f"has {train.n_classes} classes and multi_class={model.multi_class!r} gives the "
                "multinomial model. Use LogisticRegression(multi_class='ovr')."
            )
        norms = _row_norms(train.X)
        if norms.size and norms.max() > 1 + _ROW_NORM_TOL:
            worst = int(np.argmax(norms))
            raise ValueError(
                f"certified removal needs rows with Euclidean norm <= 1 (its bounds assume it); "
                f"record id {int(train.ids[worst])} has norm {norms[worst]:.6g} and "
                f"{int(np.sum(norms > 1 + _ROW_NORM_TOL))} rows exceed 1. Load the data with "
                "normalize='l2' (e.g. ob.datasets.load(name, normalize='l2'))."
            )

    def _template(self) -> LogisticRegression:
        template = self.model.clone()
        if self.l2 is not None:
            template.l2 = float(self.l2)
        template.noise = None
        return template

    @property
    def budget_total(self) -> float:
        """``sigma * epsilon / c`` (0 when ``sigma == 0``)."""
        return budget(self.epsilon, self.delta, self.sigma)

    @property
    def budget_left_(self) -> float:
        """Budget remaining before the next retrain."""
        return max(self.budget_total - self.budget_used_, 0.0)

    # -- training --------------------------------------------------------------------------
    def fit(self, train: Dataset) -> CertifiedRemoval:
        """Draw ``b ~ N(0, sigma^2 I)`` from ``seed`` and train ``L_b`` to its exact optimum."""
        self._check_params()
        self._check_data(train, self._template())
        self._rng = np.random.default_rng(self.seed)
        return super().fit(train)

    def _fit(self, train: Dataset) -> None:
        self.model_, self._pending_member = self._train_fresh(train)

    def attach(self, train: Dataset) -> CertifiedRemoval:
        """Adopt a model trained with noise on exactly ``train``.

        Honesty rules: with ``sigma > 0`` the model must carry a noise vector ``b`` (a model
        trained without one can never be certified; use :meth:`fit`). Its scale is checked
        against ``sigma`` (``||b||^2 / sigma^2`` must be a plausible chi-square draw), but the
        certificate also assumes what no check can prove: that ``b`` was drawn from
        ``N(0, sigma^2 I)`` independently of the data and kept secret. The model's gradient
        residual on ``train`` is measured and charged to the budget; a model too far from
        the optimum is refused. Subsampled one-vs-rest models cannot be attached (the
        masks are part of training).
        """
        self._check_params()
        model = self.model
        if not isinstance(model, LogisticRegression) or not model.is_fitted:
            return super().attach(train)  # raises the base class's clear error
        self._check_data(train, model)
        if self.subsample is not None:
            raise ValueError("attach() cannot adopt a subsampled one-vs-rest model; use fit()")
        if self.l2 is not None and float(self.l2) != float(model.l2):
            raise ValueError(f"l2={self.l2!r} differs from the model's l2={model.l2!r}")
        size = model.n_params
        noise = None if model.noise is None else np.asarray(model.noise, dtype=np.float64)
        if self.sigma > 0:
            if noise is None or not np.any(noise):
                raise ValueError(
                    "attach() with sigma > 0 needs a model trained with loss perturbation "
                    "b ~ N(0, sigma^2 I) (model.noise is empty): without it no removal can be "
                    "certified. Use fit(train), or sigma=0 for uncertified Newton steps."
                )
            if noise.size != size:
                raise ValueError(f"model.noise has {noise.size} entries for {size} parameters")
            q = float(noise @ noise) / self.sigma**2
            low, high = scipy.stats.chi2.ppf([1e-9, 1 - 1e-9], df=size)
            if not (low <= q <= high):
                raise ValueError(
                    f"model.noise has ||b|| / sqrt(p) = {math.sqrt(q / size) * self.sigma:.4g}, "
                    f"implausible for sigma={self.sigma!r}; the certificate needs the sigma "
                    "b was drawn with"
                )
        self._rng = np.random.default_rng(self.seed)
        self._pending_member = None
        return super().attach(train)

    def _train_fresh(self, data: Dataset) -> tuple[LogisticRegression, np.ndarray | None]:
        """A from-scratch draw of the training algorithm A(data): fresh noise, masks, fit."""
        model = self._template()
        mode = model.mode(data.n_classes)
        K = 1 if mode == "binary" else data.n_classes
        D = data.n_features + int(model.fit_intercept)
        noise = self._rng.normal(0.0, self.sigma, size=K * D) if self.sigma > 0 else None
        if self.subsample is None:
            model.noise = noise
            if self.hessian == "amortized" and D <= _GRAM_LIMIT:
                self._fit_cache = self._fit_with_cached_hessians(model, data, K)
            else:
                model.fit(data)
            return model, None
        member = self._rng.random((len(data), K)) < self.subsample
        if K > 1:
            member |= data.y[:, None] == np.arange(K)[None, :]
        else:
            member[:] = True  # binary problems are not subsampled
        theta = np.zeros((K, D))
        for k in range(K):
            rows = np.flatnonzero(member[:, k])
            part = data.take(rows)
            labels = (part.y == k).astype(np.int64) if K > 1 else part.y
            binary = Dataset(X=part.X, y=labels, ids=part.ids, classes=(0, 1), name=data.name)
            sub = self._template()
            sub.multi_class = "auto"
            sub.noise = None if noise is None else noise.reshape(K, D)[k]
            theta[k] = sub.fit(binary).theta.numpy()
        model.set_state(
            {
                "theta": theta.ravel(),
                "noise": noise,
                "__meta__": {"shape": [K, D], "mode": mode},
            }
        )
        return model, member

    def _fit_with_cached_hessians(
        self, model: LogisticRegression, data: Dataset, K: int
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Fit ``model`` to its exact optimum reusing the Hessians the cache needs anyway.

        A short L-BFGS run (``_COARSE_ITER`` iterations) gets close; the per-class Hessians
        ``H_k(w0)`` and their factors are formed there, once; then chord-Newton steps
        ``w <- w - H(w0)^-1 grad L_b(w)`` (one gradient pass each, linear convergence with
        rate ``||I - H(w0)^-1 H(w)||``, small this close to the optimum) run to the model's
        ``tol``. The factors become the amortised cache (its curvatures ``cf`` are those at
        ``w0``; the per-step pass measures the drift), so a certified fit costs one set of
        Hessians instead of Newton polishing plus a set. Falls back to ``model.fit`` (warm
        started) if the chord steps stall. Returns ``(w0, cache)`` or None.
        """
        coarse = model.clone()
        coarse.noise = model.noise
        coarse.tol = math.inf  # only the L-BFGS phase
        coarse.max_iter = _COARSE_ITER
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coarse.fit(data)
        W0 = coarse.coef_.copy()
        X = model.design_matrix(data.X)
        X = _dense64(X)
        self._K, self._l2 = K, float(model.l2)
        S = self._signs(data.y, K)
        mask = np.ones((len(data), K), dtype=bool)
        counts = mask.sum(axis=0)
        cache = self._fresh_cache(X, np.asarray(X @ W0.T), mask, counts, range(K), None)
        noise = 0.0 if model.noise is None else np.asarray(model.noise).reshape(W0.shape)
        W = W0
        for chord_steps in range(_CHORD_STEPS):  # noqa: B007 (counted into n_iter_)
            grad = np.asarray(X.T @ self._loss_slope(np.asarray(X @ W.T), S)).T
            grad += self._l2 * len(data) * W + noise
            if float(np.linalg.norm(grad)) <= model.tol:
                break
            step = np.stack(
                [
                    scipy.linalg.cho_solve(cache["F"][k], grad[k], check_finite=False)
                    for k in range(K)
                ]
            )
            W = W - step
        else:
            model.fit(data, init=W.ravel())
            return W0, cache
        meta = {"shape": [K, W.shape[1]], "mode": model.mode(data.n_classes)}
        model.set_state({"theta": W.ravel(), "noise": model.noise, "__meta__": meta})
        model.n_iter_ = int(getattr(coarse, "n_iter_", 0)) + chord_steps
        return W0, cache

    # -- cached state ----------------------------------------------------------------------
    def _prepare(self) -> None:
        member = getattr(self, "_pending_member", None)
        self._pending_member = None
        self._build(self.train_, member)
        self.budget_used_ = self._initial_residual
        if self.sigma > 0 and self.budget_used_ > self.budget_total:
            raise ValueError(
                f"the model's gradient residual {self.budget_used_:.3g} already exceeds the "
                f"budget sigma*epsilon/c = {self.budget_total:.3g}: the model is not at the "
                "optimum of the perturbed objective on this data (or the budget is tiny)"
            )

    def _build(self, data: Dataset, member: np.ndarray | None) -> None:
        """Cache the design matrix, margins, factor and norms for ``data``."""
        model = self.model_
        W = model.coef_.copy()
        K, D = W.shape
        self._K, self._D = K, D
        self._l2 = float(model.l2)
        X = model.design_matrix(data.X)
        X = _dense64(X)
        self._X = X
        self._X32 = _float32_shadow(X)
        self._zerr = np.zeros(K)  # bound on |Z - exact margins| from float32 updates
        self._base = data
        self._active = np.ones(len(data), dtype=bool)
        self._member = np.ones((len(data), K), dtype=bool) if member is None else member.copy()
        self._S = self._signs(data.y, K)
        self._Z = np.asarray(X @ W.T)
        self._R = float(_row_norms(X).max()) if len(data) else 0.0
        self._noise = (
            np.zeros((K, D))
            if model.noise is None
            else np.asarray(model.noise, dtype=np.float64).reshape(K, D)
        )
        mask = self._mask()
        self._counts = mask.sum(axis=0).astype(np.int64)
        # Gram matrix X^T X of the rows at build time (d <= 4096): X'^T X' <= X^T X after
        # removals, so sqrt(v^T G v) bounds ||X' v|| in O(d^2) (used by the bounds below)
        self._gram = None
        if X.shape[1] <= _GRAM_LIMIT:
            self._gram = _weighted_gram(X, None)
        if self.subsample is None:
            self._xnorm = np.full(K, _norm_bound(X, self._gram))
        else:
            self._xnorm = np.array([spectral_norm_bound(X[mask[:, k]]) for k in range(K)])
        self._pending = np.zeros((K, D))  # deferred correction: exact margins Z - X pending^T
        fit_cache = getattr(self, "_fit_cache", None)
        self._fit_cache = None
        if fit_cache is not None and fit_cache[1]["cf"].shape == (len(data), K):
            self._cache = fit_cache[1]  # Hessians at the fit's coarse point (see _train_fresh)
        else:
            self._cache = self._fresh_cache(X, self._Z, mask, self._counts, range(K), None)
        self._refreshes = 0
        residual, allowance = self._residual(X, self._Z, mask, W, self._counts)
        self._initial_residual = residual + allowance
        self._measured = (residual, allowance)  # load() checks the spent budget against it

    @staticmethod
    def _signs(y: np.ndarray, K: int) -> np.ndarray:
        if K == 1:
            return (2.0 * y - 1.0)[:, None]
        return np.where(y[:, None] == np.arange(K)[None, :], 1.0, -1.0)

    def _mask(self) -> np.ndarray:
        return self._member & self._active[:, None]

    @staticmethod
    def _curvature(Z: np.ndarray, mask: np.ndarray) -> np.ndarray:
        P = expit(Z)
        return P * (1.0 - P) * mask

    @staticmethod
    def _loss_slope(Z: np.ndarray, S: np.ndarray) -> np.ndarray:
        """d/dz log(1 + exp(-S z)) = -S s(-S z)."""
        return -S * expit(-S * Z)

    def _hessian(self, X: Any, weights: np.ndarray, count: int) -> np.ndarray:
        """``X^T diag(weights) X + lam * count * I`` (weights zero outside the class's rows)."""
        if sp.issparse(X) or isinstance(X, BlockedRows):
            H = _weighted_gram(X, weights)
        else:
            rows = np.flatnonzero(weights)
            H = _weighted_gram(X[rows], weights[rows])
        H[np.diag_indices_from(H)] += self._l2 * count
        return H

    def _fresh_cache(
        self,
        X: Any,
        Z: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        classes: Any,
        cache: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Amortised mode: Hessian ``H~`` and its Cholesky factor at the current weights.

        The cache records the per-row weights ``cf`` (curvatures), rows ``fmask`` and counts
        ``nf`` that ``H~ = sum_{fmask} cf_i x_i x_i^T + lam nf I`` was built from, so that
        ``Hf v = H~ v - sum_{removed since} cf_i x_i x_i^T v - lam (nf - n') v`` (the same
        matrix on the *current* rows) costs ``O(d^2 + k d)``. Returns a new dict.
        """
        if self._solver_mode() != "amortized":
            return None
        cache = self._copy_cache(cache, Z, mask, counts)
        curvature = self._curvature(Z, mask)
        for k in classes:
            H = self._hessian(X, curvature[:, k], counts[k])
            cache["H"][k] = H
            cache["F"][k] = scipy.linalg.cho_factor(H, check_finite=False)
            _set_inverse(cache, k, _inverse(cache["F"][k]))
            cache["cf"][:, k] = curvature[:, k]
            cache["fmask"][:, k] = mask[:, k]
            cache["nf"][k] = counts[k]
        return cache

    def _copy_cache(
        self, cache: dict[str, Any] | None, Z: np.ndarray, mask: np.ndarray, counts: np.ndarray
    ) -> dict[str, Any]:
        K = self._K
        if cache is None:
            return {
                "H": [None] * K,
                "F": [None] * K,
                "Hinv": [None] * K,
                "Hinv32": [None] * K,
                "cf": self._curvature(Z, mask),
                "fmask": mask.copy(),
                "nf": counts.copy(),
            }
        return {
            "H": list(cache["H"]),
            "F": list(cache["F"]),
            "Hinv": list(cache["Hinv"]),
            "Hinv32": list(cache["Hinv32"]),
            "cf": cache["cf"].copy(),
            "fmask": cache["fmask"].copy(),
            "nf": cache["nf"].copy(),
        }

    def _partial_refresh(
        self, X: Any, Z: np.ndarray, mask: np.ndarray, counts: np.ndarray, classes: Any
    ) -> dict[str, Any] | None:
        """Cheap refresh: take removed rows out of ``H~`` and update the rows whose curvature
        drifted most (``O((k + t) d^2 + d^3)`` for ``k`` removed and ``t`` updated rows).

        ``H~`` stays a sum of positive terms plus ``lam n' I``, hence SPD; if the Cholesky
        factorisation fails anyway (cancellation), returns None (caller refreshes fully).
        """
        cache = self._copy_cache(self._cache, Z, mask, counts)
        curvature = self._curvature(Z, mask)
        top = max(64, int(_PARTIAL_SHARE * X.shape[0]))
        for k in classes:
            H = cache["H"][k].copy()
            gone = np.flatnonzero(cache["fmask"][:, k] & ~mask[:, k])
            if gone.size:
                Xg = _rows(X, gone)
                H -= _weighted_gram(Xg, cache["cf"][gone, k])
                H[np.diag_indices_from(H)] -= self._l2 * (cache["nf"][k] - counts[k])
            drift = (curvature[:, k] - cache["cf"][:, k]) * mask[:, k]
            if top < drift.size:
                rows = np.argpartition(-np.abs(drift), top)[:top]
            else:
                rows = np.arange(drift.size)
            rows = rows[drift[rows] != 0]
            if rows.size:
                H += _weighted_gram(_rows(X, rows), drift[rows])
            try:
                cache["F"][k] = scipy.linalg.cho_factor(H, check_finite=False)
            except np.linalg.LinAlgError:
                return None
            _set_inverse(cache, k, _inverse(cache["F"][k]))
            cache["H"][k] = H
            cache["cf"][:, k] = np.where(mask[:, k], cache["cf"][:, k], 0.0)
            cache["cf"][rows, k] = curvature[rows, k]
            cache["fmask"][:, k] = mask[:, k]
            cache["nf"][k] = counts[k]
        return cache

    def _residual(
        self,
        X: Any,
        Z: np.ndarray,
        mask: np.ndarray,
        W: np.ndarray,
        counts: np.ndarray,
        loss_grad: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """Exact ``||grad L_b(W; data)||`` (stacked over classes) and a rounding allowance."""
        if loss_grad is None:
            slopes = self._loss_slope(Z, self._S) * mask
            loss_grad = np.asarray(X.T @ slopes).T
        penalty = self._l2 * counts[:, None] * W
        grad = loss_grad + penalty + self._noise
        scale = (
            float(np.linalg.norm(loss_grad))
            + float(np.linalg.norm(penalty))
            + float(np.linalg.norm(self._noise))
        )
        allowance = 64.0 * (X.shape[0] + X.shape[1]) * _UNIT * scale
        return float(np.linalg.norm(grad)), allowance

    # -- the Newton step -------------------------------------------------------------------
    def _fold(self, X: Any, mask: np.ndarray) -> dict[str, Any] | None:
        """Take the rows removed since the refresh out of ``H~`` and its inverse.

        ``H~ <- H~ - U C U^T`` (``U`` their rows, ``C`` their cached curvatures) with the
        Sherman-Morrison-Woodbury formula for the inverse, ``O(k d^2)`` for ``k`` rows, so
        that the cached solves stay ``O(d^2)`` and contract fast. ``lam n_f I`` is left in
        ``H~`` (the shift ``lam (n_f - n')`` is applied separately). The Cholesky factor goes
        stale (``None``); it is only needed after a refresh, which recomputes it.
        """
        cache = self._cache
        gone = cache["fmask"] & ~mask
        if int(gone.sum(axis=0).max(initial=0)) < _FOLD_ROWS:
            return None
        cache = self._copy_cache(cache, None, mask, None)
        for k in range(self._K):
            rows = np.flatnonzero(gone[:, k])
            weights = cache["cf"][rows, k]
            keep = weights > 0
            if np.any(keep):
                U = _rows(X, rows[keep])
                U = (U.toarray() if sp.issparse(U) else U).T
                w = weights[keep]
                HU = cache["Hinv"][k] @ U
                middle = np.diag(1.0 / w) - U.T @ HU
                try:
                    update = HU @ scipy.linalg.solve(middle, HU.T, assume_a="pos")
                except (np.linalg.LinAlgError, ValueError):
                    return None
                _set_inverse(cache, k, cache["Hinv"][k] + update)
                cache["H"][k] = cache["H"][k] - (U * w) @ U.T
                cache["F"][k] = None
            cache["fmask"][rows, k] = False
            cache["cf"][rows, k] = 0.0
        return cache

    def _cached_operator(
        self, X: Any, mask: np.ndarray, counts: np.ndarray, cache: dict[str, Any], k: int
    ) -> tuple[Any, int]:
        """``v -> Hf v`` for class ``k`` in float64, ``O(d^2 + r d)``, and ``r`` (see below).

        ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T - lam (nf - n') I`` is the cached
        Hessian restricted to the current rows (``r`` rows removed since the refresh).
        """
        rows = np.flatnonzero(cache["fmask"][:, k] & ~mask[:, k])
        Xr = _rows(X, rows)
        weights = cache["cf"][rows, k]
        shift = self._l2 * (cache["nf"][k] - counts[k])
        H = cache["H"][k]

        def apply(v: np.ndarray) -> np.ndarray:
            return H @ v - np.asarray(Xr.T @ (weights * np.asarray(Xr @ v))).ravel() - shift * v

        return apply, rows.size

    def _cached_solve(
        self,
        X: Any,
        mask: np.ndarray,
        counts: np.ndarray,
        rhs: np.ndarray,
        touched: Any,
        cache: dict[str, Any],
        rtol: float = 1e-10,
    ) -> tuple[np.ndarray, int, np.ndarray]:
        """Solve ``Hf s = rhs`` by iterative refinement preconditioned with ``H~``.

        ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T - lam (nf - n') I`` is the cached
        Hessian restricted to the current rows. Each iteration costs ``O(d^2 + k d)``
        (``k`` rows removed since the refresh) and contracts the error by about ``k / n``.
        Returns the solution, the iteration count and the exact norms ``||rhs - Hf s||``.
        Exactness is not needed for rigour: whatever ``s`` results, the bound covers it.
        """
        s = np.zeros_like(rhs)
        left = np.zeros(rhs.shape[0])
        iterations = 0
        for k in touched:
            apply, _ = self._cached_operator(X, mask, counts, cache, k)
            # the preconditioner: the explicit inverse of H~ (a matrix-vector product is
            # several times faster than two triangular solves; its rounding does not matter,
            # since the residuals below are formed in float64 with Hf itself)
            Hinv = cache["Hinv32"][k]
            target = rhs[k]
            floor = rtol * float(np.linalg.norm(target))
            sk = (Hinv @ target.astype(np.float32)).astype(np.float64)
            residual = target - apply(sk)
            size = float(np.linalg.norm(residual))
            for _ in range(30):
                if size <= floor:
                    break
                candidate = sk + Hinv @ residual.astype(np.float32)
                new_residual = target - apply(candidate)
                new_size = float(np.linalg.norm(new_residual))
                iterations += 1
                if new_size >= size:
                    break  # stagnation (rounding) or no contraction: keep the best
                sk, residual, size = candidate, new_residual, new_size
            s[k] = sk
            left[k] = size
        return s, iterations, left

    def _measure(
        self,
        X: Any,
        Z: np.ndarray,
        p_norm: np.ndarray,
        S: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        s: np.ndarray,
        Delta: np.ndarray,
        xnorm: np.ndarray,
        p_image: np.ndarray | None = None,
        *,
        zerr: np.ndarray | None = None,
        cache: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One pass over ``X``: ``a = X s``, ``T2 >= ||H'(w) s - Delta||`` and ``T1``.

        ``Z`` may lag the exact margins by a deferred correction ``X p^T`` with
        ``||p_k|| = p_norm[k]`` and by at most ``zerr[k]`` per row (float32 updates): the
        curvatures then differ by at most ``gamma (R ||p|| + zerr)`` per row (or by
        ``gamma (||X' p||_2 + sqrt(n') zerr)`` in 2-norm), so ``H'(w) s`` is computed up to
        ``err = ||X'||_2 gamma (min(R ||p|| ||a||_2, p_image ||a||_inf) + zerr ||a||_2)``,
        which is added to ``T2``.

        Mixed precision (dense ``X`` with an amortised cache). Split
        ``H'(w) s = Hf s + X'^T (dc * a)`` with ``dc = c - cf`` (current minus cached
        curvatures on the current rows). ``Hf s`` is formed in float64 in ``O(d^2 + r d)``;
        the pass computes ``a^ = X32 s32`` and ``X32^T (dc * a^)`` in float32 (blocks of
        ``B`` rows, summed in float64): half the memory traffic of a float64 pass. Rounding is
        bounded with Higham's ``gamma_m = m u / (1 - m u)`` (``u = 2^-24``, any summation
        order): ``|a^_i - a_i| <= e_a = gamma_{d+3} R ||s||`` (``x``, ``s`` rounded to float32,
        then a ``d``-term dot product); the second product errs by at most
        ``||X'||_2 ||dc||_2 e_a + (gamma_{B+8} + gamma^64_{n/B}) R ||dc * a^||_1`` (the
        vector ``(sum_i |x_ij| |v_i|)_j`` has 2-norm ``<= R ||v||_1``); the float64 ``Hf s``
        by at most ``16 (d + r + 2) u_64 sqrt(d) (gamma ||X||_2^2 + lam n_f) ||s||`` (``r`` rows
        removed since the refresh). All of this goes into ``err``; ``||a||_2``, ``||a||_4``,
        ``||a||_inf`` are replaced by upper bounds (``+ sqrt(n') e_a`` etc.), and the new
        margins ``Z + a^`` carry ``e_a`` more error (``e_a`` returned, summed into ``zerr``).
        """
        lam = self._l2
        K = self._K
        if zerr is None:
            zerr = np.zeros(K)
        e_a = np.zeros(K)
        hs_err = np.zeros(K)
        dc = dc_norm = None
        mixed = cache is not None and self._X32 is not None and X is self._X
        if mixed:
            n0, d = X.shape
            # curvatures and their drift, zero outside the mask; in place, as these (n, K)
            # element-wise passes cost as much as the float32 pass itself
            curvature = expit(Z)
            curvature *= 1.0 - curvature
            dc = curvature - cache["cf"]
            _apply_mask(mask, curvature, dc)
            A32, HS = fused_pass(
                self._X32, s, dc, workers=thread_pool(self.n_jobs), parts=self.n_jobs
            )
            A_full = A32.astype(np.float64)
            A = _apply_mask(mask, A_full.copy())
            s_norm = np.linalg.norm(s, axis=1)
            e_a = _gamma(d + 3) * self._R * s_norm
            dc_norm = np.sqrt(np.einsum("ik,ik->k", dc, dc))
            # ||dc * a^||_1 <= ||dc||_2 ||a^||_2 (Cauchy-Schwarz)
            weighted = dc_norm * np.sqrt(np.einsum("ik,ik->k", A, A))
            block_gamma = _gamma(BLOCK + 8) + _gamma(n0 // BLOCK + 2 + self.n_jobs, _UNIT)
            hs_err = xnorm * dc_norm * e_a + block_gamma * self._R * weighted
            for k in range(K):
                if not np.any(s[k]):
                    continue
                apply, removed = self._cached_operator(X, mask, counts, cache, k)
                HS[k] += apply(s[k])
                h_norm = math.sqrt(d) * (GAMMA * xnorm[k] ** 2 + lam * cache["nf"][k])
                hs_err[k] += 16.0 * (d + removed + 2) * _UNIT * h_norm * s_norm[k]
                # forming H~ = sum cf_i x_i x_i^T erred by <= gamma_n || |X|^T C |X| ||_2
                # <= gamma_n max(cf) ||X||_F^2 <= gamma_n R^2 n / 4 (any summation order;
                # doubled for the rows folds and partial refreshes add or take out)
                hs_err[k] += _gamma(2 * n0 + 2, _UNIT) * 0.25 * self._R**2 * n0 * s_norm[k]
        else:
            # float64 products: |fl(x_i.s) - x_i.s| <= gamma_{q+2} R ||s|| (q terms per row)
            # and fl(X^T (c * a)) errs by <= gamma_{n+2} R ||c * a||_1 plus the propagated
            # ||X'||_2 ||c||_inf sqrt(n') e_a (Higham, any summation order)
            curvature = self._curvature(Z, mask)
            if sp.issparse(X) or isinstance(X, BlockedRows):
                A_full = np.asarray(X @ s.T)
                HS = np.asarray(X.T @ (curvature * A_full)).T
                per_row = int(np.diff(X.indptr).max(initial=0)) if sp.issparse(X) else X.shape[1]
            else:
                A_full, HS = fused_pass(X, s, curvature)
                per_row = X.shape[1]
            HS += lam * counts[:, None] * s
            A = A_full * mask
            s_norm = np.linalg.norm(s, axis=1)
            e_a = _gamma(per_row + 2, _UNIT) * self._R * s_norm
            hs_err = (
                _gamma(X.shape[0] + 2, _UNIT) * self._R * np.abs(curvature * A).sum(axis=0)
                + xnorm * GAMMA * np.sqrt(counts) * e_a
                + 2 * _UNIT * lam * counts * s_norm
            )
        r2 = HS - Delta
        root_n = np.sqrt(counts.astype(np.float64))
        squares = A * A
        a2 = np.sqrt(squares.sum(axis=0)) + root_n * e_a  # upper bounds on the exact norms
        a_inf = (np.max(np.abs(A), axis=0) if A.size else np.zeros(K)) + e_a
        a4 = np.einsum("ik,ik->k", squares, squares) ** 0.25 + np.sqrt(root_n) * e_a
        lag = GAMMA * self._R * p_norm * a2  # |c~_i - c_i| <= gamma R ||p||
        if p_image is not None:  # or ||c~ - c||_2 <= gamma ||X' p||_2, times ||a||_inf
            lag = np.minimum(lag, GAMMA * p_image * a_inf)
        err = xnorm * (lag + GAMMA * zerr * a2) + hs_err
        T2 = np.linalg.norm(r2, axis=1) + err
        T1 = 0.5 * GAMMA * xnorm * a4**2
        return {
            "A_full": A_full,
            "A": A,
            "a2": a2,
            "a4": a4,
            "T1": T1,
            "T2": T2,
            "r2": r2,
            "err": err,
            "curvature": curvature,
            "e_a": e_a,
            "zerr": zerr,
            "dc": dc,
            "dc_norm": dc_norm,
        }

    def _image_norm(self, V: np.ndarray, xnorm: np.ndarray) -> np.ndarray:
        """Upper bounds on ``||X' v_k||_2`` per class: ``sqrt(v^T G v)`` or ``||X'||_2 ||v||``."""
        plain = xnorm * np.linalg.norm(V, axis=1)
        if self._gram is None or not np.any(plain):
            return plain
        quad = np.einsum("kd,kd->k", V @ self._gram, V)
        # rounding of v^T G v is at most about d u ||G||_2 ||v||^2 = d u (||X||_2 ||v||)^2
        slack = 4.0 * (V.shape[1] + 2) * _UNIT * plain**2
        return np.minimum(plain, np.sqrt(np.maximum(quad, 0.0) + slack))

    def _deferred_correction(
        self,
        X: Any,
        mask: np.ndarray,
        counts: np.ndarray,
        m: dict[str, Any],
        classes: list[int],
        xnorm: np.ndarray,
        p_norm: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One correction ``s <- s - u``, ``Hf u = r2``, bounded without another pass.

        With ``r2 ~= H'(w) s - Delta`` (exact up to the ``err`` of :meth:`_measure`), the new
        correction term is ``H'(w)(s - u) - Delta = (r2 - Hf u) + err - (H'(w) - Hf) u`` and
        ``||(H'(w) - Hf) u|| = ||X'^T ((c - cf) * X' u)|| <= ||X'||_2 ||c - cf||_2 R ||u||``
        (``|x_i . u| <= R ||u||``), or ``<= ||X'||_2 ||c - cf||_inf ||X' u||_2``, whichever
        is smaller (``c - cf`` from the lagging curvatures plus the lag, deferred and
        float32); ``||r2 - Hf u||``
        is computed exactly. The curvature term uses ``||X'(s - u)||_4 <= ||X' s||_4 +
        ||X' u||_2``. ``||X' u||_2 <= sqrt(u^T G u)`` with the Gram matrix ``G`` of the rows
        at build time. ``X' u`` joins the deferred correction of the margins, so this costs
        ``O(d^2 + n)``.
        """
        rhs = np.zeros_like(m["r2"])
        rhs[classes] = m["r2"][classes]
        # what the solve leaves is accounted exactly (``left``): modest accuracy suffices
        u, iterations, left = self._cached_solve(
            X, mask, counts, rhs, classes, self._cache, rtol=1e-3
        )
        if m["dc"] is not None and m["cache"] is self._cache:
            shift, shift_norm = m["dc"], m["dc_norm"]  # the pass's own c - cf
        else:
            shift = m["curvature"] - self._cache["cf"] * mask  # lagging c minus cf
            shift_norm = np.linalg.norm(shift, axis=0)
        root_n = np.sqrt(counts.astype(np.float64))
        drift_2 = shift_norm + GAMMA * (m["p_image"] + root_n * m["zerr"])
        drift_inf = np.max(np.abs(shift), axis=0) + GAMMA * (self._R * p_norm + m["zerr"])
        u_norm = np.linalg.norm(u, axis=1)
        u_image = self._image_norm(u, xnorm)  # >= ||X' u||_2 >= ||X' u||_4
        term = np.minimum(drift_2 * self._R * u_norm, drift_inf * u_image)
        T2 = left + m["err"] + xnorm * term
        T1 = 0.5 * GAMMA * xnorm * (m["a4"] + u_image) ** 2
        return u, T1, T2, iterations

    def _newton(
        self,
        X: Any,
        Z: np.ndarray,
        S: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        Delta: np.ndarray,
        delta_max: np.ndarray,
        xnorm: np.ndarray,
        *,
        pending: np.ndarray | None = None,
        zerr: np.ndarray | None = None,
        refresh_all: bool = False,
    ) -> dict[str, Any]:
        """One (approximate) Newton step on the edited data with its rigorous bound.

        ``X, mask, counts`` describe ``D'``; ``Z - X pending^T`` are the margins at the
        current weights ``self._W`` up to ``zerr`` per row (float32 rounding, see
        :meth:`_measure`); ``Delta = -grad L_b(w; D')`` assuming ``grad L_b(w; D) = 0``.
        ``refresh_all`` rebuilds the amortised cache for every class first (edits).
        """
        K = self._K
        lam = self._l2
        touched = np.flatnonzero(np.any(Delta != 0, axis=1))
        cache = None
        refreshed = 0
        full_refreshes = 0
        iterations = 0
        corrected = 0
        deferred = None
        if pending is None:
            pending = np.zeros_like(Delta)
        if zerr is None:
            zerr = np.zeros(K)

        def settle() -> None:  # exact margins at the current weights, O(n d) in float64
            nonlocal Z, pending, zerr
            if np.any(pending) or np.any(zerr):
                Z = np.asarray(X @ self._W.T)
                pending = np.zeros_like(pending)
                zerr = np.zeros(K)

        mode = self._solver_mode()
        if mode == "cg":  # the lagging margins' error is accounted in the measured T2
            s, iterations = self._cg_steps(X, Z, mask, counts, Delta, touched)
        elif mode == "exact" or refresh_all:
            settle()
            curvature = self._curvature(Z, mask)
            s = np.zeros_like(Delta)
            if self.hessian == "exact":
                for k in touched:
                    H = self._hessian(X, curvature[:, k], counts[k])
                    factor = scipy.linalg.cho_factor(H, check_finite=False)
                    s[k] = scipy.linalg.cho_solve(factor, Delta[k], check_finite=False)
            else:
                cache = self._fresh_cache(X, Z, mask, counts, range(K), self._cache)
                refreshed = K
                for k in touched:
                    s[k] = scipy.linalg.cho_solve(cache["F"][k], Delta[k], check_finite=False)
        else:
            folded = self._fold(X, mask)
            if folded is not None:  # becomes the cache (restored by forget() on failure)
                cache = self._cache = folded
            # solve error lands in T2, which is measured and, if large, corrected
            rtol = 1e-6 if self.refine >= 1 else 1e-10
            s, iterations, _ = self._cached_solve(
                X, mask, counts, Delta, touched, self._cache, rtol=rtol
            )

        def measure() -> dict[str, Any]:
            p_norm = np.linalg.norm(pending, axis=1)
            p_image = self._image_norm(pending, xnorm)
            current = None
            if mode == "amortized":
                current = self._cache if cache is None else cache
            out = self._measure(
                X, Z, p_norm, S, mask, counts, s, Delta, xnorm, p_image, zerr=zerr, cache=current
            )
            out["p_image"] = p_image
            out["cache"] = current
            return out

        m = measure()
        tiny = 1e-12 * (1.0 + np.linalg.norm(Delta, axis=1))
        # steps whose curvature term is negligible against the budget need no refresh: the
        # correction term may then reach refresh * 1e-5 * budget (<= 0.5% of the budget per
        # 1000 steps at the default refresh)
        floor = _BUDGET_FLOOR * self.budget_total

        def is_stale(k: int) -> bool:
            return bool(m["T2"][k] > self.refresh * max(m["T1"][k], floor) + tiny[k])

        if mode == "cg":  # exact corrections s <- s - H^-1 (H s - Delta), one pass each
            for _ in range(max(int(self.refine), 1)):
                stale = [k for k in touched if is_stale(k)]
                if not stale:
                    break
                rhs = np.zeros_like(m["r2"])
                rhs[stale] = m["r2"][stale]
                correction, more = self._cg_steps(X, Z, mask, counts, rhs, stale)
                iterations += more
                s = s - correction
                m = measure()
        if mode == "amortized" and not refresh_all:
            stale = [k for k in touched if is_stale(k)]
            if stale and self.refine >= 1:
                p_norm = np.linalg.norm(pending, axis=1)
                u, T1, T2, more = self._deferred_correction(
                    X, mask, counts, m, stale, xnorm, p_norm
                )
                iterations += more
                accepted = [k for k in stale if T2[k] <= self.refresh * max(T1[k], floor) + tiny[k]]
                corrected = len(accepted)
                if accepted:
                    deferred = np.zeros_like(s)
                    deferred[accepted] = u[accepted]
                    s = s - deferred
                    m["T1"][accepted], m["T2"][accepted] = T1[accepted], T2[accepted]
                stale = [k for k in stale if k not in accepted]
            if stale:  # measured corrections and refreshes need the exact margins
                settle()
                if deferred is not None:
                    m = measure()  # X s for the whole corrected s
                    deferred = None
                    stale = [k for k in touched if is_stale(k)]
            for _ in range(max(int(self.refine) - 1, 0)):  # exact, measured corrections
                if not stale:
                    break
                correction = np.zeros_like(s)
                for k in stale:
                    correction[k] = self._cache["Hinv32"][k] @ m["r2"][k].astype(np.float32)
                s = s - correction
                m = measure()
                stale = [k for k in touched if is_stale(k)]
            if stale:  # first a partial refresh (rows that drifted most), then a full one
                partial = self._partial_refresh(X, Z, mask, counts, stale)
                if partial is not None:
                    cache = partial
                    refreshed += len(stale)
                    s_new, more, _ = self._cached_solve(X, mask, counts, Delta, stale, partial)
                    iterations += more
                    s[stale] = s_new[stale]
                    m = measure()
                    stale = [k for k in stale if is_stale(k)]
            if stale:
                cache = self._fresh_cache(
                    X, Z, mask, counts, stale, self._cache if cache is None else cache
                )
                refreshed += len(stale)
                full_refreshes = len(stale)
                for k in stale:
                    s[k] = scipy.linalg.cho_solve(cache["F"][k], Delta[k], check_finite=False)
                m = measure()
        T1, T2 = m["T1"], m["T2"]
        s_norm = np.linalg.norm(s, axis=1)
        if self.bound == "data":
            per_class = T1 + T2
        else:
            s_max = np.maximum(s_norm, delta_max / (lam * np.maximum(counts, 1)))
            per_class = GAMMA * self._R**3 * counts * s_max**2 + T2
        untouched = np.setdiff1d(np.arange(K), touched)
        per_class[untouched] = 0.0
        # the deferred margin correction carried to the next step: settle it once its lag
        # term would no longer be small against this step's curvature term
        new_pending = pending if deferred is None else pending + deferred
        Z_new = Z + m["A_full"]
        new_zerr = zerr + m["e_a"]
        lag_next = (
            xnorm * GAMMA * (self._R * np.linalg.norm(new_pending, axis=1) + new_zerr) * m["a2"]
        )
        if np.any(lag_next > 0.05 * T1 + tiny):
            Z_new = np.asarray(X @ (self._W + s).T)  # exact margins at w + s
            new_pending = np.zeros_like(new_pending)
            new_zerr = np.zeros(K)
        return {
            "s": s,
            "Z_new": Z_new,  # margins at w + s, up to the deferred X pending^T
            "pending": new_pending,
            "zerr": new_zerr,
            "bound": float(np.sqrt(np.sum(per_class**2))),
            "correction": float(np.sqrt(np.sum(T2**2))),
            "bound_cor1": float(np.sqrt(np.sum((GAMMA * xnorm * s_norm * m["a2"]) ** 2))),
            "cache": cache,
            "refreshed": refreshed,
            "iterations": iterations,
            "full_refreshes": full_refreshes,
            "corrections": corrected if deferred is not None else 0,
        }

    def _solver_mode(self) -> str:
        """``hessian``, with ``"amortized"`` read as ``"cg"`` above ``_GRAM_LIMIT`` columns."""
        if self.hessian == "amortized" and getattr(self, "_D", 0) > _GRAM_LIMIT:
            return "cg"
        return self.hessian

    def _cg_steps(
        self,
        X: Any,
        Z: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        rhs: np.ndarray,
        classes: Any,
    ) -> tuple[np.ndarray, int]:
        """``H'(w)^-1 rhs_k`` per class by Jacobi-preconditioned CG, matrix-free, ``O(nnz)``
        per iteration. Its accuracy matters for the budget, not for rigour: the caller
        measures ``T2 = ||H'(w) s - Delta||`` exactly afterwards.

        On columns no row uses (common for hashed features) the Hessian is ``lam n' I``:
        there the solution is ``rhs / (lam n')`` exactly and CG runs on the other columns.
        """
        curvature = self._curvature(Z, mask)
        if isinstance(X, BlockedRows):
            diagonal = X.rmatmul(curvature, transform=np.square).T
        else:
            squares = X.multiply(X).tocsr() if sp.issparse(X) else X * X
            diagonal = np.asarray(squares.T @ curvature).T
        used = np.flatnonzero(np.any(diagonal > 0, axis=0))
        diagonal = diagonal + self._l2 * counts[:, None]
        out = rhs / (self._l2 * np.maximum(counts, 1))[:, None]
        full = used.size == X.shape[1]
        iterations = 0
        for k in classes:
            weights = curvature[:, k]
            shift = self._l2 * counts[k]

            def hvp(v: np.ndarray, weights: np.ndarray = weights, shift: float = shift):
                if full:
                    return np.asarray(X.T @ (weights * np.asarray(X @ v))).ravel() + shift * v
                wide = np.zeros(X.shape[1])
                wide[used] = v
                product = np.asarray(X.T @ (weights * np.asarray(X @ wide))).ravel()
                return product[used] + shift * v

            inverse = 1.0 / diagonal[k, used]
            result = cg_solve(
                hvp,
                rhs[k, used],
                rtol=_CG_RTOL,
                maxiter=_CG_MAXITER,
                preconditioner=lambda v, inverse=inverse: inverse * v,
            )
            out[k, used] = result.x
            iterations += result.iterations
        for k in np.setdiff1d(np.arange(rhs.shape[0]), np.asarray(list(classes), dtype=int)):
            out[k] = 0.0
        return out, iterations

    # -- forget ----------------------------------------------------------------------------
    def _validate_change(self, change: Change) -> None:
        if change.is_removal or change.is_empty:
            return
        if self.subsample is not None:
            raise RequestError(
                f"{type(change.request).__name__} requests are not supported with negative "
                "subsampling (subsample set); only removals are"
            )
        norms = _row_norms(change.after.X)
        if norms.size and norms.max() > 1 + _ROW_NORM_TOL:
            bad = change.after.ids[norms > 1 + _ROW_NORM_TOL]
            raise RequestError(
                f"replacement rows must have Euclidean norm <= 1 for certified removal; ids "
                f"{bad[:10].tolist()} have norms up to {norms.max():.6g}"
            )

    def _certificate(self) -> Certificate | None:
        if self.sigma == 0:
            return None
        return Certificate(
            epsilon=float(self.epsilon),
            delta=float(self.delta),
            sigma=float(self.sigma),
            residual_bound=float(self.budget_used_),
            budget_used=float(self.budget_used_),
            budget_total=float(self.budget_total),
        )

    def _retrain(self, data: Dataset) -> None:
        self.model_, member = self._train_fresh(data)
        self._build(data, member)
        self.budget_used_ = self._initial_residual
        if self.budget_used_ > self.budget_total:
            raise RuntimeError(
                f"retraining left a gradient residual {self.budget_used_:.3g} above the budget "
                f"{self.budget_total:.3g}; no certificate can be given (increase sigma or "
                "epsilon, or tighten the model's tol)"
            )

    def _forget(self, change: Change) -> Outcome:
        self._W = self.model_.coef_.copy()
        diagnostics = {
            "steps": 0.0,
            "step_bound": 0.0,
            "correction": 0.0,
            "bound_cor1": 0.0,
            "refreshes": 0.0,
            "full_refreshes": 0.0,
            "corrections": 0.0,
            "solver_iterations": 0.0,
        }
        if change.is_removal:
            positions = self._base.positions(change.ids)
            steps = self._removal_steps(positions)
        else:
            steps = iter([self._edit_step(change)])
        retrained = False
        for step, commit in steps:
            over = not np.isfinite(step["bound"]) or (
                self.budget_used_ + step["bound"] > self.budget_total
            )
            if self.sigma > 0 and over:
                self._retrain(change.result)
                retrained = True
                break
            commit(step)
            self.budget_used_ += step["bound"]
            diagnostics["steps"] += 1
            diagnostics["step_bound"] += step["bound"]
            diagnostics["correction"] += step["correction"]
            diagnostics["bound_cor1"] += step["bound_cor1"]
            diagnostics["refreshes"] += step["refreshed"]
            diagnostics["solver_iterations"] += step["iterations"]
            diagnostics["full_refreshes"] += step["full_refreshes"]
            diagnostics["corrections"] += step["corrections"]
        if not retrained:
            self.model_.theta = self._W.ravel()
        if self.verify:  # safety check, O(n d): the exact residual must be <= the bound
            self._flush()
            residual, allowance = self._residual(
                self._X, self._Z, self._mask(), self.model_.coef_, self._counts
            )
            if residual > self.budget_used_ + allowance:
                raise RuntimeError(  # would be a bug: the bounds are proven upper bounds
                    f"internal error: gradient residual {residual:.6g} exceeds the "
                    f"accumulated bound {self.budget_used_:.6g}"
                )
            diagnostics["gradient_residual"] = residual
        diagnostics["budget_left"] = self.budget_left_
        return Outcome(
            retrained=retrained,
            certificate=self._certificate(),
            diagnostics=diagnostics,
            exact=False,
        )

    def _removal_steps(self, positions: np.ndarray) -> Iterator[tuple[dict[str, Any], Any]]:
        """Newton steps (step, commit) for the records of one removal request (``batch``).

        ``"auto"`` computes two candidates from the current weights, the joint step and the
        step for the first record alone (two passes), and takes the joint step when it
        costs no more budget than ``m`` times the single step (records whose gradients
        cancel, e.g. of different classes, make the joint step cheap) or when the time limit
        does not allow more steps; otherwise it continues with as many steps as the time
        limit affords, sized from the measured time per step.
        """
        mode = {True: "joint", False: "sequential"}.get(self.batch, self.batch)
        if mode == "joint" or positions.size == 1:
            yield self._removal_step(positions)
            return
        if mode == "sequential":
            for i in range(positions.size):
                yield self._removal_step(positions[i : i + 1])
            return
        start = _clock()
        joint = self._removal_step(positions)
        first = self._removal_step(positions[:1])
        per_step = (_clock() - start) / 2
        limit = math.inf if self.time_limit is None else self.time_limit
        affordable = (limit - 2 * per_step) / max(per_step, 1e-9)
        if affordable < 1 or positions.size * first[0]["bound"] >= joint[0]["bound"]:
            yield joint
            return
        yield first
        done, taken = 1, 0
        while done < positions.size:
            left = positions.size - done
            size = 1
            if self.time_limit is not None:
                elapsed = _clock() - start
                affordable = int((limit - elapsed) // (elapsed / (taken + 2)))
                size = left if affordable <= 1 else -(-left // min(affordable, left))
            yield self._removal_step(positions[done : done + size])
            done += size
            taken += 1

    def _removal_step(self, positions: np.ndarray) -> tuple[dict[str, Any], Any]:
        W = self._W
        mask = self._mask()
        removed = np.zeros_like(mask)
        removed[positions] = mask[positions]
        m = removed.sum(axis=0)
        new_mask = mask & ~removed
        counts = self._counts - m
        X_removed = _rows(self._X, positions)
        Z_removed = np.asarray(X_removed @ W.T)  # exact margins, O(m d)
        slopes = self._loss_slope(Z_removed, self._S[positions]) * removed[positions]
        Delta = np.asarray(X_removed.T @ slopes).T
        Delta = Delta + self._l2 * m[:, None] * W
        delta_max = m * (self._l2 * np.linalg.norm(W, axis=1) + self._R)
        step = self._newton(
            self._X,
            self._Z,
            self._S,
            new_mask,
            counts,
            Delta,
            delta_max,
            self._xnorm,
            pending=self._pending,
            zerr=self._zerr,
        )

        def commit(step: dict[str, Any]) -> None:
            active = self._active.copy()
            active[positions] = False
            self._active = active
            self._counts = counts
            self._take_step(step)

        return step, commit

    def _take_step(self, step: dict[str, Any]) -> None:
        """Move to ``w + s`` with the margins, lags and cache that ``_newton`` left."""
        self._W = self._W + step["s"]
        self._Z = step["Z_new"]
        self._pending = step["pending"]
        self._zerr = step["zerr"]
        if step["cache"] is not None:
            self._cache = step["cache"]
        self._refreshes += step["refreshed"]

    def _edit_step(self, change: Change) -> tuple[dict[str, Any], Any]:
        """One step for Relabel / ReplaceFeatures / Replace (``Delta = -G``)."""
        self._flush()
        self._compact()
        W = self._W
        old = self._base
        positions = old.positions(change.ids)
        result = change.result
        X_new = self.model_.design_matrix(result.X)
        X_new = _dense64(X_new)
        X32_new = _float32_shadow(X_new)
        S_new = self._signs(result.y, self._K)
        rows_old = _rows(self._X, positions)
        rows_new = _rows(X_new, positions)
        Z_rows_new = np.asarray(rows_new @ W.T)
        Delta = (
            np.asarray(rows_old.T @ self._loss_slope(self._Z[positions], self._S[positions])).T
            - np.asarray(rows_new.T @ self._loss_slope(Z_rows_new, S_new[positions])).T
        )
        Z = self._Z.copy()
        Z[positions] = Z_rows_new
        features_changed = (
            (rows_old != rows_new).nnz > 0
            if sp.issparse(rows_old)
            else not np.array_equal(rows_old, rows_new)
        )
        xnorm = self._xnorm
        R = self._R
        gram = self._gram
        if features_changed:
            xnorm = np.sqrt(xnorm**2 + _frobenius_sq(rows_new)) * (1 + 1e-12)
            R = max(R, float(_row_norms(rows_new).max()))
            if gram is not None:  # X'^T X' <= G + X~^T X~ (Loewner order)
                extra = rows_new.T @ rows_new
                gram = gram + (np.asarray(extra.todense()) if sp.issparse(extra) else extra)
        delta_max = np.full(self._K, 2.0 * len(positions) * R)
        step = self._newton(
            X_new, Z, S_new, self._mask(), self._counts, Delta, delta_max, xnorm, refresh_all=True
        )

        def commit(step: dict[str, Any]) -> None:
            self._X, self._S, self._base = X_new, S_new, result
            self._X32 = X32_new
            self._xnorm, self._R, self._gram = xnorm, R, gram
            self._take_step(step)

        return step, commit

    def _flush(self) -> None:
        """Exact margins at ``self._W`` (float64, one ``O(n d)`` product) if they lag."""
        if np.any(self._pending) or np.any(self._zerr):
            self._Z = np.asarray(self._X @ self._W.T)
            self._pending = np.zeros_like(self._pending)
            self._zerr = np.zeros(self._K)

    def _compact(self) -> None:
        """Drop rows removed so far from the caches, so they align with ``train_``."""
        if self._active.all():
            return
        keep = self._active
        if isinstance(self._X, BlockedRows):
            self._X = self._X.take_rows(keep)
            self._X32 = _float32_shadow(self._X)
        else:
            self._X = self._X[keep]
            if self._X32 is not None:
                self._X32 = self._X32[keep]
        self._Z = self._Z[keep]
        self._S = self._S[keep]
        self._member = self._member[keep]
        self._active = np.ones(int(keep.sum()), dtype=bool)
        self._base = self.train_
        self._cache = None  # rebuilt by the edit step (rows no longer align)

    # -- exact residual (public) ---------------------------------------------------------
    def gradient_residual(self) -> float:
        """Exact ``||grad L_b(w; D)||`` of the perturbed objective this unlearner certifies.

        Stacked over classes; with subsampling each class's objective is over its own
        subset ``S_k``. Always ``<= budget_used_`` (that is what the certificate claims).
        """
        self._check_fitted()
        W = self.model_.coef_
        Z = np.asarray(self._X @ W.T)
        return self._residual(self._X, Z, self._mask(), W, self._counts)[0]

    def class_members(self) -> np.ndarray:
        """Boolean (n, K) matrix: which records of ``train_`` each class problem trains on."""
        self._check_fitted()
        return self._member[self._active].copy()

    # -- failure safety and persistence ------------------------------------------------
    _STATE_ATTRS = (
        "_X",
        "_X32",
        "_zerr",
        "_Z",
        "_S",
        "_base",
        "_active",
        "_member",
        "_counts",
        "_xnorm",
        "_R",
        "_noise",
        "_cache",
        "_pending",
        "_gram",
        "_refreshes",
        "budget_used_",
        "_initial_residual",
        "_K",
        "_D",
        "_l2",
    )

    def _snapshot(self) -> Any:
        state = {name: getattr(self, name) for name in self._STATE_ATTRS}
        state["rng"] = self._rng.bit_generator.state
        return state

    def _restore(self, state: Any) -> None:
        for name in self._STATE_ATTRS:
            setattr(self, name, state[name])
        self._rng.bit_generator.state = state["rng"]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "budget_used": float(self.budget_used_),
            "rng": self._rng.bit_generator.state,
            "xnorm": [float(v) for v in self._xnorm],  # still valid upper bounds; keep them
            "row_norm": float(self._R),
        }
        arrays = {}
        if self.subsample is not None:
            arrays["member"] = self.class_members()
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore and re-derive: nothing the certificate rests on is taken on trust.

        Rows must still have norm <= 1; the spent budget must be a finite number >= the
        residual bound measured now on the saved model and data (it only ever grows) and
        within the total; saved spectral bounds may only loosen the rebuilt ones (max).
        The last certificate in the history must match the options and the spent budget.
        """
        try:
            self._check_data(self.train_, self.model_)
        except ValueError as error:
            raise StateError("train", str(error)) from None
        self._rng = np.random.default_rng(self.seed)
        try:
            self._rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as error:
            raise StateError("rng", f"not a generator state ({error})") from None
        member = arrays.get("member")
        if self.subsample is not None and (
            member is None or member.dtype != bool or member.shape[0] != len(self.train_)
        ):
            raise StateError("member", "subsampling masks missing or of the wrong shape")
        self._build(self.train_, member)
        if len(np.atleast_1d(meta.get("xnorm", []))) != self._K:
            raise StateError("xnorm", f"expected {self._K} values, got {meta.get('xnorm')!r}")
        for field in ("budget_used", "row_norm"):
            value = meta.get(field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise StateError(field, f"must be a finite number >= 0, got {value!r}")
        xnorm = np.asarray(meta["xnorm"], dtype=np.float64)
        if not np.all(np.isfinite(xnorm)) or np.any(xnorm < 0):
            raise StateError("xnorm", f"must be finite numbers >= 0, got {meta['xnorm']!r}")
        used = float(meta["budget_used"])
        residual, allowance = self._measured
        if residual > used + allowance:  # the same test as verify=True after each request
            raise StateError(
                "budget_used",
                f"{used:.6g} is below the gradient residual {residual:.6g} measured on the "
                "saved model: the spent budget cannot have been this small",
            )
        if self.sigma > 0 and used > self.budget_total * (1 + 1e-12):
            raise StateError(
                "budget_used",
                f"{used:.6g} exceeds the budget {self.budget_total:.6g}: no valid certificate",
            )
        self._xnorm = np.maximum(self._xnorm, xnorm)
        self._R = max(self._R, float(meta["row_norm"]))
        self._check_history(used)
        self.budget_used_ = max(used, self._initial_residual)

    def _check_history(self, used: float) -> None:
        certificates = [(i, r.certificate) for i, r in enumerate(self.history_) if r.certificate]
        expected = {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sigma": self.sigma,
            "budget_total": self.budget_total,
        }
        for index, certificate in certificates:
            for name, value in expected.items():
                if not math.isclose(getattr(certificate, name), float(value), rel_tol=1e-9):
                    raise StateError(
                        f"history[{index}].certificate.{name}",
                        f"{getattr(certificate, name)!r} does not match the options ({value!r})",
                    )
            for name in ("budget_used", "residual_bound"):
                value = getattr(certificate, name)
                if not (
                    math.isfinite(value) and 0 <= value <= certificate.budget_total * (1 + 1e-12)
                ):
                    raise StateError(
                        f"history[{index}].certificate.{name}",
                        f"{value!r} is not within [0, budget_total]",
                    )
        if certificates:
            index, last = certificates[-1]
            if not math.isclose(last.budget_used, used, rel_tol=1e-9, abs_tol=1e-12):
                raise StateError(
                    f"history[{index}].certificate.budget_used",
                    f"{last.budget_used!r} differs from the spent budget {used!r}",
                )
