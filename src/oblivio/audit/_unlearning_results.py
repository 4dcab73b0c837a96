"""Results of the unlearning attack: one cell per (defence, classifier, feature).

:class:`UnlearningAttackResult` and :class:`UnlearningAttackResults` (tables, summary, JSON
``save``/``load``). The public names are re-exported by
:mod:`oblivio.audit.unlearning_attack`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oblivio._io import write_json
from oblivio.audit._constants import FEATURES
from oblivio.audit._mia_data import _read_json
from oblivio.audit._mia_scores import RocCurve
from oblivio.audit._unlearning_defenses import Defense
from oblivio.audit._unlearning_features import BASELINE


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
