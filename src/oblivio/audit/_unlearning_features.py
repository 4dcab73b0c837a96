"""What the unlearning attack sees and how it is scored (Chen et al., CCS 2021).

The feature constructions of a pair of posteriors (P_o, P_u) (:func:`build_feature`, with
:data:`BASELINE` for the classical attack on P_o alone), the attack classifiers with the
reference's hyper-parameters (:func:`make_attack_classifier`) and the privacy-degradation
metrics DegCount and DegRate (:func:`deg_count`, :func:`deg_rate`). The public names are
re-exported by :mod:`oblivio.audit.unlearning_attack`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from oblivio.audit._constants import CLASSIFIERS

BASELINE = "classical"
"""The classical membership-inference baseline: the attack sees P_o only."""


# -- feature constructions ------------------------------------------------------------------
def _pair(p_o: Any, p_u: Any) -> tuple[np.ndarray, np.ndarray]:
    p_o = np.asarray(p_o, dtype=np.float64)
    p_u = np.asarray(p_u, dtype=np.float64)
    if p_o.ndim != 2 or p_o.shape != p_u.shape:
        raise ValueError(
            f"P_o and P_u must be (n, C) arrays of equal shape, got {p_o.shape} and {p_u.shape}"
        )
    return p_o, p_u


def _order(p_o: np.ndarray) -> np.ndarray:
    # ascending order of P_o; stable, so ties keep class order (runs are reproducible)
    return np.argsort(p_o, axis=1, kind="stable")


def direct_diff(p_o: Any, p_u: Any) -> np.ndarray:
    """DirectDiff ``P_o - P_u``, shape (n, C) (Chen et al., Sec. 3.3)."""
    p_o, p_u = _pair(p_o, p_u)
    return p_o - p_u


def sorted_diff(p_o: Any, p_u: Any) -> np.ndarray:
    """SortedDiff ``P_o[pi] - P_u[pi]`` with ``pi`` the ascending order of ``P_o``; (n, C).

    Both vectors are permuted by the order of P_o (not each by its own order). Ascending
    versus descending only permutes columns; sorting makes the feature class-agnostic.
    """
    p_o, p_u = _pair(p_o, p_u)
    order = _order(p_o)
    return np.take_along_axis(p_o, order, axis=1) - np.take_along_axis(p_u, order, axis=1)


def euclidean_distance(p_o: Any, p_u: Any) -> np.ndarray:
    """EucDist ``||P_o - P_u||_2``, shape (n, 1) (code name ``l2_distance``)."""
    p_o, p_u = _pair(p_o, p_u)
    return np.linalg.norm(p_o - p_u, axis=1, keepdims=True)


def direct_concat(p_o: Any, p_u: Any) -> np.ndarray:
    """DirectConcat ``[P_o, P_u]``, shape (n, 2C)."""
    p_o, p_u = _pair(p_o, p_u)
    return np.hstack([p_o, p_u])


def sorted_concat(p_o: Any, p_u: Any) -> np.ndarray:
    """SortedConcat ``[P_o[pi], P_u[pi]]`` with ``pi`` the ascending order of ``P_o``; (n, 2C)."""
    p_o, p_u = _pair(p_o, p_u)
    order = _order(p_o)
    return np.hstack(
        [np.take_along_axis(p_o, order, axis=1), np.take_along_axis(p_u, order, axis=1)]
    )


def _classical(p_o: Any, p_u: Any) -> np.ndarray:
    p_o, _ = _pair(p_o, p_u)
    return p_o


_FEATURE_FUNCTIONS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "direct_diff": direct_diff,
    "sorted_diff": sorted_diff,
    "euclidean": euclidean_distance,
    "direct_concat": direct_concat,
    "sorted_concat": sorted_concat,
    BASELINE: _classical,
}


def build_feature(name: str, p_o: Any, p_u: Any) -> np.ndarray:
    """Feature ``name`` (one of :data:`FEATURES` or ``"classical"`` = P_o) of the pairs."""
    if name not in _FEATURE_FUNCTIONS:
        raise ValueError(f"unknown feature {name!r}; choose from {sorted(_FEATURE_FUNCTIONS)}")
    return _FEATURE_FUNCTIONS[name](p_o, p_u)


# -- attack classifiers ---------------------------------------------------------------------
def make_attack_classifier(name: str, *, seed: int = 0, **overrides: Any) -> Any:
    """An unfitted attack classifier with the reference's hyper-parameters.

    ============ ===========================================================================
    ``"dt"``     decision tree, ``max_leaf_nodes=10``
    ``"rf"``     random forest, 500 trees, ``min_samples_leaf=30``
    ``"lr"``     standard scaling, then logistic regression (lbfgs, ``max_iter=400``)
    ``"mlp"``    scikit-learn MLP (100 hidden ReLU units, Adam), ``early_stopping=True``,
                 ``learning_rate_init=0.01``
    ============ ===========================================================================

    (unlearning-mia.md, Sec. 6.) ``random_state=seed``; ``overrides`` go to the estimator
    (e.g. ``n_estimators=100`` to make the forest cheaper).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if name == "dt":
        return DecisionTreeClassifier(**{"max_leaf_nodes": 10, "random_state": seed, **overrides})
    if name == "rf":
        return RandomForestClassifier(
            **{
                "n_estimators": 500,
                "min_samples_leaf": 30,
                "random_state": seed,
                "n_jobs": 1,
                **overrides,
            }
        )
    if name == "lr":
        return make_pipeline(
            StandardScaler(),
            SkLogistic(**{"solver": "lbfgs", "max_iter": 400, "random_state": seed, **overrides}),
        )
    if name == "mlp":
        return MLPClassifier(
            **{
                "early_stopping": True,
                "learning_rate_init": 0.01,
                "random_state": seed,
                "max_iter": 200,
                **overrides,
            }
        )
    raise ValueError(f"unknown attack classifier {name!r}; choose from {list(CLASSIFIERS)}")


# -- metrics --------------------------------------------------------------------------------
def _true_confidence(probs_member: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 1, probs_member, 1.0 - probs_member)


def deg_count(conf_attack: Any, conf_baseline: Any) -> float:
    """DegCount (Chen et al., Sec. 3.4): share of records whose true status the unlearning
    attack predicts with **higher** confidence than classical membership inference.

    ``DegCount = (1/|T|) sum_t 1[c_ours(t) - c_base(t) > 0]`` where ``c(t)`` is the
    probability an attack assigns to record t's true label. > 0.5 means that publishing M_u
    as well as M_o degrades privacy.
    """
    a, b = np.asarray(conf_attack, dtype=np.float64), np.asarray(conf_baseline, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"confidences must be non-empty and of equal shape: {a.shape}, {b.shape}")
    return float(np.mean(a - b > 0))


def deg_rate(conf_attack: Any, conf_baseline: Any) -> float:
    """DegRate (Chen et al., Sec. 3.4): mean confidence gain on the true status,
    ``(1/|T|) sum_t (c_ours(t) - c_base(t))``; > 0 means privacy degradation."""
    a, b = np.asarray(conf_attack, dtype=np.float64), np.asarray(conf_baseline, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"confidences must be non-empty and of equal shape: {a.shape}, {b.shape}")
    return float(np.mean(a - b))
