"""L2-regularised logistic regression in float64, solved to its exact optimum."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from scipy.special import expit, log_expit, logsumexp, softmax

from oblivio.data import Dataset
from oblivio.data.blocked import BlockedRows, ChunkedRows, needs_blocking
from oblivio.models.base import BaseModel, NotFittedError

_DENSE_NEWTON_LIMIT = 4000  # parameters; above this Newton steps use conjugate gradients


class ConvergenceWarning(UserWarning):
    """The solver stopped above the requested gradient tolerance."""


def _as_numpy(theta: Any) -> np.ndarray:
    if isinstance(theta, torch.Tensor):
        return theta.detach().cpu().numpy().astype(np.float64, copy=False).ravel()
    return np.asarray(theta, dtype=np.float64).ravel()


class LogisticRegression(BaseModel):
    r"""L2-regularised logistic regression with optional loss perturbation.

    Objective on n records (sum convention, Guo et al., ICML 2020, Eq. 2)::

        L_b(theta; D) = sum_i l(theta; x_i, y_i) + l2 * n / 2 * ||theta||^2 + b . theta

    with ``l`` the logistic loss ``log(1 + exp(-s theta.x))`` (``s = ±1``) for binary
    problems; for more classes either one binary problem per class (``"ovr"``, the objective
    is the sum over classes, the Hessian block-diagonal) or the softmax cross-entropy
    (``"multinomial"``). All arithmetic is float64 and ``fit`` solves to a gradient norm
    ``<= tol`` (L-BFGS, then Newton polishing) because certified unlearning assumes the exact
    optimum.

    Parameters
    ----------
    l2 : float
        Per-record L2 strength (> 0). scikit-learn's ``C`` for the same objective is
        ``1 / (l2 * n)``.
    fit_intercept : bool
        Append a constant feature. The intercept is regularised like every other weight,
        which keeps the objective strongly convex (a choice; scikit-learn does not).
    multi_class : {"auto", "ovr", "multinomial"}
        ``"auto"`` is binary for two classes and multinomial otherwise.
    noise : array of shape (n_params,), optional
        The loss-perturbation vector ``b``.
    tol : float
        Target Euclidean norm of the objective's gradient at the solution.
    max_iter : int
        Iteration cap of L-BFGS.

    Attributes
    ----------
    theta : torch.Tensor
        Flat parameters, laid out class-major: ``theta.reshape(K, D)`` gives one weight
        vector per row (K = 1 for binary problems; D = d + fit_intercept).
    """

    def __init__(
        self,
        l2: float = 1e-3,
        fit_intercept: bool = False,
        multi_class: str = "auto",
        noise: Any = None,
        tol: float = 1e-8,
        max_iter: int = 1000,
    ) -> None:
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.multi_class = multi_class
        self.noise = noise
        self.tol = tol
        self.max_iter = max_iter
        self._theta: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._mode: str | None = None
        self._design_cache: tuple[Any, Any] | None = None

    # -- set-up ------------------------------------------------------------------------
    def _l2(self) -> float:
        if self.l2 is None:
            raise ValueError(
                "l2 is None: this model was adopted from scikit-learn without n_samples, so "
                "its objective is unknown; use ob.models.from_sklearn(estimator, "
                "n_samples=len(train)) (l2 = 1 / (C n)) or set model.l2"
            )
        return self.l2

    def _check_params(self) -> None:
        self._l2()
        if not (np.isfinite(self.l2) and self.l2 > 0):
            raise ValueError(f"l2 must be a positive finite number, got {self.l2!r}")
        if self.multi_class not in ("auto", "ovr", "multinomial"):
            raise ValueError(
                f"multi_class must be 'auto', 'ovr' or 'multinomial', got {self.multi_class!r}"
            )
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}")

    def mode(self, n_classes: int) -> str:
        """``"binary"``, ``"ovr"`` or ``"multinomial"`` for a problem with ``n_classes``."""
        if n_classes < 2:
            raise ValueError(f"logistic regression needs at least 2 classes, got {n_classes}")
        if n_classes == 2 and self.multi_class in ("auto", "ovr"):
            return "binary"
        return "multinomial" if self.multi_class in ("auto", "multinomial") else "ovr"

    def design_matrix(self, X: Any) -> np.ndarray | sp.csr_matrix | BlockedRows:
        """Features as float64 (n, D), with a ones column appended when ``fit_intercept``.

        Dense data stored as float32 (or memory-mapped) is not copied: it is wrapped in a
        :class:`~oblivio.data.blocked.BlockedRows`, whose products run in float64 a block of
        rows at a time (the same values, half the memory or out of core).
        """
        if isinstance(X, Dataset):
            X = X.X
        cache = self._design_cache
        if cache is not None and cache[0] is X:
            return cache[1]
        if sp.issparse(X):
            design = sp.csr_matrix(X, dtype=np.float64)
            if self.fit_intercept:
                ones = sp.csr_matrix(np.ones((design.shape[0], 1)))
                design = sp.hstack([design, ones], format="csr")
        elif isinstance(X, ChunkedRows):  # Zarr / Dask: read by blocks, never loaded whole
            design = BlockedRows(X, intercept=self.fit_intercept)
        else:
            design = np.asarray(X)
            design = design.reshape(design.shape[0], -1)
            if needs_blocking(design):
                # float32 or memory-mapped storage: float64 products block by block, no copy
                design = BlockedRows(design, intercept=self.fit_intercept)
            else:
                design = np.asarray(design, dtype=np.float64)
                if self.fit_intercept:
                    design = np.hstack([design, np.ones((design.shape[0], 1))])
        self._design_cache = (X, design)
        return design

    def _layout(self, data: Dataset) -> tuple[str, int, int]:
        mode = self.mode(data.n_classes)
        n_vectors = 1 if mode == "binary" else data.n_classes
        width = data.n_features + int(self.fit_intercept)
        return mode, n_vectors, width

    def _theta_matrix(self, data: Dataset, theta: Any) -> np.ndarray:
        _, n_vectors, width = self._layout(data)
        if theta is None:
            if self._theta is None:
                raise NotFittedError("LogisticRegression is not fitted; call fit() first")
            theta = self._theta
        flat = _as_numpy(theta)
        if flat.size != n_vectors * width:
            raise ValueError(
                f"theta has {flat.size} entries; this data needs {n_vectors} x {width}"
            )
        return flat.reshape(n_vectors, width)

    def _signs(self, data: Dataset, mode: str) -> np.ndarray:
        if mode == "binary":
            return (2.0 * data.y - 1.0)[:, None]
        return np.where(data.y[:, None] == np.arange(data.n_classes)[None, :], 1.0, -1.0)

    # -- objective pieces (numpy) -------------------------------------------------------
    def _loss_grad_np(self, data: Dataset, W: np.ndarray, need_grad: bool = True):
        mode = self.mode(data.n_classes)
        X = self.design_matrix(data)
        Z = np.asarray(X @ W.T)
        if mode == "multinomial":
            log_norm = logsumexp(Z, axis=1)
            loss = float(np.sum(log_norm - Z[np.arange(len(data)), data.y]))
            if not need_grad:
                return loss, None
            residual = np.exp(Z - log_norm[:, None])
            residual[np.arange(len(data)), data.y] -= 1.0
        else:
            S = self._signs(data, mode)
            loss = float(-np.sum(log_expit(S * Z)))
            if not need_grad:
                return loss, None
            residual = -S * expit(-S * Z)
        grad = np.asarray(X.T @ residual).T
        return loss, grad

    def _curvature(self, data: Dataset, W: np.ndarray) -> tuple[str, np.ndarray, Any]:
        mode = self.mode(data.n_classes)
        X = self.design_matrix(data)
        Z = np.asarray(X @ W.T)
        if mode == "multinomial":
            return mode, softmax(Z, axis=1), X
        P = expit(Z)
        return mode, P * (1.0 - P), X

    def _hvp_np(self, data: Dataset, W: np.ndarray, V: np.ndarray, weights=None) -> np.ndarray:
        mode, curvature, X = weights if weights is not None else self._curvature(data, W)
        A = np.asarray(X @ V.T)
        if mode == "multinomial":
            R = curvature * (A - np.sum(curvature * A, axis=1, keepdims=True))
        else:
            R = curvature * A
        return np.asarray(X.T @ R).T + self._l2() * len(data) * V

    def _hessian_np(self, data: Dataset, W: np.ndarray) -> np.ndarray:
        mode, curvature, X = self._curvature(data, W)
        n_vectors, width = W.shape

        def gram(weights: np.ndarray) -> np.ndarray:
            if isinstance(X, BlockedRows):
                return X.weighted_gram(weights)
            if sp.issparse(X):
                return np.asarray((X.T @ X.multiply(weights[:, None])).todense())
            return X.T @ (X * weights[:, None])

        H = np.zeros((n_vectors * width, n_vectors * width))
        for a in range(n_vectors):
            rows = slice(a * width, (a + 1) * width)
            if mode == "multinomial":
                for b in range(a, n_vectors):
                    cols = slice(b * width, (b + 1) * width)
                    weights = -curvature[:, a] * curvature[:, b]
                    if a == b:
                        weights = weights + curvature[:, a]
                    block = gram(weights)
                    H[rows, cols] = block
                    if b != a:
                        H[cols, rows] = block.T
            else:
                H[rows, rows] = gram(curvature[:, a])
        H[np.diag_indices_from(H)] += self._l2() * len(data)
        return H

    def _noise_np(self, size: int) -> np.ndarray | None:
        if self.noise is None:
            return None
        noise = _as_numpy(self.noise)
        if noise.size != size:
            raise ValueError(f"noise has {noise.size} entries, the model has {size} parameters")
        return noise

    def _objective_grad_np(self, data: Dataset, flat: np.ndarray) -> tuple[float, np.ndarray]:
        W = self._theta_matrix(data, flat)
        loss, grad = self._loss_grad_np(data, W)
        flat_grad = grad.ravel() + self._l2() * len(data) * flat
        value = loss + 0.5 * self.l2 * len(data) * float(flat @ flat)
        noise = self._noise_np(flat.size)
        if noise is not None:
            value += float(noise @ flat)
            flat_grad = flat_grad + noise
        return value, flat_grad

    # -- public protocol -----------------------------------------------------------------
    def fit(self, data: Dataset, *, init: Any = None) -> LogisticRegression:
        """Minimise the objective on ``data`` to gradient norm ``<= tol``.

        ``init`` warm-starts the solver (the optimum does not depend on it).
        """
        self._check_params()
        mode, n_vectors, width = self._layout(data)
        size = n_vectors * width
        self._noise_np(size)
        flat = np.zeros(size) if init is None else _as_numpy(init).copy()
        if flat.size != size:
            raise ValueError(f"init has {flat.size} entries, the model needs {size}")
        n = len(data)

        def scaled(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self._objective_grad_np(data, theta)
            return value / n, grad / n

        solution = scipy.optimize.minimize(
            scaled,
            flat,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": 1e-10, "ftol": 1e-15, "maxcor": 20},
        )
        self._newton_steps = 0
        self._theta = self._newton_polish(data, solution.x)
        #: Solver iterations of the last fit: L-BFGS iterations plus Newton polishing steps.
        self.n_iter_ = int(solution.nit) + self._newton_steps
        self._shape = (n_vectors, width)
        self._mode = mode
        return self

    def _newton_polish(self, data: Dataset, flat: np.ndarray, max_steps: int = 50) -> np.ndarray:
        value, grad = self._objective_grad_np(data, flat)
        for _ in range(max_steps):
            grad_norm = float(np.linalg.norm(grad))
            if grad_norm <= self.tol:
                return flat
            W = self._theta_matrix(data, flat)
            if flat.size <= _DENSE_NEWTON_LIMIT:
                H = self._hessian_np(data, W)
                step = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), grad)
            else:
                weights = self._curvature(data, W)
                operator = scipy.sparse.linalg.LinearOperator(
                    (flat.size, flat.size),
                    matvec=lambda v, W=W, weights=weights: self._hvp_np(
                        data, W, v.reshape(W.shape), weights
                    ).ravel(),
                    dtype=np.float64,
                )
                step, _ = scipy.sparse.linalg.cg(operator, grad, rtol=1e-12, maxiter=500)
            scale = 1.0
            while scale > 1e-10:
                candidate = flat - scale * step
                new_value, new_grad = self._objective_grad_np(data, candidate)
                if new_value <= value + 1e-12 * abs(value) or np.linalg.norm(new_grad) < grad_norm:
                    break
                scale *= 0.5
            if np.linalg.norm(new_grad) >= grad_norm and new_value >= value:
                break  # no further progress possible in floating point
            flat, value, grad = candidate, new_value, new_grad
            self._newton_steps = getattr(self, "_newton_steps", 0) + 1
        grad_norm = float(np.linalg.norm(grad))
        if grad_norm > self.tol:
            warnings.warn(
                f"LogisticRegression stopped at gradient norm {grad_norm:.3g} > tol={self.tol:g}",
                ConvergenceWarning,
                stacklevel=3,
            )
        return flat

    def get_state(self) -> dict[str, Any]:
        """Fitted state as arrays (plus a JSON-able ``__meta__``), for saving."""
        if self._theta is None or self._shape is None:
            raise NotFittedError("LogisticRegression is not fitted; call fit() first")
        state: dict[str, Any] = {
            "theta": self._theta.copy(),
            "__meta__": {"shape": list(self._shape), "mode": self._mode},
        }
        if self.noise is not None:
            state["noise"] = _as_numpy(self.noise).copy()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`get_state`."""
        meta = state.get("__meta__", {})
        self._theta = _as_numpy(state["theta"]).copy()
        self._shape = tuple(meta["shape"])
        self._mode = meta["mode"]
        self.noise = None if state.get("noise") is None else _as_numpy(state["noise"]).copy()

    @property
    def is_fitted(self) -> bool:
        return self._theta is not None

    @property
    def theta(self) -> torch.Tensor:
        """Flat float64 parameter vector (a copy)."""
        if self._theta is None:
            raise NotFittedError("LogisticRegression is not fitted; call fit() first")
        return torch.from_numpy(self._theta.copy())

    @theta.setter
    def theta(self, value: Any) -> None:
        flat = _as_numpy(value).copy()
        if self._theta is not None and flat.size != self._theta.size:
            raise ValueError(f"theta must have {self._theta.size} entries, got {flat.size}")
        if not np.all(np.isfinite(flat)):
            raise ValueError("theta contains non-finite values")
        self._theta = flat

    @property
    def n_params(self) -> int:
        if self._theta is None:
            raise NotFittedError("LogisticRegression is not fitted; call fit() first")
        return int(self._theta.size)

    @property
    def coef_(self) -> np.ndarray:
        """Weights as a (K, D) array (one row per class vector)."""
        if self._theta is None or self._shape is None:
            raise NotFittedError("LogisticRegression is not fitted; call fit() first")
        return self._theta.reshape(self._shape)

    def decision_function(self, X: Any) -> np.ndarray:
        return np.asarray(self.design_matrix(X) @ self.coef_.T)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes)."""
        Z = self.decision_function(X)
        if self._mode == "binary":
            p = expit(Z[:, 0])
            return np.column_stack([1.0 - p, p])
        if self._mode == "multinomial":
            return softmax(Z, axis=1)
        P = expit(Z)
        return P / P.sum(axis=1, keepdims=True)

    def loss(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Sum of per-record logistic losses (no regulariser)."""
        W = self._theta_matrix(data, theta)
        return torch.tensor(self._loss_grad_np(data, W, need_grad=False)[0], dtype=torch.float64)

    def grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Gradient of :meth:`loss` (sum over records, no regulariser)."""
        W = self._theta_matrix(data, theta)
        return torch.from_numpy(self._loss_grad_np(data, W)[1].ravel())

    def objective_grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Gradient of the full objective (loss, regulariser and noise term)."""
        flat = self._theta_matrix(data, theta).ravel()
        return torch.from_numpy(self._objective_grad_np(data, flat)[1])

    def hvp(self, data: Dataset, v: Any, theta: Any = None) -> torch.Tensor:
        """Hessian of the objective on ``data`` at ``theta`` times ``v``."""
        W = self._theta_matrix(data, theta)
        V = _as_numpy(v).reshape(W.shape)
        return torch.from_numpy(self._hvp_np(data, W, V).ravel())

    def hessian(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Dense Hessian of the objective on ``data`` at ``theta``, shape (p, p)."""
        W = self._theta_matrix(data, theta)
        return torch.from_numpy(self._hessian_np(data, W))

    def hessian_diagonal(self, data: Dataset, theta: Any = None) -> np.ndarray:
        """Diagonal of the objective's Hessian (flat, float64), ``O(nnz(X))``.

        For class vector ``k``: ``sum_i c_ik x_ij^2 + l2 n`` with ``c_ik`` the logistic
        curvature (binary / one-vs-rest) or ``p_ik (1 - p_ik)`` (multinomial). A Jacobi
        preconditioner for conjugate gradients when the dense Hessian is too large.
        """
        W = self._theta_matrix(data, theta)
        mode, curvature, X = self._curvature(data, W)
        if mode == "multinomial":
            curvature = curvature * (1.0 - curvature)
        if isinstance(X, BlockedRows):
            diagonal = X.rmatmul(curvature, transform=np.square).T + self.l2 * len(data)
        else:
            squares = X.multiply(X) if sp.issparse(X) else X * X
            diagonal = np.asarray(squares.T @ curvature).T + self.l2 * len(data)
        return np.ascontiguousarray(diagonal).ravel()

    def objective(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        flat = self._theta_matrix(data, theta).ravel()
        return torch.tensor(self._objective_grad_np(data, flat)[0], dtype=torch.float64)
