"""One table to compare unlearning methods: accuracies, MIA, and gaps to retraining.

The goal of unlearning is to **match retraining**, not to minimise membership inference: a
model retrained without the forget set still classifies many forget records correctly and
still looks a little like it trained on them when they resemble the retained data. So the
numbers to compare methods by are the **gaps** between the unlearned model and a retrained
reference (Triantafillou et al., NeurIPS 2023 unlearning challenge FAQ; Hayes et al.,
arXiv:2403.01218; unlearning-mia.md Sec. 13).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oblivio._io import write_json
from oblivio.audit._mia_data import _read_json
from oblivio.audit._mia_scores import _model_of
from oblivio.audit.metrics import accuracy, agreement, param_distance
from oblivio.audit.mia import (
    AttackInputData,
    AttackType,
    loss_attack_cv,
    mia_efficacy,
    run_attacks,
)
from oblivio.data import Dataset

__all__ = ["AVG_GAP_METRICS", "Evaluation", "avg_gap", "evaluate"]

#: Metrics of one model, in table order.
MODEL_METRICS = (
    "accuracy_forget",
    "accuracy_retain",
    "accuracy_test",
    "mia_auc",
    "mia_cv_accuracy",
    "mia_efficacy",
)

#: Metrics comparing the model with the reference.
PAIR_METRICS = ("param_distance", "agreement_forget", "agreement_retain", "agreement_test")

#: The four numbers of the field's "avg gap" (Fan et al., SalUn, ICLR 2024; Jia et al.,
#: NeurIPS 2023): accuracy on forget / retain / test records and MIA-efficacy.
AVG_GAP_METRICS = ("accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy")


def avg_gap(
    own: dict[str, float],
    reference: dict[str, float],
    keys: tuple[str, ...] = AVG_GAP_METRICS,
) -> float:
    """Mean absolute difference of ``own`` to ``reference`` over ``keys``, in percentage
    points (the field's avg gap). Keys missing from either side or nan are left out; nan
    when none is left."""
    gaps = [abs(own[k] - reference[k]) for k in keys if k in own and k in reference]
    gaps = [g for g in gaps if np.isfinite(g)]
    return 100 * float(np.mean(gaps)) if gaps else float("nan")


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    metrics : dict of str to float
        The evaluated model's ``accuracy_forget``, ``accuracy_retain``, ``accuracy_test``;
        ``mia_auc`` (AUC of the loss-threshold attack, forget = members vs test =
        non-members; Yeom et al., CSF 2018), ``mia_cv_accuracy`` (NeurIPS'23 starting-kit
        attack, :func:`~oblivio.audit.mia.loss_attack_cv`), ``mia_efficacy`` (SalUn-style,
        confidence feature, :func:`~oblivio.audit.mia.mia_efficacy`). nan where a metric
        cannot be computed (e.g. too few records).
    reference : dict of str to float or None
        The same metrics for the retrained reference model.
    gaps : dict of str to float
        ``metric(model) - metric(reference)`` for every model metric, plus
        ``param_distance`` (nan when the models have no comparable parameter vectors) and
        prediction ``agreement_forget/retain/test`` between the two models.
    sizes : dict of str to int
        Numbers of forget, retain and test records.
    """

    metrics: dict[str, float]
    reference: dict[str, float] | None = None
    gaps: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def avg_gap(self) -> float:
        """The field's avg gap to the reference, in points (:func:`avg_gap`); nan without one."""
        return avg_gap(self.metrics, self.reference) if self.reference else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """Rows: metrics; columns: ``model``, ``reference``, ``gap`` (the last two if known)."""
        names = list(self.metrics) + [k for k in self.gaps if k not in self.metrics]
        frame = pd.DataFrame(index=pd.Index(names, name="metric"))
        frame["model"] = [self.metrics.get(k, np.nan) for k in names]
        if self.reference is not None:
            frame["reference"] = [self.reference.get(k, np.nan) for k in names]
            frame["gap"] = [self.gaps.get(k, np.nan) for k in names]
        return frame

    def summary(self) -> str:
        """The table as text."""
        sizes = ", ".join(f"{k} {v}" for k, v in self.sizes.items())
        head = "Unlearning evaluation" + (f" ({sizes})" if sizes else "")
        return head + "\n" + self.to_frame().round(4).to_string()

    def to_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, float] | None) -> dict[str, float | None] | None:
            if d is None:
                return None
            return {k: (None if not np.isfinite(v) else float(v)) for k, v in d.items()}

        return {
            "metrics": clean(self.metrics),
            "reference": clean(self.reference),
            "gaps": clean(self.gaps),
            "sizes": dict(self.sizes),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically; nan as null)."""
        return write_json(path, {"kind": "Evaluation", **self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Evaluation:
        payload = _read_json(path)
        if payload.pop("kind", None) != "Evaluation":
            raise ValueError(f"{path} does not hold an Evaluation")

        def restore(d: dict[str, Any] | None) -> dict[str, float] | None:
            if d is None:
                return None
            return {k: (float("nan") if v is None else float(v)) for k, v in d.items()}

        return cls(
            metrics=restore(payload["metrics"]),
            reference=restore(payload["reference"]),
            gaps=restore(payload["gaps"]) or {},
            sizes=payload.get("sizes", {}),
        )


def _guard(function: Any, *args: Any, **kwargs: Any) -> float:
    """Run a metric; nan when the data are too small for it (ValueError)."""
    try:
        return float(function(*args, **kwargs))
    except ValueError:
        return float("nan")


def _mia_auc(model: Any, forget: Dataset, test: Dataset) -> float:
    data = AttackInputData.from_model(model, forget, test)
    return run_attacks(data, [AttackType.LOSS])[AttackType.LOSS].auc


def _param_distance(model: Any, reference: Any) -> float:
    """``||theta - theta_ref||``; nan without comparable (non-empty, same-shape) parameters."""
    try:
        if model.theta.numel() == 0 or model.theta.shape != reference.theta.shape:
            return float("nan")
        return param_distance(model, reference)
    except (AttributeError, ValueError, TypeError, RuntimeError):
        return float("nan")


def _model_metrics(
    model: Any, forget: Dataset, retain: Dataset, test: Dataset, seed: int, mia_feature: str
) -> dict[str, float]:
    nan = float("nan")
    has_forget = len(forget) > 0
    return {
        "accuracy_forget": accuracy(model, forget),
        "accuracy_retain": accuracy(model, retain),
        "accuracy_test": accuracy(model, test),
        "mia_auc": _guard(_mia_auc, model, forget, test) if has_forget and len(test) else nan,
        "mia_cv_accuracy": _guard(loss_attack_cv, model, forget, test, seed=seed)
        if has_forget
        else nan,
        "mia_efficacy": _guard(
            lambda: (
                mia_efficacy(
                    model, retain=retain, test=test, forget=forget, feature=mia_feature, seed=seed
                ).efficacy
            )
        )
        if has_forget
        else nan,
    }


def evaluate(
    unlearner_or_model: Any,
    *,
    forget: Dataset,
    retain: Dataset,
    test: Dataset,
    reference: Any = None,
    seed: int = 0,
    mia_feature: str = "confidence",
) -> Evaluation:
    """Evaluate an unlearned model, and its gaps to a retrained reference.

    Parameters
    ----------
    unlearner_or_model : Unlearner or model
        An unlearner (its ``model_`` is evaluated) or anything with ``predict_proba`` and
        ``predict`` (oblivio models, SISA ensembles, scikit-learn estimators).
    forget : Dataset
        The records that were unlearned (as they were before the request).
    retain : Dataset
        The training records that remain.
    test : Dataset
        Held-out records (never trained on).
    reference : Unlearner or model, optional
        A model retrained from scratch on ``retain`` (e.g. ``model.clone().fit(retain)``).
        When given, the table also has the reference's metrics and the gaps.
    seed : int
        Seed of the attacks' sampling.
    mia_feature : str
        Feature of the MIA-efficacy attack (``"confidence"``, the reported variant).

    Returns
    -------
    Evaluation
        ``metrics`` (accuracies on forget / retain / test; loss-threshold MIA AUC of forget
        vs test; starting-kit MIA cross-validated accuracy; SalUn MIA-efficacy), the
        reference's metrics and the gaps (plus parameter distance and prediction agreement).
    """
    model = _model_of(unlearner_or_model)
    metrics = _model_metrics(model, forget, retain, test, seed, mia_feature)
    sizes = {"forget": len(forget), "retain": len(retain), "test": len(test)}
    if reference is None:
        return Evaluation(metrics=metrics, sizes=sizes)
    reference = _model_of(reference)
    reference_metrics = _model_metrics(reference, forget, retain, test, seed, mia_feature)
    gaps = {k: metrics[k] - reference_metrics[k] for k in MODEL_METRICS}
    gaps["param_distance"] = _param_distance(model, reference)
    for name, data in (("forget", forget), ("retain", retain), ("test", test)):
        gaps[f"agreement_{name}"] = agreement(model, reference, data) if len(data) else np.nan
    return Evaluation(metrics=metrics, reference=reference_metrics, gaps=gaps, sizes=sizes)
