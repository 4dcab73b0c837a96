"""Membership inference against machine unlearning (Chen et al., CCS 2021).

M. Chen, Z. Zhang, T. Wang, M. Backes, M. Humbert, Y. Zhang, *When Machine Unlearning
Jeopardizes Privacy*, ACM CCS 2021 (arXiv:2005.02205). A model owner publishes an original
model M_o and, after deleting a record x, an unlearned model M_u. The adversary queries both
on x, gets the posteriors P_o = M_o(x), P_u = M_u(x), and decides whether x is the deleted
record (positive, "in-out") or a record that was never trained on (negative, "out-out").
Shadow models trained like the target (on a disjoint half of the data) provide the attack
classifier's training rows.

Pipeline (unlearning-mia.md, Sec. 11):

1. :func:`collect_posteriors` trains the original models and unlearns with any registered
   unlearner (``"retrain"``, ``"sisa"``, ...) on the shadow and target sides and returns an
   :class:`UnlearningAttackInput` with the (P_o, P_u, label) rows of both sides.
2. :func:`run_unlearning_attack` applies a defence (:class:`Defense`) to every posterior,
   builds each feature (:data:`FEATURES`, plus the classical baseline on P_o alone), fits
   each attack classifier (:data:`CLASSIFIERS`) on the shadow rows and reports AUC,
   DegCount and DegRate on the target rows (:class:`UnlearningAttackResults`).

:func:`unlearning_attack` does both.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from oblivio._io import write_json
from oblivio.audit._constants import CLASSIFIERS, FEATURES, SETTINGS
from oblivio.audit.mia import (
    RocCurve,
    _read_json,
    posteriors,
    roc,
    tpr_at_fpr,
)
from oblivio.data import Dataset, Remove, Replace

__all__ = [
    "BASELINE",
    "CLASSIFIERS",
    "FEATURES",
    "SETTINGS",
    "Defense",
    "TemperatureScaled",
    "UnlearningAttackInput",
    "UnlearningAttackResult",
    "UnlearningAttackResults",
    "build_feature",
    "collect_posteriors",
    "deg_count",
    "deg_rate",
    "direct_concat",
    "direct_diff",
    "euclidean_distance",
    "label_only",
    "make_attack_classifier",
    "run_unlearning_attack",
    "sorted_concat",
    "sorted_diff",
    "temperature_scaling",
    "top_k",
    "unlearning_attack",
]

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


# -- defences -------------------------------------------------------------------------------
def top_k(P: Any, k: int) -> np.ndarray:
    """Publish only each vector's top-``k`` confidences (Chen et al., Sec. 6).

    The other ``C - k`` entries of each row are each replaced by ``(1 - sum top-k) / (C - k)``,
    so rows still sum to 1. Ties are broken by class order. For ``k >= C`` nothing changes
    (e.g. top-1 on a binary task leaves the posterior as it is).
    """
    P = np.asarray(P, dtype=np.float64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n, C = P.shape
    if k >= C:
        return P.copy()
    order = np.argsort(-P, axis=1, kind="stable")
    keep = np.zeros_like(P, dtype=bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    rest = (1.0 - np.where(keep, P, 0.0).sum(axis=1, keepdims=True)) / (C - k)
    return np.where(keep, P, rest)


def label_only(P: Any) -> np.ndarray:
    """Publish only the predicted label: the one-hot vector of the argmax (Chen et al., Sec. 6).

    DirectDiff then lies in {0, +-1}^C and EucDist in {0, sqrt 2}: only prediction flips
    between M_o and M_u carry signal.
    """
    P = np.asarray(P, dtype=np.float64)
    out = np.zeros_like(P)
    out[np.arange(P.shape[0]), np.argmax(P, axis=1)] = 1.0
    return out


def temperature_scaling(P: Any, temperature: float) -> np.ndarray:
    """Soften posteriors: ``softmax(logits / T)`` computed as ``p^(1/T)`` renormalised.

    For a softmax model ``log p`` equals the logits up to a per-row constant, so this is the
    published output of the model with its logits divided by ``T`` at inference time (the
    reference's primary variant, unlearning-mia.md Sec. 8 [check the paper's protocol]).
    """
    P = np.asarray(P, dtype=np.float64)
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    with np.errstate(divide="ignore"):
        logits = np.log(P) / float(temperature)
    logits = logits - np.max(logits, axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


class TemperatureScaled(torch.nn.Module):
    """A network whose logits are divided by ``temperature`` in every forward pass.

    The training-time variant of temperature scaling (the original code's commented-out
    hooks sit inside the forward pass, so they act in training and at inference;
    unlearning-mia.md Sec. 8). Wrap a module before handing it to ``TorchModel``::

        TorchModel(TemperatureScaled(MLP(784, hidden=(128,), n_classes=10), 4.0), ...)

    Training then adapts the weights to the scaled logits (a network can learn to undo a
    constant scale), so this is weaker than scaling published posteriors only
    (:class:`Defense` ``"temperature:<T>"``); both are offered for comparison.
    """

    def __init__(self, module: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.module = module
        self.temperature = float(temperature)

    def forward(self, *inputs: Any) -> torch.Tensor:
        return self.module(*inputs) / self.temperature


@dataclass(frozen=True)
class Defense:
    """A defence applied to every published posterior (P_o and P_u, independently).

    Parameters
    ----------
    kind : {"none", "top_k", "label", "temperature"}
        The operation (:func:`top_k`, :func:`label_only`, :func:`temperature_scaling`).
    k : int, optional
        For ``top_k``.
    temperature : float, optional
        For ``temperature`` (T > 1 softens).

    ``Defense.parse("top2")``, ``"label"``, ``"temperature:4"`` (or ``"t4"``), ``"none"``.
    Temperature scaling here acts at inference time only; for the training-time variant wrap
    the network in :class:`TemperatureScaled`. DP-SGD (the reference's fourth defence) is a
    training method, not a posterior transformation, and is not offered here.
    """

    kind: str = "none"
    k: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("none", "top_k", "label", "temperature"):
            raise ValueError(
                f"defence kind must be 'none', 'top_k', 'label' or 'temperature', got {self.kind!r}"
            )
        if self.kind == "top_k" and (self.k is None or self.k < 1):
            raise ValueError(f"top_k needs k >= 1, got {self.k!r}")
        if self.kind == "temperature" and (self.temperature is None or self.temperature <= 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    @classmethod
    def parse(cls, spec: str | Defense | None) -> Defense:
        """From a short name: ``none``, ``top<k>``, ``label``, ``temperature:<T>``/``t<T>``."""
        if isinstance(spec, Defense):
            return spec
        if spec is None:
            return cls()
        text = str(spec).strip().lower().replace("-", "_")
        try:
            if text in ("none", ""):
                return cls()
            if text in ("label", "label_only"):
                return cls("label")
            if text.startswith("top_k"):
                return cls("top_k", k=int(text[5:].lstrip(":=")))
            if text.startswith("top"):
                return cls("top_k", k=int(text[3:].lstrip(":=")))
            if text.startswith("temperature"):
                return cls("temperature", temperature=float(text[11:].lstrip(":=")))
            if text.startswith("t") and text[1:]:
                return cls("temperature", temperature=float(text[1:].lstrip(":=")))
        except ValueError as error:
            raise ValueError(f"cannot parse defence {spec!r}: {error}") from None
        raise ValueError(f"unknown defence {spec!r}; use none, top<k>, label or temperature:<T>")

    @property
    def name(self) -> str:
        if self.kind == "top_k":
            return f"top{self.k}"
        if self.kind == "temperature":
            return f"temperature:{self.temperature:g}"
        return self.kind

    def apply(self, P: Any) -> np.ndarray:
        """The published version of posteriors ``P`` (n, C)."""
        P = np.asarray(P, dtype=np.float64)
        if self.kind == "top_k":
            return top_k(P, int(self.k))
        if self.kind == "label":
            return label_only(P)
        if self.kind == "temperature":
            return temperature_scaling(P, float(self.temperature))
        return P.copy()


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


# -- input ----------------------------------------------------------------------------------
@dataclass
class UnlearningAttackInput:
    """Posteriors of original and unlearned models on the shadow and target sides.

    Each row is one query record x with its posterior under the original model,
    ``P_o = M_o(x)``, under the unlearned model, ``P_u = M_u(x)``, and a label: 1 when x was
    deleted (positive), 0 when x was never trained on (negative).

    Attributes
    ----------
    shadow_original, shadow_unlearned : ndarray of shape (n_shadow, C)
        P_o and P_u of the shadow rows (attack training data).
    shadow_labels : ndarray of shape (n_shadow,)
        0/1 labels of the shadow rows.
    target_original, target_unlearned : ndarray of shape (n_target, C)
        P_o and P_u of the target rows (attack evaluation data).
    target_labels : ndarray of shape (n_target,)
        0/1 labels of the target rows.
    shadow_groups, target_groups : ndarray of shape (n,), optional
        Index of the (original, unlearned) model pair each row came from.
    metadata : dict
        How the rows were made (setting, seeds, sizes, unlearner, timings).
    """

    shadow_original: np.ndarray
    shadow_unlearned: np.ndarray
    shadow_labels: np.ndarray
    target_original: np.ndarray
    target_unlearned: np.ndarray
    target_labels: np.ndarray
    shadow_groups: np.ndarray | None = None
    target_groups: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(np.shape(self.shadow_original)[1])

    def validate(self) -> UnlearningAttackInput:
        """Check shapes and values; raise ``ValueError`` naming the problem. Returns self."""
        C = None
        for side in ("shadow", "target"):
            p_o = np.asarray(getattr(self, f"{side}_original"), dtype=np.float64)
            p_u = np.asarray(getattr(self, f"{side}_unlearned"), dtype=np.float64)
            labels = np.asarray(getattr(self, f"{side}_labels"))
            if p_o.ndim != 2 or p_o.shape != p_u.shape:
                raise ValueError(
                    f"{side}_original and {side}_unlearned must be (n, C) arrays of equal "
                    f"shape, got {p_o.shape} and {p_u.shape}"
                )
            if C is not None and p_o.shape[1] != C:
                raise ValueError(f"shadow posteriors have {C} classes, target {p_o.shape[1]}")
            C = p_o.shape[1]
            if C < 2:
                raise ValueError(f"posteriors need at least 2 classes, got {C}")
            if labels.shape != (p_o.shape[0],):
                raise ValueError(
                    f"{side}_labels must have shape ({p_o.shape[0]},), got {labels.shape}"
                )
            values = set(np.unique(labels).tolist())
            if values != {0, 1}:
                raise ValueError(
                    f"{side}_labels must contain both 0 (never trained on) and 1 (deleted), "
                    f"got {sorted(values)}"
                )
            for name, P in (("original", p_o), ("unlearned", p_u)):
                if not np.all(np.isfinite(P)) or P.min() < 0:
                    raise ValueError(f"{side}_{name} must be finite and non-negative")
                worst = float(np.max(np.abs(P.sum(axis=1) - 1.0)))
                if worst > 1e-4:
                    raise ValueError(f"rows of {side}_{name} must sum to 1 (off by {worst:g})")
            groups = getattr(self, f"{side}_groups")
            if groups is not None and np.shape(groups) != (p_o.shape[0],):
                raise ValueError(f"{side}_groups must have shape ({p_o.shape[0]},)")
        return self

    def side(self, name: str, defense: Defense | None = None) -> tuple[np.ndarray, ...]:
        """(P_o, P_u, labels) of ``name`` (``"shadow"``/``"target"``) after ``defense``."""
        defense = Defense() if defense is None else defense
        return (
            defense.apply(getattr(self, f"{name}_original")),
            defense.apply(getattr(self, f"{name}_unlearned")),
            np.asarray(getattr(self, f"{name}_labels"), dtype=np.int64),
        )

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            payload[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return payload

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically), so an attack can be re-run without retraining."""
        return write_json(path, {"kind": "UnlearningAttackInput", **self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> UnlearningAttackInput:
        payload = _read_json(path)
        if payload.pop("kind", None) != "UnlearningAttackInput":
            raise ValueError(f"{path} does not hold an UnlearningAttackInput")
        for key in cls.__dataclass_fields__:
            if key != "metadata" and payload.get(key) is not None:
                payload[key] = np.asarray(payload[key])
        return cls(**payload)


# -- collecting posteriors ------------------------------------------------------------------
def _side_pools(positions: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """80/20 positive/negative pools, then 85/15 negative/replacement (reference Sec. 2)."""
    order = rng.permutation(positions)
    n_neg = int(round(0.2 * len(order)))
    positive, negative = order[: len(order) - n_neg], order[len(order) - n_neg :]
    n_replace = int(round(0.15 * len(negative)))
    return {
        "positive": positive,
        "negative": negative[: len(negative) - n_replace],
        "replace": negative[len(negative) - n_replace :],
    }


def collect_posteriors(
    data: Dataset,
    model: Any,
    *,
    unlearner: str = "retrain",
    unlearner_options: dict[str, Any] | None = None,
    setting: str = "in_out",
    n_original: int = 10,
    set_size: int = 2000,
    n_unlearn: int = 20,
    n_delete: int = 1,
    distinct_deletions: bool | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> UnlearningAttackInput:
    """Train original and unlearned models on both sides and query them (Chen et al., Sec. 4).

    ``data`` is split at random into a shadow half and a target half. On each side, 80 % of
    the records form the positive pool (training candidates) and 20 % the negative pool
    (never trained on), of which 15 % are reserved as replacements for the online setting.
    Then, ``n_original`` times: an original training set S of ``set_size`` records is drawn
    from the positive pool and the unlearner is fitted on it (``M_o``); ``n_unlearn`` times,
    a deletion set U of ``n_delete`` records of S is drawn and a deep copy of the fitted
    unlearner forgets it (``M_u``). The queried records depend on ``setting``:

    ============== =================================================================================
    ``in_out``     every x in U (label 1); single deletion for ``n_delete=1``, group deletion with
                   one row per deleted record otherwise
    ``multi_version`` one record of U at random (M_u misses several records; intermediate
                   versions unobserved); use ``n_delete > 1``
    ``in_in``      one record of S \\ U (remaining sample, in both training sets)
    ``online``     as ``in_out``, but M_u also learns ``n_delete`` new records from the
                   replacement pool (one out, one in: a :class:`~oblivio.Replace` request)
    ``null``       a control: U is deleted as in ``in_out``, but the "positive" rows are
                   records that were never trained on; any attack should give AUC ~ 0.5
    ============== =================================================================================

    Each positive row is paired with a negative row: a record of the negative pool, drawn with
    replacement (without replacement when ``distinct_deletions``). ``distinct_deletions``
    (default: True for ``"sisa"``, as in the reference) also makes the ``n_unlearn`` deletion
    sets of one original model disjoint.

    Every random choice is seeded from ``seed`` (the original code's per-model and negative
    sampling was not, pitfall 11); posteriors are queried without augmentation and defences
    are applied later, to every posterior (:func:`run_unlearning_attack`).

    Parameters
    ----------
    data : Dataset
        All N records (shadow and target sides are halves of it).
    model : model
        Template of the original models (an oblivio model or a
        :class:`~oblivio.models.SklearnModel`).
    unlearner : str
        A registered unlearner name (``oblivio.unlearners.available()``), e.g. ``"retrain"``
        or ``"sisa"``.
    unlearner_options : dict, optional
        Options for ``oblivio.unlearners.create`` (e.g. ``{"shards": 10, "seed": 0}``).
    setting : str
        One of :data:`SETTINGS`.
    n_original, set_size, n_unlearn, n_delete : int
        Original models per side, their training-set size, unlearned models per original
        model, records deleted per unlearned model (reference defaults 10, 2000, 20, 1).
    distinct_deletions : bool, optional
        See above.
    seed : int
        Seed of every random choice.
    progress : callable, optional
        ``progress(side, done, total)`` after each original model.

    Returns
    -------
    UnlearningAttackInput
    """
    from oblivio.unlearners import create

    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    for name, value in (
        ("n_original", n_original),
        ("set_size", set_size),
        ("n_unlearn", n_unlearn),
        ("n_delete", n_delete),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if n_delete >= set_size:
        raise ValueError(f"n_delete={n_delete} must be smaller than set_size={set_size}")
    if setting == "in_in" and n_delete >= set_size - 1:
        raise ValueError("in_in needs records left in S \\ U: lower n_delete")
    options = dict(unlearner_options or {})
    if distinct_deletions is None:
        distinct_deletions = unlearner == "sisa"
    if distinct_deletions and n_unlearn * n_delete > set_size:
        raise ValueError(
            f"{n_unlearn} disjoint deletion sets of {n_delete} records need "
            f"set_size >= {n_unlearn * n_delete}, got {set_size}"
        )
    n_classes = data.n_classes
    root = np.random.SeedSequence(seed)
    split_rng = np.random.default_rng(root.spawn(1)[0])
    order = split_rng.permutation(len(data))
    halves = {"shadow": order[: len(order) // 2], "target": order[len(order) // 2 :]}
    side_seeds = dict(zip(("shadow", "target"), root.spawn(3)[1:], strict=True))
    out: dict[str, dict[str, list]] = {}
    start = time.perf_counter()
    fit_seconds = forget_seconds = 0.0
    for side, positions in halves.items():
        rng = np.random.default_rng(side_seeds[side])
        pools = _side_pools(positions, rng)
        if set_size > len(pools["positive"]):
            raise ValueError(
                f"set_size={set_size} exceeds the {len(pools['positive'])} records of the "
                f"{side} positive pool (80 % of half of {len(data)} records)"
            )
        if setting == "online" and len(pools["replace"]) < n_delete:
            raise ValueError(
                f"the {side} replacement pool has only {len(pools['replace'])} records"
            )
        rows = {"original": [], "unlearned": [], "labels": [], "groups": []}
        group = 0
        for i in range(n_original):
            S = rng.choice(pools["positive"], set_size, replace=False)
            fitted = create(unlearner, model, **options)
            tick = time.perf_counter()
            fitted.fit(data.take(S))
            fit_seconds += time.perf_counter() - tick
            deletion_order = rng.permutation(S)
            negatives_left = rng.permutation(pools["negative"])
            for j in range(n_unlearn):
                if distinct_deletions:
                    U = deletion_order[j * n_delete : (j + 1) * n_delete]
                else:
                    U = rng.choice(S, n_delete, replace=False)
                ids = data.ids[U]
                if setting == "online":
                    R = rng.choice(pools["replace"], n_delete, replace=False)
                    request = Replace(ids=ids, X=data.X[R], y=data.y[R])
                else:
                    request = Remove(ids=ids)
                unlearned = copy.deepcopy(fitted)
                tick = time.perf_counter()
                unlearned.forget(request)
                forget_seconds += time.perf_counter() - tick
                if setting in ("in_out", "online"):
                    positives = U
                elif setting == "multi_version":
                    positives = rng.choice(U, 1)
                elif setting == "in_in":
                    positives = rng.choice(np.setdiff1d(S, U), 1)
                else:  # null: "deleted" rows that were never in training
                    positives = rng.choice(pools["negative"], len(U), replace=True)
                k = len(positives)
                if distinct_deletions:
                    if len(negatives_left) < k:
                        negatives_left = rng.permutation(pools["negative"])
                    negatives, negatives_left = negatives_left[:k], negatives_left[k:]
                else:
                    negatives = rng.choice(pools["negative"], k, replace=True)
                query = np.concatenate([positives, negatives])
                X = data.X[query]
                rows["original"].append(posteriors(fitted.model_, X, n_classes))
                rows["unlearned"].append(posteriors(unlearned.model_, X, n_classes))
                rows["labels"].append(np.r_[np.ones(k), np.zeros(k)].astype(np.int64))
                rows["groups"].append(np.full(2 * k, group))
                group += 1
            if progress is not None:
                progress(side, i + 1, n_original)
        out[side] = {key: np.concatenate(value) for key, value in rows.items()}
    result = UnlearningAttackInput(
        shadow_original=out["shadow"]["original"],
        shadow_unlearned=out["shadow"]["unlearned"],
        shadow_labels=out["shadow"]["labels"],
        target_original=out["target"]["original"],
        target_unlearned=out["target"]["unlearned"],
        target_labels=out["target"]["labels"],
        shadow_groups=out["shadow"]["groups"],
        target_groups=out["target"]["groups"],
        metadata={
            "dataset": data.name,
            "n_records": len(data),
            "model": repr(model),
            "unlearner": unlearner,
            "unlearner_options": {k: repr(v) for k, v in options.items()},
            "setting": setting,
            "n_original": int(n_original),
            "set_size": int(set_size),
            "n_unlearn": int(n_unlearn),
            "n_delete": int(n_delete),
            "distinct_deletions": bool(distinct_deletions),
            "seed": int(seed),
            "seconds": time.perf_counter() - start,
            "fit_seconds": fit_seconds,
            "forget_seconds": forget_seconds,
        },
    )
    return result.validate()


# -- results --------------------------------------------------------------------------------
@dataclass
class UnlearningAttackResult:
    """One (defence, classifier, feature) cell of the unlearning attack.

    Attributes
    ----------
    feature : str
        One of :data:`FEATURES` or ``"classical"`` (the baseline on P_o alone).
    classifier : str
        Attack classifier name.
    defense : str
        Defence name (``"none"``, ``"top2"``, ``"label"``, ``"temperature:4"``).
    auc : float
        ROC AUC of the attack's probability of "deleted" on the target rows.
    accuracy : float
        Accuracy of its predictions on the target rows.
    tpr_at_1pct_fpr, tpr_at_01pct_fpr : float
        TPR at FPR <= 1 % and <= 0.1 % on the target rows (Carlini et al., S&P 2022).
    shadow_auc : float
        AUC on the shadow rows the attack was trained on.
    deg_count, deg_rate : float
        DegCount and DegRate against the classical baseline (same classifier and defence) on
        the target rows; nan for the baseline itself.
    shadow_deg_count, shadow_deg_rate : float
        The same on the shadow rows.
    roc : RocCurve
        Target-side ROC curve.
    """

    feature: str
    classifier: str
    defense: str
    auc: float
    accuracy: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    shadow_auc: float
    deg_count: float
    deg_rate: float
    shadow_deg_count: float
    shadow_deg_rate: float
    roc: RocCurve = field(repr=False)

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "roc"}

    def to_dict(self) -> dict[str, Any]:
        payload = self.row()
        payload["roc"] = self.roc.to_dict()
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> UnlearningAttackResult:
        payload = dict(payload)
        payload["roc"] = RocCurve.from_dict(payload["roc"])
        for key in ("deg_count", "deg_rate", "shadow_deg_count", "shadow_deg_rate"):
            if payload[key] is None:
                payload[key] = float("nan")
        return cls(**payload)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


@dataclass
class UnlearningAttackResults:
    """All cells of an unlearning attack (see :func:`run_unlearning_attack`)."""

    results: list[UnlearningAttackResult]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def get(
        self, feature: str, classifier: str | None = None, defense: str = "none"
    ) -> UnlearningAttackResult:
        """The cell for (feature, classifier, defence); ``classifier`` may be omitted if unique."""
        defense = Defense.parse(defense).name
        hits = [
            r
            for r in self.results
            if r.feature == feature
            and r.defense == defense
            and (classifier is None or r.classifier == classifier)
        ]
        if len(hits) != 1:
            raise KeyError(
                f"{len(hits)} results for feature={feature!r}, classifier={classifier!r}, "
                f"defense={defense!r}"
            )
        return hits[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per (defence, classifier, feature), ROC data left out."""
        return pd.DataFrame([r.row() for r in self.results])

    def table(self, metric: str = "auc") -> pd.DataFrame:
        """``metric`` with rows (defence, classifier) and one column per feature."""
        frame = self.to_frame()
        if metric not in frame.columns:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(frame.columns[3:])}")
        columns = [f for f in (*FEATURES, BASELINE) if f in set(frame["feature"])]
        pivot = frame.pivot_table(
            index=["defense", "classifier"],
            columns="feature",
            values=metric,
            sort=False,
            dropna=False,
        )
        return pivot[columns]

    def summary(self) -> str:
        """The AUC table plus DegCount/DegRate of the best feature per (defence, classifier)."""
        meta = self.metadata
        head = "Unlearning attack (Chen et al., CCS 2021)"
        if meta:
            head += (
                f": {meta.get('dataset', '?')}, {meta.get('unlearner', '?')}, "
                f"setting {meta.get('setting', '?')}, {meta.get('n_target_rows', '?')} target rows"
            )
        lines = [head, "AUC on the target side:", self.table("auc").round(3).to_string()]
        lines.append("Best feature per row (DegCount / DegRate vs classical):")
        frame = self.to_frame()
        for (defense, classifier), part in frame.groupby(["defense", "classifier"], sort=False):
            ours = part[part["feature"] != BASELINE]
            if ours.empty:
                continue
            best = ours.loc[ours["auc"].idxmax()]
            lines.append(
                f"  {defense:<15} {classifier:<4} {best['feature']:<14} AUC {best['auc']:.3f}  "
                f"DegCount {best['deg_count']:.3f}  DegRate {best['deg_rate']:+.3f}"
            )
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically); nan becomes null."""
        rows = [{k: _nan_to_none(v) for k, v in r.to_dict().items()} for r in self.results]
        return write_json(
            path, {"kind": "UnlearningAttackResults", "metadata": self.metadata, "results": rows}
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> UnlearningAttackResults:
        payload = _read_json(path)
        if payload.get("kind") != "UnlearningAttackResults":
            raise ValueError(f"{path} does not hold UnlearningAttackResults")
        return cls(
            [UnlearningAttackResult.from_dict(r) for r in payload["results"]], payload["metadata"]
        )


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, Defense)) or value is None:
        return [value]
    return list(value)


def run_unlearning_attack(
    data: UnlearningAttackInput,
    *,
    features: Iterable[str] = FEATURES,
    classifiers: str | Iterable[str] = ("dt",),
    defenses: str | Defense | Iterable[str | Defense] | None = ("none",),
    seed: int = 0,
    classifier_options: dict[str, dict[str, Any]] | None = None,
) -> UnlearningAttackResults:
    """Fit and evaluate the unlearning attack of Chen et al. (CCS 2021) on collected rows.

    For each defence: the defence is applied to **every** posterior (P_o and P_u of both
    sides) before **any** feature is built, the classical baseline included (the original
    code fed undefended posteriors to two features, pitfall 3). For each classifier, one
    attack per feature is fitted on the shadow rows and evaluated on the target rows; the
    classical baseline (same classifier on P_o alone) gives DegCount and DegRate
    (:func:`deg_count`, :func:`deg_rate`).

    Parameters
    ----------
    data : UnlearningAttackInput
        Rows from :func:`collect_posteriors` (or your own, validated here).
    features : iterable of str
        Subset of :data:`FEATURES`; the baseline is always added.
    classifiers : str or iterable of str
        Subset of :data:`CLASSIFIERS`.
    defenses : defence spec(s)
        :class:`Defense` objects or names (``"none"``, ``"top1"``, ``"label"``,
        ``"temperature:4"``).
    seed : int
        ``random_state`` of the attack classifiers.
    classifier_options : dict, optional
        Per-classifier overrides, e.g. ``{"rf": {"n_estimators": 100}}``.

    Returns
    -------
    UnlearningAttackResults
    """
    from sklearn.metrics import roc_auc_score

    data.validate()
    features = [f for f in features if f != BASELINE]
    for feature in features:
        if feature not in FEATURES:
            raise ValueError(f"unknown feature {feature!r}; choose from {list(FEATURES)}")
    classifiers = _as_list(classifiers)
    for name in classifiers:
        if name not in CLASSIFIERS:
            raise ValueError(f"unknown attack classifier {name!r}; choose from {list(CLASSIFIERS)}")
    options = classifier_options or {}
    defenses = [Defense.parse(d) for d in _as_list(defenses)]
    results = []
    start = time.perf_counter()
    for defense in defenses:
        shadow_o, shadow_u, shadow_y = data.side("shadow", defense)
        target_o, target_u, target_y = data.side("target", defense)
        for classifier in classifiers:
            confidences: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            cells = []
            for feature in [BASELINE, *features]:
                attack = make_attack_classifier(
                    classifier, seed=seed, **options.get(classifier, {})
                )
                attack.fit(build_feature(feature, shadow_o, shadow_u), shadow_y)
                member_column = list(attack.classes_).index(1)
                p_target = attack.predict_proba(build_feature(feature, target_o, target_u))
                p_shadow = attack.predict_proba(build_feature(feature, shadow_o, shadow_u))
                p_target, p_shadow = p_target[:, member_column], p_shadow[:, member_column]
                confidences[feature] = (
                    _true_confidence(p_target, target_y),
                    _true_confidence(p_shadow, shadow_y),
                )
                curve = roc(target_y, p_target)
                cells.append((feature, p_target, p_shadow, curve))
            base_target, base_shadow = confidences[BASELINE]
            for feature, p_target, p_shadow, curve in cells:
                ours_target, ours_shadow = confidences[feature]
                baseline = feature == BASELINE
                nan = float("nan")
                results.append(
                    UnlearningAttackResult(
                        feature=feature,
                        classifier=classifier,
                        defense=defense.name,
                        auc=float(roc_auc_score(target_y, p_target)),
                        accuracy=float(np.mean((p_target > 0.5) == (target_y == 1))),
                        tpr_at_1pct_fpr=tpr_at_fpr(curve, 0.01),
                        tpr_at_01pct_fpr=tpr_at_fpr(curve, 0.001),
                        shadow_auc=float(roc_auc_score(shadow_y, p_shadow)),
                        deg_count=nan if baseline else deg_count(ours_target, base_target),
                        deg_rate=nan if baseline else deg_rate(ours_target, base_target),
                        shadow_deg_count=nan if baseline else deg_count(ours_shadow, base_shadow),
                        shadow_deg_rate=nan if baseline else deg_rate(ours_shadow, base_shadow),
                        roc=curve,
                    )
                )
    metadata = dict(data.metadata)
    metadata.update(
        {
            "n_shadow_rows": int(len(data.shadow_labels)),
            "n_target_rows": int(len(data.target_labels)),
            "attack_seed": int(seed),
            "attack_seconds": time.perf_counter() - start,
        }
    )
    return UnlearningAttackResults(results, metadata)


def unlearning_attack(
    data: Dataset,
    model: Any,
    *,
    unlearner: str = "retrain",
    unlearner_options: dict[str, Any] | None = None,
    setting: str = "in_out",
    n_original: int = 10,
    set_size: int = 2000,
    n_unlearn: int = 20,
    n_delete: int = 1,
    features: Iterable[str] = FEATURES,
    classifiers: str | Sequence[str] = ("dt",),
    defenses: str | Defense | Iterable[str | Defense] | None = ("none",),
    seed: int = 0,
    classifier_options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> UnlearningAttackResults:
    """:func:`collect_posteriors` then :func:`run_unlearning_attack` (same arguments)."""
    rows = collect_posteriors(
        data,
        model,
        unlearner=unlearner,
        unlearner_options=unlearner_options,
        setting=setting,
        n_original=n_original,
        set_size=set_size,
        n_unlearn=n_unlearn,
        n_delete=n_delete,
        seed=seed,
        progress=progress,
    )
    return run_unlearning_attack(
        rows,
        features=features,
        classifiers=classifiers,
        defenses=defenses,
        seed=seed,
        classifier_options=classifier_options,
    )
