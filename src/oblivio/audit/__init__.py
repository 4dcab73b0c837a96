"""Audits: metrics against retraining, membership inference, exposure."""

from oblivio.audit.evaluate import Evaluation, evaluate
from oblivio.audit.metrics import accuracy, agreement, gradient_residual, param_distance
from oblivio.audit.mia import (
    AttackInputData,
    AttackResult,
    AttackResults,
    AttackType,
    MIAEfficacy,
    RocCurve,
    SklearnModel,
    loss_attack_cv,
    mia_efficacy,
    run_attacks,
    run_shadow_attack,
)
from oblivio.audit.unlearning_attack import (
    Defense,
    TemperatureScaled,
    UnlearningAttackInput,
    UnlearningAttackResult,
    UnlearningAttackResults,
    collect_posteriors,
    run_unlearning_attack,
    unlearning_attack,
)

__all__ = ["accuracy", "agreement", "gradient_residual", "param_distance"]

__all__ += [
    "AttackInputData",
    "AttackResult",
    "AttackResults",
    "AttackType",
    "Defense",
    "Evaluation",
    "MIAEfficacy",
    "RocCurve",
    "SklearnModel",
    "TemperatureScaled",
    "UnlearningAttackInput",
    "UnlearningAttackResult",
    "UnlearningAttackResults",
    "collect_posteriors",
    "evaluate",
    "loss_attack_cv",
    "mia_efficacy",
    "run_attacks",
    "run_shadow_attack",
    "run_unlearning_attack",
    "unlearning_attack",
]
