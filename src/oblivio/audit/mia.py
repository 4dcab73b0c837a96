"""Membership-inference attacks on one model: population attacks, SalUn MIA-efficacy, shadows.

The API follows TensorFlow Privacy's membership-inference module: the attacked outputs go in
an :class:`AttackInputData` (documented shapes, :meth:`AttackInputData.validate`), one entry
point :func:`run_attacks` runs the chosen :class:`AttackType` s, and the results
(:class:`AttackResults`) can ``summary()``, ``to_frame()``, ``save()``/``load()`` and carry
their ROC curves for :mod:`oblivio.audit.plots`.

Attacks
-------
* Threshold (population) attacks, no shadow models: loss (Yeom, Giacomelli, Fredrikson, Jha,
  *Privacy Risk in Machine Learning*, IEEE CSF 2018), confidence in the true label, prediction
  entropy and modified entropy (Song & Mittal, *Systematic Evaluation of Privacy Risks of
  Machine Learning Models*, USENIX Security 2021, Eq. 4).
* SalUn-style MIA-efficacy (Jia et al., NeurIPS 2023; Fan et al., ICLR 2024):
  :func:`mia_efficacy`.
* The NeurIPS'23 unlearning-challenge starting-kit attack: :func:`loss_attack_cv`.
* Shadow-model attack (Shokri, Stronati, Song, Shmatikov, *Membership Inference Attacks
  Against Machine Learning Models*, IEEE S&P 2017): :func:`run_shadow_attack`.

Every score is oriented so that larger means "more likely a member" (label 1).
"""

from __future__ import annotations

import copy
import enum
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oblivio._io import write_json
from oblivio.data import Dataset
from oblivio.models.sklearn_adapter import SklearnModel  # noqa: F401  (moved to models)

__all__ = [
    "AttackInputData",
    "AttackResult",
    "AttackResults",
    "AttackType",
    "MIAEfficacy",
    "RocCurve",
    "SklearnModel",
    "balanced_accuracy",
    "entropy",
    "fit_clone",
    "loss_attack_cv",
    "mia_efficacy",
    "modified_entropy",
    "per_record_loss",
    "posteriors",
    "roc",
    "run_attacks",
    "run_shadow_attack",
    "tpr_at_fpr",
]

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


# -- inputs ---------------------------------------------------------------------------------
class AttackType(str, enum.Enum):
    """Membership-inference attacks of :func:`run_attacks` (plus the shadow-model attack)."""

    LOSS = "loss"
    CONFIDENCE = "confidence"
    ENTROPY = "entropy"
    MODIFIED_ENTROPY = "modified_entropy"
    SHADOW = "shadow"


THRESHOLD_ATTACKS = (
    AttackType.LOSS,
    AttackType.CONFIDENCE,
    AttackType.ENTROPY,
    AttackType.MODIFIED_ENTROPY,
)


@dataclass
class AttackInputData:
    """Outputs of the attacked model on members ("in") and non-members ("out").

    For unlearning audits "in" is usually the **forget** set and "out" the test set; the
    numbers to report are then gaps to a retrained reference (unlearning-mia.md, Sec. 13).

    Attributes
    ----------
    probs_in : ndarray of shape (n_in, C), optional
        Class probabilities on the members.
    probs_out : ndarray of shape (n_out, C), optional
        Class probabilities on the non-members.
    labels_in : ndarray of shape (n_in,), optional
        True labels (indices ``0..C-1``) of the members.
    labels_out : ndarray of shape (n_out,), optional
        True labels of the non-members.
    loss_in : ndarray of shape (n_in,), optional
        Per-record losses on the members; computed as ``-log p_y`` when absent.
    loss_out : ndarray of shape (n_out,), optional
        Per-record losses on the non-members.
    """

    probs_in: np.ndarray | None = None
    probs_out: np.ndarray | None = None
    labels_in: np.ndarray | None = None
    labels_out: np.ndarray | None = None
    loss_in: np.ndarray | None = None
    loss_out: np.ndarray | None = None

    @classmethod
    def from_model(cls, model: Any, members: Dataset, non_members: Dataset) -> AttackInputData:
        """Query ``model`` (anything with ``predict_proba``, or an unlearner) on both sets."""
        n_classes = max(members.n_classes, non_members.n_classes)
        return cls(
            probs_in=posteriors(model, members.X, n_classes),
            probs_out=posteriors(model, non_members.X, n_classes),
            labels_in=np.asarray(members.y),
            labels_out=np.asarray(non_members.y),
        )

    def validate(self) -> AttackInputData:
        """Check shapes and values; raise ``ValueError`` naming the problem. Returns self."""
        for side in ("in", "out"):
            probs = getattr(self, f"probs_{side}")
            labels = getattr(self, f"labels_{side}")
            loss = getattr(self, f"loss_{side}")
            if probs is None and loss is None:
                raise ValueError(f"give probs_{side} (with labels_{side}) or loss_{side}")
            n = None
            if probs is not None:
                probs = np.asarray(probs, dtype=np.float64)
                if probs.ndim != 2 or probs.shape[1] < 2:
                    raise ValueError(
                        f"probs_{side} must have shape (n, C) with C >= 2, got {probs.shape}"
                    )
                if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0):
                    raise ValueError(f"probs_{side} must be finite and non-negative")
                worst = float(np.max(np.abs(probs.sum(axis=1) - 1.0))) if len(probs) else 0.0
                if worst > 1e-4:
                    raise ValueError(f"rows of probs_{side} must sum to 1 (off by up to {worst:g})")
                n = probs.shape[0]
                if labels is None:
                    raise ValueError(f"labels_{side} are needed with probs_{side}")
            if labels is not None:
                labels = np.asarray(labels)
                if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
                    raise ValueError(f"labels_{side} must have shape ({n},), got {labels.shape}")
                if (
                    probs is not None
                    and labels.size
                    and (labels.min() < 0 or labels.max() >= np.asarray(probs).shape[1])
                ):
                    raise ValueError(f"labels_{side} must be class indices in 0..C-1")
                n = labels.shape[0]
            if loss is not None:
                loss = np.asarray(loss, dtype=np.float64)
                if loss.ndim != 1 or (n is not None and loss.shape[0] != n):
                    raise ValueError(f"loss_{side} must have shape ({n},), got {loss.shape}")
                if not np.all(np.isfinite(loss)):
                    raise ValueError(f"loss_{side} must be finite")
                n = loss.shape[0]
            if not n:
                raise ValueError(f"the {side!r} side has no records")
        if (self.probs_in is None) != (self.probs_out is None):
            raise ValueError("give probabilities for both sides or for neither")
        if self.probs_in is not None:
            c_in, c_out = np.shape(self.probs_in)[1], np.shape(self.probs_out)[1]
            if c_in != c_out:
                raise ValueError(f"probs_in has {c_in} classes, probs_out {c_out}")
        return self

    def get_loss(self, side: str) -> np.ndarray:
        """Per-record losses of ``side`` (``"in"``/``"out"``)."""
        loss = getattr(self, f"loss_{side}")
        if loss is not None:
            return np.asarray(loss, dtype=np.float64)
        return per_record_loss(getattr(self, f"probs_{side}"), getattr(self, f"labels_{side}"))

    def scores(self, attack: AttackType | str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) of a threshold attack; larger score = more likely a member."""
        attack = AttackType(attack)
        if attack is AttackType.LOSS:
            parts = [-self.get_loss("in"), -self.get_loss("out")]
        else:
            if self.probs_in is None:
                raise ValueError(f"the {attack.value!r} attack needs probabilities")
            parts = []
            for side in ("in", "out"):
                P = getattr(self, f"probs_{side}")
                y = getattr(self, f"labels_{side}")
                if attack is AttackType.CONFIDENCE:
                    parts.append(np.asarray(P)[np.arange(len(y)), np.asarray(y, dtype=np.int64)])
                elif attack is AttackType.ENTROPY:
                    parts.append(-entropy(P))
                elif attack is AttackType.MODIFIED_ENTROPY:
                    parts.append(-modified_entropy(P, y))
                else:
                    raise ValueError(f"{attack.value!r} is not a threshold attack")
        labels = np.concatenate([np.ones(len(parts[0])), np.zeros(len(parts[1]))]).astype(int)
        return labels, np.concatenate(parts)


# -- results --------------------------------------------------------------------------------
def _read_json(path: str | os.PathLike) -> Any:
    with open(path) as stream:
        return json.load(stream)


@dataclass
class AttackResult:
    """Result of one membership-inference attack.

    Attributes
    ----------
    attack_type : str
        The :class:`AttackType` value.
    auc : float
        ROC AUC (:func:`sklearn.metrics.roc_auc_score`); 0.5 = chance.
    balanced_accuracy : float
        Best threshold's balanced accuracy (:func:`balanced_accuracy`).
    advantage : float
        Membership advantage ``max_t TPR - FPR`` (Yeom et al., CSF 2018, Def. 4).
    tpr_at_1pct_fpr, tpr_at_01pct_fpr : float
        TPR at FPR <= 1 % and <= 0.1 % (Carlini et al., S&P 2022).
    n_in, n_out : int
        Numbers of members and non-members.
    roc : RocCurve
        ROC curve data.
    """

    attack_type: str
    auc: float
    balanced_accuracy: float
    advantage: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    n_in: int
    n_out: int
    roc: RocCurve = field(repr=False)

    @classmethod
    def from_scores(cls, attack_type: str, labels: Any, scores: Any) -> AttackResult:
        """Metrics of a score vector (larger = member) against 0/1 membership labels."""
        from sklearn.metrics import roc_auc_score

        labels, scores = _check_scores(labels, scores)
        curve = roc(labels, scores)
        return cls(
            attack_type=str(attack_type),
            auc=float(roc_auc_score(labels, scores)),
            balanced_accuracy=balanced_accuracy(curve),
            advantage=float(np.max(curve.tpr - curve.fpr)),
            tpr_at_1pct_fpr=tpr_at_fpr(curve, 0.01),
            tpr_at_01pct_fpr=tpr_at_fpr(curve, 0.001),
            n_in=int(labels.sum()),
            n_out=int(len(labels) - labels.sum()),
            roc=curve,
        )

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "roc"}

    def to_dict(self) -> dict[str, Any]:
        payload = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "roc"}
        payload["roc"] = self.roc.to_dict()
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> AttackResult:
        payload = dict(payload)
        payload["roc"] = RocCurve.from_dict(payload["roc"])
        return cls(**payload)


@dataclass
class AttackResults:
    """Results of several attacks on one model (see :func:`run_attacks`)."""

    results: list[AttackResult]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, attack_type: AttackType | str) -> AttackResult:
        key = attack_type.value if isinstance(attack_type, AttackType) else str(attack_type)
        for result in self.results:
            if result.attack_type == key:
                return result
        raise KeyError(f"no result for attack {key!r}; have {[r.attack_type for r in self]}")

    def best(self) -> AttackResult:
        """The attack with the highest AUC."""
        return max(self.results, key=lambda r: r.auc)

    def to_frame(self) -> pd.DataFrame:
        """One row per attack (ROC data left out)."""
        return pd.DataFrame([r.row() for r in self.results])

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [f"Membership inference ({len(self)} attacks)"]
        for r in self.results:
            lines.append(
                f"  {r.attack_type:<17} AUC {r.auc:.3f}  balanced acc {r.balanced_accuracy:.3f}"
                f"  TPR@1%FPR {r.tpr_at_1pct_fpr:.3f}  TPR@0.1%FPR {r.tpr_at_01pct_fpr:.3f}"
                f"  (n_in {r.n_in}, n_out {r.n_out})"
            )
        if self.results:
            best = self.best()
            lines.append(f"  best: {best.attack_type} (AUC {best.auc:.3f})")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically)."""
        return write_json(
            path,
            {
                "kind": "AttackResults",
                "metadata": self.metadata,
                "results": [r.to_dict() for r in self.results],
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttackResults:
        payload = _read_json(path)
        if payload.get("kind") != "AttackResults":
            raise ValueError(f"{path} does not hold AttackResults (kind={payload.get('kind')!r})")
        return cls([AttackResult.from_dict(r) for r in payload["results"]], payload["metadata"])


def run_attacks(
    data: AttackInputData,
    attack_types: Iterable[AttackType | str] = THRESHOLD_ATTACKS,
) -> AttackResults:
    """Run threshold (population) membership-inference attacks on one model's outputs.

    Each attack turns a per-record statistic into a member score and sweeps the threshold:
    loss ``-l(x, y)`` (Yeom et al., CSF 2018), confidence ``p_y``, negative entropy, and
    negative modified entropy (Song & Mittal, USENIX Security 2021). No shadow models: these
    are population attacks with one threshold for all records, which under-estimate leakage
    compared with per-example attacks (Hayes et al., arXiv:2403.01218).

    Parameters
    ----------
    data : AttackInputData
        The model's outputs on members and non-members (validated here).
    attack_types : iterable of AttackType or str
        Threshold attacks to run (all four by default).

    Returns
    -------
    AttackResults
    """
    data.validate()
    results = []
    for attack in attack_types:
        attack = AttackType(attack)
        if attack is AttackType.SHADOW:
            raise ValueError("the shadow-model attack needs models: use run_shadow_attack()")
        labels, scores = data.scores(attack)
        results.append(AttackResult.from_scores(attack.value, labels, scores))
    return AttackResults(results)


# -- SalUn MIA-efficacy ---------------------------------------------------------------------
_EFFICACY_FEATURES = ("correctness", "confidence", "entropy", "modified_entropy", "probs")


def _efficacy_feature(P: np.ndarray, y: np.ndarray, feature: str) -> np.ndarray:
    if feature == "correctness":
        return (np.argmax(P, axis=1) == y).astype(np.float64)[:, None]
    if feature == "confidence":
        return P[np.arange(len(y)), y][:, None]
    if feature == "entropy":
        return entropy(P)[:, None]
    if feature == "modified_entropy":
        return modified_entropy(P, y)[:, None]
    if feature == "probs":
        return P
    raise ValueError(f"feature must be one of {_EFFICACY_FEATURES}, got {feature!r}")


@dataclass
class MIAEfficacy:
    """SalUn-style MIA-efficacy of one model on a forget set.

    Attributes
    ----------
    efficacy : float
        Fraction of forget records the attack predicts as non-members (0..1; papers report
        ``100 * efficacy``). Compare with the retrained model's value, not with 1.
    feature : str
        The feature the attack used (``"confidence"`` is the reported variant).
    shadow_accuracy : float
        Accuracy of the attack on its own shadow-train/shadow-test records.
    n_shadow : int
        Shadow records per class (members = non-members = n_shadow).
    n_forget : int
        Number of forget records.
    """

    efficacy: float
    feature: str
    shadow_accuracy: float
    n_shadow: int
    n_forget: int

    @property
    def percent(self) -> float:
        return 100.0 * self.efficacy


def mia_efficacy(
    model: Any,
    *,
    retain: Dataset,
    test: Dataset,
    forget: Dataset,
    feature: str = "confidence",
    seed: int = 0,
    max_shadow: int | None = 5000,
) -> MIAEfficacy:
    """MIA-efficacy of Jia et al. (NeurIPS 2023) and Fan et al. (SalUn, ICLR 2024).

    1. Shadow-train (members, label 1): ``n`` records of ``retain`` drawn at random (seeded;
       the reference code takes the first ``|test|`` records); shadow-test (non-members,
       label 0): ``n`` records of ``test``, where ``n = min(|retain|, |test|, max_shadow)``.
    2. One feature per record: ``correctness`` (argmax = label), ``confidence`` ``p_y``,
       ``entropy``, ``modified_entropy`` (Song & Mittal's definition, not the reference
       routine's, see unlearning-mia.md Sec. 13.2) or the whole probability vector
       ``probs``.
    3. An RBF support-vector classifier (``C = 3``, ``gamma = "auto"``) separates the two.
    4. MIA-efficacy = the share of ``forget`` records it predicts as non-members (the TNR on
       the forget set).

    The ideal value is the one a model retrained without the forget set obtains (about
    0.13 for 10 % random forgetting on CIFAR-10/ResNet-18 in the authors' tables), not 1.
    ``max_shadow`` caps the shadow sets (the SVM is quadratic in their size; None: no cap).
    """
    from sklearn.svm import SVC

    if len(forget) == 0:
        raise ValueError("mia_efficacy needs a non-empty forget set")
    if feature not in _EFFICACY_FEATURES:
        raise ValueError(f"feature must be one of {_EFFICACY_FEATURES}, got {feature!r}")
    n = min(len(retain), len(test))
    if max_shadow is not None:
        n = min(n, int(max_shadow))
    if n < 2:
        raise ValueError(f"retain and test need at least 2 records each, got {n}")
    rng = np.random.default_rng(seed)
    members = retain.take(np.sort(rng.choice(len(retain), n, replace=False)))
    non_members = test.take(np.sort(rng.choice(len(test), n, replace=False)))
    n_classes = max(retain.n_classes, test.n_classes, forget.n_classes)
    Z = np.vstack(
        [
            _efficacy_feature(posteriors(model, d.X, n_classes), d.y, feature)
            for d in (members, non_members)
        ]
    )
    target = np.concatenate([np.ones(n), np.zeros(n)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(Z, target)
    Z_forget = _efficacy_feature(posteriors(model, forget.X, n_classes), forget.y, feature)
    predicted = attack.predict(Z_forget)
    return MIAEfficacy(
        efficacy=float(np.mean(predicted == 0)),
        feature=feature,
        shadow_accuracy=float(np.mean(attack.predict(Z) == target)),
        n_shadow=n,
        n_forget=len(forget),
    )


def loss_attack_cv(
    model: Any, forget: Dataset, test: Dataset, *, n_splits: int = 10, seed: int = 0
) -> float:
    """Cross-validated accuracy of the NeurIPS'23 unlearning-challenge starting-kit MIA.

    Per-record cross-entropy of ``model`` on ``forget`` (label 1) and ``test`` (label 0),
    both shuffled (seeded) and truncated to the smaller size; a logistic regression on the
    scalar loss; mean accuracy over ``n_splits`` stratified shuffle splits (test share 0.2).
    The target is the retrained model's value (about 0.5 when forget and test records are
    exchangeable), see unlearning-mia.md Sec. 13.1.
    """
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    n = min(len(forget), len(test))
    if n < 5:
        raise ValueError(f"loss_attack_cv needs >= 5 forget and test records, got {n}")
    rng = np.random.default_rng(seed)
    n_classes = max(forget.n_classes, test.n_classes)
    losses = []
    for data in (forget, test):
        pick = rng.permutation(len(data))[:n]
        part = data.take(pick)
        losses.append(per_record_loss(posteriors(model, part.X, n_classes), part.y))
    X = np.concatenate(losses)[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    splitter = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.2, random_state=seed)
    return float(np.mean(cross_val_score(SkLogistic(), X, y, cv=splitter, scoring="accuracy")))


# -- shadow-model attack --------------------------------------------------------------------
def _classifier(name: str | Any, seed: int) -> Any:
    if not isinstance(name, str):
        return copy.deepcopy(name)
    from oblivio.audit.unlearning_attack import make_attack_classifier

    return make_attack_classifier(name, seed=seed)


def run_shadow_attack(
    target_model: Any,
    *,
    members: Dataset,
    non_members: Dataset,
    shadow_data: Dataset,
    shadow_model: Any = None,
    n_shadows: int = 4,
    attack_classifier: str | Any = "rf",
    seed: int = 0,
) -> AttackResult:
    """Shadow-model membership inference (Shokri et al., IEEE S&P 2017, Sec. IV).

    ``shadow_data`` (disjoint from the target's training data) is split at random into
    ``n_shadows`` disjoint parts; each part is halved into a shadow training set ("in") and a
    held-out set ("out"), and a shadow model, a clone of ``shadow_model`` (default: the
    target's own template, i.e. the attacker knows the training algorithm), is trained on
    the "in" half. The shadow models' posteriors on their "in" (label 1) and "out" (label 0)
    records train **one attack classifier per class** (Sec. IV-D) on the probability vector.
    The attack then scores the target model's posteriors on ``members`` and ``non_members``.

    Parameters
    ----------
    target_model : model with ``predict_proba``
        The attacked model (or an unlearner; its ``model_`` is used).
    members, non_members : Dataset
        Records known to be in / out of the target's training set (evaluation).
    shadow_data : Dataset
        Attacker's data from the same distribution.
    shadow_model : model, optional
        Template for the shadow models (``clone().fit``; scikit-learn estimators are cloned).
    n_shadows : int
        Number of shadow models (>= 1).
    attack_classifier : {"dt", "rf", "lr", "mlp"} or sklearn classifier
        Per-class attack model (see :func:`oblivio.audit.unlearning_attack.make_attack_classifier`).
    seed : int
        Seed of the data split and the attack classifiers.

    Returns
    -------
    AttackResult
        With ``attack_type="shadow"``.
    """
    if n_shadows < 1:
        raise ValueError(f"n_shadows must be >= 1, got {n_shadows!r}")
    if len(shadow_data) < 4 * n_shadows:
        raise ValueError(
            f"shadow_data has {len(shadow_data)} records, too few for {n_shadows} shadow models"
        )
    template = _model_of(target_model) if shadow_model is None else shadow_model
    n_classes = max(members.n_classes, non_members.n_classes, shadow_data.n_classes)
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(len(shadow_data)), n_shadows)
    rows, member, classes = [], [], []
    for part in parts:
        half = len(part) // 2
        inside, outside = shadow_data.take(part[:half]), shadow_data.take(part[half:])
        shadow = fit_clone(template, inside)
        for data, flag in ((inside, 1), (outside, 0)):
            rows.append(posteriors(shadow, data.X, n_classes))
            member.append(np.full(len(data), flag))
            classes.append(np.asarray(data.y))
    X_attack, y_attack, c_attack = np.vstack(rows), np.concatenate(member), np.concatenate(classes)
    target_rows = np.vstack(
        [
            posteriors(target_model, members.X, n_classes),
            posteriors(target_model, non_members.X, n_classes),
        ]
    )
    target_member = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    target_class = np.concatenate([members.y, non_members.y]).astype(np.int64)
    scores = np.full(len(target_rows), float(np.mean(y_attack)))
    for c in range(n_classes):
        train_rows = c_attack == c
        test_rows = target_class == c
        if not np.any(test_rows) or not np.any(train_rows):
            continue
        if len(np.unique(y_attack[train_rows])) < 2:
            scores[test_rows] = float(y_attack[train_rows][0])
            continue
        attack = _classifier(attack_classifier, seed)
        attack.fit(X_attack[train_rows], y_attack[train_rows])
        scores[test_rows] = attack.predict_proba(target_rows[test_rows])[:, 1]
    return AttackResult.from_scores(AttackType.SHADOW.value, target_member, scores)
