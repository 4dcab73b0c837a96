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
``hessian="exact"`` (Hessian built and factorised per step), ``"amortized"`` (cached factor,
exactly computed or bounded ``T2``, mixed-precision pass) and ``"cg"`` (matrix-free) are
described in :mod:`oblivio.unlearners._certified_step`; whichever is used, ``T2`` is computed
exactly or rigorously bounded and ``T1`` bounded, so every certificate is rigorous.

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

import numpy as np
import scipy.linalg
import scipy.stats

from oblivio.data import Change, Dataset, RequestError
from oblivio.models.base import Model
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners._certified_batch import _BATCH_MODES, BatchingMixin
from oblivio.unlearners._certified_numerics import (
    _ROW_NORM_TOL,
    GAMMA,
    _row_norms,
    budget,
    noise_constant,
)
from oblivio.unlearners._certified_state import StateMixin
from oblivio.unlearners._certified_step import NewtonStepMixin
from oblivio.unlearners.base import Certificate, Outcome, Unlearner, register

__all__ = ["GAMMA", "CertifiedRemoval", "budget", "noise_constant"]


@register
class CertifiedRemoval(StateMixin, BatchingMixin, NewtonStepMixin, Unlearner):
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
