"""Per-record membership scores and the metrics of a score vector (below every MIA).

Posteriors of any model (:func:`posteriors`; :func:`fit_clone` trains shadow and target
models), per-record statistics (:func:`per_record_loss`, :func:`entropy`,
:func:`modified_entropy`) and ROC metrics (:class:`RocCurve`, :func:`roc`, :func:`tpr_at_fpr`,
:func:`balanced_accuracy`). The public names are re-exported by :mod:`oblivio.audit.mia`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from oblivio.data import Dataset

_EPS = 1e-12  # floor for probabilities inside logarithms


# -- models ---------------------------------------------------------------------------------
def _model_of(model_or_unlearner: Any) -> Any:
    return getattr(model_or_unlearner, "model_", model_or_unlearner)


def _features(X: Any) -> Any:
    return X.X if isinstance(X, Dataset) else X


def posteriors(model: Any, X: Any, n_classes: int | None = None) -> np.ndarray:
    """Class probabilities of any model with ``predict_proba`` as float64 (n, C).

    Works for oblivio models, SISA ensembles, unlearners (their ``model_``) and scikit-learn
    estimators. An estimator that saw only some classes (its ``classes_``) has its columns
    placed at those class indices of a ``n_classes``-column matrix (zeros elsewhere); the
    reference notes that shard models must be mapped onto the full class list
    (unlearning-mia.md, Sec. 4).
    """
    model = _model_of(model)
    P = np.asarray(model.predict_proba(_features(X)), dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"predict_proba must return shape (n, C), got {P.shape}")
    if n_classes is not None and P.shape[1] != n_classes:
        classes = getattr(model, "classes_", None)
        if classes is None or len(classes) != P.shape[1]:
            raise ValueError(
                f"model returns {P.shape[1]} probability columns, expected {n_classes}"
            )
        full = np.zeros((P.shape[0], n_classes))
        full[:, np.asarray(classes, dtype=np.int64)] = P
        P = full
    return P


def fit_clone(model: Any, data: Dataset) -> Any:
    """A fresh copy of ``model`` trained on ``data`` (shadow and target models).

    oblivio models: ``model.clone().fit(data)``; scikit-learn estimators:
    ``sklearn.base.clone(model).fit(X, y)``; anything else with ``clone``/``fit``.
    """
    model = _model_of(model)
    if hasattr(model, "clone"):
        return model.clone().fit(data)
    from sklearn.base import clone

    return clone(model).fit(_flat(data), data.y)


def _flat(data: Dataset) -> np.ndarray:
    X = data.dense()
    return np.asarray(X).reshape(len(data), -1)


# -- per-record statistics ------------------------------------------------------------------
def _check_probs(P: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, C), got {P.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (P.shape[0],):
            raise ValueError(f"labels must have shape ({P.shape[0]},), got {labels.shape}")
        labels = labels.astype(np.int64)
    return P, labels


def per_record_loss(P: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy ``-log p_y`` per record (probabilities floored at 1e-12)."""
    P, labels = _check_probs(P, labels)
    return -np.log(np.maximum(P[np.arange(len(labels)), labels], _EPS))


def entropy(P: np.ndarray) -> np.ndarray:
    """Prediction entropy ``-sum_i p_i log p_i`` per row (Shannon, nats)."""
    P, _ = _check_probs(P)
    return -np.sum(P * np.log(np.maximum(P, _EPS)), axis=1)


def modified_entropy(P: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Modified entropy of Song & Mittal (USENIX Security 2021, Eq. 4).

    ``Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``. Unlike the SalUn
    reference routine (unlearning-mia.md, Sec. 13.2, pitfalls), only the row's own label is
    treated as the true class, and ``log(1 - p_i)`` is used for the other classes.
    """
    P, labels = _check_probs(P, labels)
    rows = np.arange(len(labels))
    p_y = P[rows, labels]
    others = P * np.log(np.maximum(1.0 - P, _EPS))
    others[rows, labels] = 0.0
    return -(1.0 - p_y) * np.log(np.maximum(p_y, _EPS)) - others.sum(axis=1)


# -- metrics --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RocCurve:
    """ROC curve data: ``fpr``, ``tpr`` (increasing) and the score ``thresholds``.

    Computed with :func:`sklearn.metrics.roc_curve` (``drop_intermediate=False``), so it holds
    every distinct threshold (needed to read off TPR at very low FPR).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        # +inf (the first threshold) is not JSON: store it as None
        thresholds = [None if not np.isfinite(t) else float(t) for t in self.thresholds]
        return {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist(), "thresholds": thresholds}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RocCurve:
        thresholds = [np.inf if t is None else t for t in payload["thresholds"]]
        return cls(
            np.asarray(payload["fpr"], dtype=np.float64),
            np.asarray(payload["tpr"], dtype=np.float64),
            np.asarray(thresholds, dtype=np.float64),
        )


def _check_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"labels and scores must be 1-d of equal length, got {labels.shape} and {scores.shape}"
        )
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"membership labels must be 0/1, got {sorted(values)}")
    if len(np.unique(labels)) < 2:
        raise ValueError("membership labels need both members (1) and non-members (0)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("attack scores must be finite")
    return labels.astype(np.int64), scores


def roc(labels: Any, scores: Any) -> RocCurve:
    """ROC curve of ``scores`` (larger = member) against 0/1 ``labels``."""
    from sklearn.metrics import roc_curve

    labels, scores = _check_scores(labels, scores)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds)


def tpr_at_fpr(curve: RocCurve, max_fpr: float) -> float:
    """Largest true-positive rate among ROC points with false-positive rate ``<= max_fpr``.

    Carlini et al. (*Membership Inference Attacks From First Principles*, IEEE S&P 2022,
    Sec. III) argue that attacks must be judged by their TPR at low FPR (0.1 %, 1 %) rather
    than by AUC or accuracy. No interpolation: with fewer than ``1 / max_fpr`` non-members
    the value is the TPR at FPR 0.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr!r}")
    ok = curve.fpr <= max_fpr + 1e-12
    return float(np.max(curve.tpr[ok])) if np.any(ok) else 0.0


def balanced_accuracy(curve: RocCurve) -> float:
    """Best balanced accuracy ``max_t (TPR_t + 1 - FPR_t) / 2`` of a threshold on the scores.

    The accuracy of the best threshold attack on a balanced set of members and non-members
    (Yeom et al., CSF 2018, whose membership advantage is ``TPR - FPR``, i.e.
    ``2 * balanced_accuracy - 1``). The threshold is chosen on the evaluated records, so this
    is an optimistic (best-case) figure.
    """
    return float(np.max((curve.tpr + 1.0 - curve.fpr) / 2.0))
