"""Inputs and results of the membership-inference attacks on one model.

:class:`AttackType` names the attacks; :class:`AttackInputData` holds the attacked model's
outputs on members and non-members and turns them into threshold-attack scores;
:class:`AttackResult` / :class:`AttackResults` hold the metrics (with JSON ``save``/``load``).
The public names are re-exported by :mod:`oblivio.audit.mia`.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oblivio._io import write_json
from oblivio.audit._mia_scores import (
    RocCurve,
    _check_scores,
    balanced_accuracy,
    entropy,
    modified_entropy,
    per_record_loss,
    posteriors,
    roc,
    tpr_at_fpr,
)
from oblivio.data import Dataset


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
