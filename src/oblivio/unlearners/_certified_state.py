"""Certified removal's cached state: training a fresh draw, building the caches, the exact
residual, snapshots for failure safety and saving / loading (re-derived, never trusted).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.stats

from oblivio.data import Dataset
from oblivio.linalg.spectral import spectral_norm_bound
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners._certified_numerics import (
    _GRAM_LIMIT,
    _UNIT,
    _dense64,
    _float32_shadow,
    _loss_slope,
    _norm_bound,
    _row_norms,
    _signs,
    _weighted_gram,
)
from oblivio.unlearners._passes import logistic_pass
from oblivio.unlearners.base import StateError

_COARSE_ITER = 25  # L-BFGS iterations before the chord-Newton polish of a certified fit
_CHORD_STEPS = 40


class StateMixin:
    """Training, caches and persistence (part of :class:`~oblivio.unlearners.CertifiedRemoval`)."""

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
        X = model.design_matrix(data.X)
        X = _dense64(X)
        self._K, self._l2 = K, float(model.l2)
        S = _signs(data.y, K)
        X32 = _float32_shadow(X)
        gram = _weighted_gram(X, None) if X32 is not None else None
        self._fit_shadow = (X, X32, gram)  # reused by _build
        if X32 is not None:
            W0, coarse_iter = self._coarse_fit(X32, S, model.noise, (K, X.shape[1]), gram)
        else:
            coarse = model.clone()
            coarse.noise = model.noise
            coarse.tol = math.inf  # only the L-BFGS phase
            coarse.max_iter = _COARSE_ITER
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coarse.fit(data)
            W0, coarse_iter = coarse.coef_.copy(), int(getattr(coarse, "n_iter_", 0))
        mask = np.ones((len(data), K), dtype=bool)
        counts = mask.sum(axis=0)
        cache = self._fresh_cache(X, np.asarray(X @ W0.T), mask, counts, range(K), None)
        noise = 0.0 if model.noise is None else np.asarray(model.noise).reshape(W0.shape)
        W = W0
        for chord_steps in range(_CHORD_STEPS):  # noqa: B007 (counted into n_iter_)
            if X32 is None:
                grad = np.asarray(X.T @ _loss_slope(np.asarray(X @ W.T), S)).T
            else:  # dense float64: one blocked read of X for both products
                grad = logistic_pass(X, W, S)[1]
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
        model.n_iter_ = coarse_iter + chord_steps
        return W0, cache

    def _coarse_fit(
        self,
        X32: np.ndarray,
        S: np.ndarray,
        noise: Any,
        shape: tuple[int, int],
        gram: np.ndarray,
    ) -> tuple[np.ndarray, int]:
        """``_COARSE_ITER`` preconditioned L-BFGS iterations on the stacked objective ``L_b``.

        Preconditioner: ``P = X^T X / 4 + lam n I``, the Hessian of every class at ``w = 0``
        and an upper bound on it everywhere (``l'' <= 1/4``; Böhning's bound). L-BFGS runs
        on ``v = L^T w`` (``P = L L^T``), where the Hessian ``L^-1 H L^-T`` has its spectrum
        in ``(0, 1]``: about half the iterations of plain L-BFGS for the same gradient norm
        on Fashion-MNIST. ``X^T X`` is the Gram matrix the certificate's norm bounds need
        anyway. Each evaluation is one blocked pass over the float32 shadow of ``X``
        (:func:`~oblivio.unlearners._passes.logistic_pass`): half the memory traffic of
        float64 and one read of ``X`` for both products. Only the starting point of the
        float64 chord-Newton polish comes from here; the optimum's accuracy and the
        measured residual ``r_0`` do not depend on it. Returns ``(W0, iterations)``.
        """
        n = X32.shape[0]
        lam = self._l2
        flat_noise = None if noise is None else np.asarray(noise, dtype=np.float64).ravel()
        P = 0.25 * gram
        P[np.diag_indices_from(P)] += lam * n
        L = scipy.linalg.cholesky(P, lower=True, check_finite=False)

        def weights(v: np.ndarray) -> np.ndarray:  # w = L^-T v, one row per class
            V = v.reshape(shape).T
            return scipy.linalg.solve_triangular(L, V, lower=True, trans="T").T

        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            W = weights(v)
            flat = W.ravel()
            loss, grad = logistic_pass(X32, W, S)
            value = loss + 0.5 * lam * n * float(flat @ flat)
            grad += lam * n * W
            if flat_noise is not None:
                value += float(flat_noise @ flat)
                grad += flat_noise.reshape(shape)
            grad_v = scipy.linalg.solve_triangular(L, grad.T, lower=True).T  # L^-1 grad
            return value / n, grad_v.ravel() / n

        solution = scipy.optimize.minimize(
            objective,
            np.zeros(shape[0] * shape[1]),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": _COARSE_ITER, "gtol": 1e-12, "ftol": 1e-15, "maxcor": 20},
        )
        return weights(solution.x), int(solution.nit)

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
        shadow = getattr(self, "_fit_shadow", None)
        self._fit_shadow = None
        if shadow is None or shadow[0] is not X:
            shadow = (X, _float32_shadow(X), None)
        self._X32 = shadow[1]
        self._zerr = np.zeros(K)  # bound on |Z - exact margins| from float32 updates
        self._base = data
        self._active = np.ones(len(data), dtype=bool)
        self._member = np.ones((len(data), K), dtype=bool) if member is None else member.copy()
        self._S = _signs(data.y, K)
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
            self._gram = shadow[2] if shadow[2] is not None else _weighted_gram(X, None)
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

    def _mask(self) -> np.ndarray:
        return self._member & self._active[:, None]

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
            slopes = _loss_slope(Z, self._S) * mask
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
