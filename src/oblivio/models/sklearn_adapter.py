"""scikit-learn interop for models: adopt a fitted estimator, or wrap one as an oblivio model.

* :func:`from_sklearn` adopts a *fitted* scikit-learn ``LogisticRegression`` (binary or
  multinomial), a ``OneVsRestClassifier`` of them, or a ``Pipeline`` ending in one, as an
  oblivio :class:`~oblivio.models.LogisticRegression` (inside a :class:`PipelineModel` when
  there is preprocessing). The parameters are copied, so predictions equal scikit-learn's.
* :class:`SklearnModel` wraps any *unfitted* scikit-learn classifier so the unlearners that
  only retrain (``"retrain"``, ``"sisa"`` with ``slices=1``) can use it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from oblivio.data import Dataset
from oblivio.models.base import NotFittedError
from oblivio.models.logistic import LogisticRegression

__all__ = ["PipelineModel", "SklearnModel", "from_sklearn"]

_SUPPORTED = (
    "a fitted sklearn.linear_model.LogisticRegression with an L2 penalty (binary or "
    "multinomial), a fitted sklearn.multiclass.OneVsRestClassifier of such, or a fitted "
    "sklearn.pipeline.Pipeline ending in one of these"
)


def _features(X: Any) -> Any:
    return X.X if isinstance(X, Dataset) else X


def _flat(data: Dataset) -> np.ndarray:
    return np.asarray(data.dense()).reshape(len(data), -1)


class SklearnModel:
    """Adapter giving an (unfitted) scikit-learn classifier the oblivio model interface.

    With it, the original target and shadow models of Chen et al. (decision tree, random
    forest, scikit-learn MLP; unlearning-mia.md, Sec. 3) can be unlearned by the unlearners
    that only retrain (``"retrain"``, ``"sisa"`` with ``slices=1``). ``predict_proba`` always
    has one column per class of the training :class:`Dataset` (classes the estimator did not
    see get probability 0). The model has no parameter vector: ``theta`` is an empty tensor,
    so gradient-based unlearners do not apply (to adopt a fitted logistic regression with its
    parameters, use :func:`from_sklearn`).

    Parameters
    ----------
    estimator : sklearn classifier
        Unfitted template; ``fit`` trains a ``sklearn.base.clone`` of it.
    """

    l2 = 0.0

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def get_params(self) -> dict[str, Any]:
        return {"estimator": self.estimator}

    def clone(self) -> SklearnModel:
        return SklearnModel(self.estimator)

    def fit(self, data: Dataset, *, init: Any = None, epochs: int | None = None) -> SklearnModel:
        """Train a clone of the estimator on ``data`` (``init``/``epochs`` are ignored)."""
        from sklearn.base import clone

        self.n_classes_ = data.n_classes
        self.estimator_ = clone(self.estimator).fit(_flat(data), data.y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities, shape (n, n_classes) of the training data's class list."""
        if not hasattr(self, "estimator_"):
            raise NotFittedError("SklearnModel is not fitted; call fit(data) first")
        X = np.asarray(_features(X))
        P = self.estimator_.predict_proba(X.reshape(X.shape[0], -1))
        full = np.zeros((P.shape[0], self.n_classes_))
        full[:, np.asarray(self.estimator_.classes_, dtype=np.int64)] = P
        return full

    def predict(self, X: Any) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    @property
    def theta(self) -> torch.Tensor:
        """Empty: a scikit-learn estimator has no flat parameter vector here."""
        if not hasattr(self, "estimator_"):
            raise NotFittedError("SklearnModel is not fitted; call fit(data) first")
        return torch.zeros(0, dtype=torch.float64)

    @theta.setter
    def theta(self, value: Any) -> None:
        if torch.as_tensor(value).numel():
            raise ValueError("SklearnModel has no parameter vector; theta must be empty")

    def _no_gradients(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"SklearnModel({type(self.estimator).__name__}) has no parameter vector, so only "
            "the unlearners that retrain apply ('retrain', 'sisa' with slices=1); to adopt a "
            "fitted logistic regression with its parameters use ob.models.from_sklearn"
        )

    loss = grad = hvp = hessian = objective = _no_gradients

    def get_state(self) -> dict[str, Any]:
        return {"__meta__": {"class": type(self.estimator).__name__}}

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(
            "SklearnModel cannot be restored from arrays; refit it (use slices=1 with SISA)"
        )

    def __repr__(self) -> str:
        return f"SklearnModel({self.estimator!r})"


class PipelineModel:
    """A frozen, already fitted preprocessing transform in front of an oblivio model.

    Everything that takes data (``fit``, ``predict_proba``, ``loss``, ``grad``, ``hvp``,
    ``hessian``, ``objective``) first applies ``transform`` to the features, so requests and
    unlearners work on the raw records while the model sees transformed ones. The transform
    is never refitted: forgetting records changes the model, not the preprocessing's
    statistics (a scaler's mean still includes forgotten rows; refit the pipeline to remove
    that too). Other attributes (``coef_``, ``n_params``, ``mode`` ...) are the inner
    model's.

    Parameters
    ----------
    transform : object with ``transform(X)``
        The fitted preprocessing (e.g. ``pipeline[:-1]``).
    model : Model
        The oblivio model on transformed features.
    """

    def __init__(self, transform: Any, model: Any) -> None:
        self.transform = transform
        self.model = model
        self._cache: tuple[Any, Any] | None = None

    # the model's hyper-parameters and state
    @property
    def l2(self) -> float:
        return self.model.l2

    @l2.setter
    def l2(self, value: float) -> None:
        self.model.l2 = value

    @property
    def theta(self) -> torch.Tensor:
        return self.model.theta

    @theta.setter
    def theta(self, value: Any) -> None:
        self.model.theta = value

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "transform", "_cache"):  # not yet set (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def get_params(self) -> dict[str, Any]:
        return {"transform": self.transform, "model": self.model}

    def clone(self) -> PipelineModel:
        return PipelineModel(self.transform, self.model.clone())

    def get_state(self) -> dict[str, Any]:
        return self.model.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.model.set_state(state)

    # data goes through the transform
    def _features(self, X: Any) -> Any:
        X = _features(X)
        if self._cache is not None and self._cache[0] is X:
            return self._cache[1]
        raw = X if hasattr(X, "tocsr") else np.asarray(X).reshape(X.shape[0], -1)
        out = self.transform.transform(raw)
        self._cache = (X, out)
        return out

    def _data(self, data: Dataset) -> Dataset:
        X = self._features(data)
        return Dataset(X, data.y, ids=data.ids, classes=data.classes, name=data.name)

    def fit(self, data: Dataset, *, init: Any = None) -> PipelineModel:
        self.model.fit(self._data(data), init=init)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(self._features(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.model.predict(self._features(X))

    def decision_function(self, X: Any) -> np.ndarray:
        return self.model.decision_function(self._features(X))

    def loss(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        return self.model.loss(self._data(data), theta)

    def grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        return self.model.grad(self._data(data), theta)

    def hvp(self, data: Dataset, v: Any, theta: Any = None) -> torch.Tensor:
        return self.model.hvp(self._data(data), v, theta)

    def hessian(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        return self.model.hessian(self._data(data), theta)

    def objective(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        return self.model.objective(self._data(data), theta)

    def objective_grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        return self.model.objective_grad(self._data(data), theta)

    def __deepcopy__(self, memo: dict[int, Any]) -> PipelineModel:
        # The fitted transform is frozen and shared; only the model is copied.
        return PipelineModel(self.transform, copy.deepcopy(self.model, memo))

    def __repr__(self) -> str:
        return f"PipelineModel({self.transform!r}, {self.model!r})"


def _logistic_parts(estimator: Any) -> tuple[str, np.ndarray, np.ndarray, float, Any]:
    """(mode, coef (K, d), intercept (K,), C, reference estimator) of a supported classifier."""
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.multiclass import OneVsRestClassifier

    if isinstance(estimator, OneVsRestClassifier):
        members = getattr(estimator, "estimators_", None)
        if members is None:
            raise ValueError("from_sklearn needs a fitted estimator; call fit(X, y) first")
        if len(estimator.classes_) < 3:
            raise ValueError(
                "from_sklearn: a OneVsRestClassifier on two classes is a binary model; adopt "
                "its single LogisticRegression (estimator.estimators_[0]) instead"
            )
        parts = [_logistic_parts(member) for member in members]
        if any(mode != "binary" for mode, *_ in parts):
            raise ValueError("from_sklearn: every one-vs-rest member must be binary")
        Cs = {C for *_, C, _ in parts}
        if len(Cs) != 1:
            raise ValueError(f"from_sklearn: one-vs-rest members have different C: {sorted(Cs)}")
        coef = np.vstack([coef for _, coef, _, _, _ in parts])
        intercept = np.concatenate([icpt for _, _, icpt, _, _ in parts])
        return "ovr", coef, intercept, Cs.pop(), members[0]
    if not isinstance(estimator, SkLogistic):
        raise TypeError(
            f"from_sklearn cannot adopt a {type(estimator).__name__}; supported: {_SUPPORTED}. "
            "For other classifiers, ob.models.SklearnModel(unfitted_estimator) works with the "
            "unlearners that retrain."
        )
    if not hasattr(estimator, "coef_"):
        raise ValueError("from_sklearn needs a fitted estimator; call fit(X, y) first")
    penalty = getattr(estimator, "penalty", "deprecated")
    l1_ratio = getattr(estimator, "l1_ratio", None)
    if penalty not in ("l2", "deprecated") or (
        penalty == "deprecated" and l1_ratio not in (0, 0.0, None)
    ):
        raise ValueError(
            f"from_sklearn needs an L2 penalty (oblivio's objective); got penalty={penalty!r}, "
            f"l1_ratio={l1_ratio!r}"
        )
    C = float(estimator.C)
    if not (np.isfinite(C) and C > 0):
        raise ValueError(f"from_sklearn needs a finite C > 0 (an L2 penalty), got C={C!r}")
    if estimator.class_weight is not None:
        raise ValueError(
            f"from_sklearn: class_weight={estimator.class_weight!r} weights the loss; oblivio's "
            "objective is an unweighted sum"
        )
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.broadcast_to(
        np.asarray(estimator.intercept_, dtype=np.float64), (coef.shape[0],)
    ).copy()
    if len(estimator.classes_) == 2:
        return "binary", coef, intercept, C, estimator
    multi_class = getattr(estimator, "multi_class", "deprecated")
    solver = getattr(estimator, "solver", "lbfgs")
    ovr = multi_class == "ovr" or (multi_class in ("auto", "deprecated") and solver == "liblinear")
    return ("ovr" if ovr else "multinomial"), coef, intercept, C, estimator


def from_sklearn(
    estimator: Any, *, n_samples: int | None = None
) -> LogisticRegression | PipelineModel:
    """Adopt a fitted scikit-learn logistic regression as an oblivio model.

    Supported: ``sklearn.linear_model.LogisticRegression`` with an L2 penalty, binary or
    multinomial; ``OneVsRestClassifier(LogisticRegression(...))`` (oblivio's ``"ovr"``
    mode: probabilities are the members' sigmoids normalised to sum to one, as scikit-learn
    computes them); a ``Pipeline`` ending in either, whose other steps become a frozen
    transform (:class:`PipelineModel`). Anything else raises ``TypeError``/``ValueError``
    naming what is supported.

    Conventions. scikit-learn minimises ``C * sum_i loss_i + ||w||^2 / 2`` with an
    unpenalised intercept; oblivio minimises ``sum_i loss_i + l2 * n / 2 * ||theta||^2``
    (Guo et al., ICML 2020, Eq. 2) with the intercept as one more weight. The two agree for
    ``l2 = 1 / (C * n)``, which is what this function sets when given ``n_samples`` (the
    number of training records; scikit-learn does not store it). The parameters are copied
    as they are, so predictions equal scikit-learn's; they sit at oblivio's optimum only up
    to scikit-learn's solver tolerance (``tol=1e-4`` by default) and, with an intercept, up
    to the intercept's penalty. Before a second-order or certified update that assumes the
    exact optimum, polish them with ``model.fit(train, init=model.theta)``.

    Parameters
    ----------
    estimator : fitted scikit-learn estimator
        See above.
    n_samples : int, optional
        Records the estimator was trained on; gives ``l2 = 1 / (C * n_samples)``. Without it
        ``l2`` is ``None``: the model predicts, but anything that evaluates the objective
        (``hvp``, ``objective``, second-order and certified unlearning, refitting) raises an
        error asking for it.

    Returns
    -------
    LogisticRegression or PipelineModel
        A fitted oblivio model. Its labels are class *indices*: index ``k`` is
        ``estimator.classes_[k]`` (kept as ``model.classes_``).
    """
    from sklearn.pipeline import Pipeline

    transform = None
    final = estimator
    if isinstance(estimator, Pipeline):
        if len(estimator.steps) < 1:
            raise ValueError("from_sklearn: the Pipeline has no steps")
        final = estimator.steps[-1][1]
        transform = estimator[:-1] if len(estimator.steps) > 1 else None
    mode, coef, intercept, C, _ = _logistic_parts(final)
    if n_samples is not None and not (isinstance(n_samples, (int, np.integer)) and n_samples > 0):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    fit_intercept = (
        bool(getattr(final, "fit_intercept", True))
        if mode != "ovr"
        else bool(final.estimators_[0].fit_intercept)
    )
    model = LogisticRegression(
        l2=None if n_samples is None else 1.0 / (C * int(n_samples)),
        fit_intercept=fit_intercept,
        multi_class={"binary": "auto", "ovr": "ovr", "multinomial": "multinomial"}[mode],
    )
    weights = np.hstack([coef, intercept[:, None]]) if fit_intercept else coef
    model.set_state(
        {"theta": weights.ravel(), "__meta__": {"shape": list(weights.shape), "mode": mode}}
    )
    model.classes_ = np.asarray(final.classes_)
    if transform is None:
        return model
    adopted = PipelineModel(transform, model)
    adopted.classes_ = model.classes_
    return adopted
