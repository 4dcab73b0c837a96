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

from collections.abc import Iterable

from oblivio.audit._mia_data import (
    THRESHOLD_ATTACKS,
    AttackInputData,
    AttackResult,
    AttackResults,
    AttackType,
)
from oblivio.audit._mia_scores import (
    RocCurve,
    balanced_accuracy,
    entropy,
    fit_clone,
    modified_entropy,
    per_record_loss,
    posteriors,
    roc,
    tpr_at_fpr,
)
from oblivio.audit._mia_trained import (
    MIAEfficacy,
    loss_attack_cv,
    mia_efficacy,
    run_shadow_attack,
)
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
