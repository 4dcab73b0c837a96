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

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from oblivio.audit._constants import CLASSIFIERS, FEATURES, SETTINGS
from oblivio.audit._mia_scores import (
    RocCurve,  # noqa: F401  (importable from here before the split)
    posteriors,  # noqa: F401  (importable from here before the split)
    roc,
    tpr_at_fpr,
)
from oblivio.audit._unlearning_defenses import (
    Defense,
    TemperatureScaled,
    label_only,
    temperature_scaling,
    top_k,
)
from oblivio.audit._unlearning_features import (
    BASELINE,
    _true_confidence,
    build_feature,
    deg_count,
    deg_rate,
    direct_concat,
    direct_diff,
    euclidean_distance,
    make_attack_classifier,
    sorted_concat,
    sorted_diff,
)
from oblivio.audit._unlearning_input import UnlearningAttackInput, collect_posteriors
from oblivio.audit._unlearning_results import UnlearningAttackResult, UnlearningAttackResults
from oblivio.data import Dataset

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
