"""scikit-learn estimators that can forget training rows.

>>> from oblivio.sklearn import UnlearningLogisticRegression
>>> clf = UnlearningLogisticRegression(method="second-order", C=1.0).fit(X, y)  # doctest: +SKIP
>>> clf.forget([3, 17]).predict(X_test)                                           # doctest: +SKIP

They follow scikit-learn's conventions (hyper-parameters only in ``__init__``, ``get_params``
/ ``set_params`` / ``clone``, fitted attributes ending in ``_``, ``classes_``,
``n_features_in_``) and pass ``sklearn.utils.estimator_checks.check_estimator``, so they work
inside ``Pipeline`` and ``GridSearchCV``. In a ``Pipeline``, ``pipe[-1].forget(rows)`` updates
the final estimator only; earlier steps keep the statistics they were fitted with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from oblivio.data import Dataset, Remove
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners import UnlearnResult, create

__all__ = ["UnlearningLogisticRegression"]

_METHODS = ("certified", "second-order", "retrain")


class UnlearningLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularised logistic regression that can forget training rows.

    Trains oblivio's :class:`~oblivio.models.LogisticRegression` (float64, solved to the exact
    optimum) through the unlearner ``method`` and exposes it with scikit-learn's interface.
    :meth:`forget` removes rows of the training set:

    * ``"retrain"``: retrain on the remaining rows (exact; warm-started, same optimum).
    * ``"second-order"``: one Newton step ``theta - H^-1 G`` (Warnecke et al., NDSS 2023,
      Eq. 6 with ``G`` the gradient difference of the removal); approximate, with its
      gradient residual in the report.
    * ``"certified"``: Guo et al.'s (ICML 2020) (epsilon, delta)-certified removal with a
      loss-perturbed objective (``sigma``) and a budget; retrains itself when the budget runs
      out. Its bounds need rows of norm <= 1, so this method scales the features by
      ``scale_ = 1 / max_i ||x_i||`` (one number, fixed at ``fit``; the model stays affine in
      ``X``); multiclass problems use one-vs-rest.

    Conventions: scikit-learn's ``C`` is converted once at ``fit`` to oblivio's per-record
    ``l2 = 1 / (C * n)`` (the two objectives are then the same up to the intercept, which
    oblivio penalises like every weight); afterwards ``l2`` stays fixed per record, so after
    forgetting the model is the one retraining on the remaining rows with the same ``l2``
    gives (exactly for ``"retrain"``).

    Parameters
    ----------
    method : {"certified", "second-order", "retrain"}
        How :meth:`forget` updates the model.
    C : float
        Inverse regularisation strength, as in scikit-learn.
    fit_intercept : bool
        Add an intercept.
    epsilon, delta, sigma : float
        Certificate parameters of ``method="certified"`` (ignored otherwise).
    tol : float
        Gradient-norm tolerance of the solver.
    max_iter : int
        L-BFGS iteration cap.
    random_state : int or None
        Seed of the certified method's noise.

    Attributes
    ----------
    classes_ : ndarray
        Class labels.
    n_features_in_ : int
        Number of features seen at ``fit``.
    coef_ : ndarray of shape (1, d) or (K, d)
    intercept_ : ndarray of shape (1,) or (K,)
    unlearner_ : oblivio.unlearners.Unlearner
        The oblivio unlearner holding the current model (``unlearner_.model_``) and data.
    unlearning_report_ : list of UnlearnResult
        One entry per :meth:`forget` call (method, rows removed, seconds, certificate,
        diagnostics such as ``gradient_residual``); empty after ``fit``.
    """

    def __init__(
        self,
        method: str = "second-order",
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        epsilon: float = 1.0,
        delta: float = 1e-4,
        sigma: float = 1.0,
        tol: float = 1e-8,
        max_iter: int = 1000,
        random_state: int | None = None,
    ) -> None:
        self.method = method
        self.C = C
        self.fit_intercept = fit_intercept
        self.epsilon = epsilon
        self.delta = delta
        self.sigma = sigma
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_params(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if not (isinstance(self.C, (int, float, np.number)) and np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")

    def _features(self, X: Any) -> Any:
        return X * self.scale_ if self.scale_ != 1.0 else X

    def fit(
        self, X: Any, y: Any, sample_ids: Iterable[int] | None = None
    ) -> UnlearningLogisticRegression:
        """Fit on ``(X, y)``.

        ``sample_ids`` (unique integers, one per row) name the rows for :meth:`forget`;
        without them a row is named by its position in this ``X``.
        """
        self._check_params()
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=np.float64, ensure_min_samples=2
        )
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"UnlearningLogisticRegression needs at least 2 classes in y, got 1 class: "
                f"{self.classes_[0]!r}"
            )
        ids = np.arange(X.shape[0]) if sample_ids is None else np.asarray(list(sample_ids))
        if ids.shape != (X.shape[0],):
            raise ValueError(
                f"sample_ids must have one entry per row ({X.shape[0]}), got {ids.shape}"
            )
        self.scale_ = 1.0
        if self.method == "certified":
            norms = (
                np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
                if sp.issparse(X)
                else np.linalg.norm(X, axis=1)
            )
            largest = float(norms.max()) if norms.size else 0.0
            self.scale_ = 1.0 / largest if largest > 0 else 1.0
        data = Dataset(
            self._features(X),
            encoded.astype(np.int64),
            ids=ids,
            classes=list(range(len(self.classes_))),
            name="sklearn",
        )
        model = LogisticRegression(
            l2=1.0 / (float(self.C) * X.shape[0]),
            fit_intercept=self.fit_intercept,
            multi_class="ovr" if self.method == "certified" else "auto",
            tol=self.tol,
            max_iter=self.max_iter,
        )
        if self.method == "certified":
            options = {
                "epsilon": self.epsilon,
                "delta": self.delta,
                "sigma": self.sigma,
                "seed": self.random_state,
            }
        elif self.method == "retrain":
            options = {"warm_start": True}
        else:
            options = {}
        self.unlearner_ = create(self.method, model, **options).fit(data)
        self.unlearning_report_: list[UnlearnResult] = []
        #: Solver iterations of the training in ``fit`` (L-BFGS plus Newton polishing).
        self.n_iter_ = np.asarray([getattr(self.unlearner_.model_, "n_iter_", 0)])
        return self

    def forget(self, rows: Iterable[int]) -> UnlearningLogisticRegression:
        """Remove training rows and update the model; returns ``self``.

        ``rows`` are the ``sample_ids`` given to :meth:`fit`, or, without them, positions in
        the ``X`` given to :meth:`fit` (positions stay valid after earlier removals). An
        unknown, duplicate or already removed row raises ``oblivio.RequestError`` (a
        ``ValueError``) naming it, and nothing changes. The call's
        :class:`~oblivio.UnlearnResult` is appended to ``unlearning_report_``.
        """
        check_is_fitted(self, "unlearner_")
        result = self.unlearner_.forget(Remove(ids=rows))
        self.unlearning_report_.append(result)
        return self

    # -- fitted parameters, sklearn layout ------------------------------------------------
    def _weights(self) -> np.ndarray:
        check_is_fitted(self, "unlearner_")
        return self.unlearner_.model_.coef_

    @property
    def coef_(self) -> np.ndarray:
        W = self._weights()
        W = W[:, :-1] if self.fit_intercept else W
        return W * self.scale_

    @property
    def intercept_(self) -> np.ndarray:
        W = self._weights()
        return W[:, -1].copy() if self.fit_intercept else np.zeros(W.shape[0])

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores: shape (n,) for two classes (positive means ``classes_[1]``), else (n, K)."""
        check_is_fitted(self, "unlearner_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        scores = self.unlearner_.model_.decision_function(self._features(X))
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "unlearner_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        return self.unlearner_.model_.predict_proba(self._features(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(np.maximum(self.predict_proba(X), np.finfo(np.float64).tiny))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class label."""
        check_is_fitted(self, "unlearner_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
