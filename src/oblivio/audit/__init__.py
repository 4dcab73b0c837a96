"""Audits: metrics against retraining, membership inference, exposure.

Names load on first use (PEP 562) so the command line can build its parser without torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oblivio.audit import exposure
    from oblivio.audit.evaluate import Evaluation, evaluate
    from oblivio.audit.metrics import accuracy, agreement, gradient_residual, param_distance
    from oblivio.audit.mia import (
        AttackInputData,
        AttackResult,
        AttackResults,
        AttackType,
        MIAEfficacy,
        RocCurve,
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
    from oblivio.models import SklearnModel

_WHERE = {
    "Evaluation": "evaluate",
    "evaluate": "evaluate",
    "accuracy": "metrics",
    "agreement": "metrics",
    "gradient_residual": "metrics",
    "param_distance": "metrics",
    "AttackInputData": "mia",
    "AttackResult": "mia",
    "AttackResults": "mia",
    "AttackType": "mia",
    "MIAEfficacy": "mia",
    "RocCurve": "mia",
    "SklearnModel": "mia",  # moved to oblivio.models; kept here for old imports
    "loss_attack_cv": "mia",
    "mia_efficacy": "mia",
    "run_attacks": "mia",
    "run_shadow_attack": "mia",
    "Defense": "unlearning_attack",
    "TemperatureScaled": "unlearning_attack",
    "UnlearningAttackInput": "unlearning_attack",
    "UnlearningAttackResult": "unlearning_attack",
    "UnlearningAttackResults": "unlearning_attack",
    "collect_posteriors": "unlearning_attack",
    "run_unlearning_attack": "unlearning_attack",
    "unlearning_attack": "unlearning_attack",
}
_SUBMODULES = ("command", "evaluate", "exposure", "metrics", "mia", "plots", "unlearning_attack")

__all__ = [
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
    "accuracy",
    "agreement",
    "collect_posteriors",
    "evaluate",
    "exposure",
    "gradient_residual",
    "loss_attack_cv",
    "mia_efficacy",
    "param_distance",
    "run_attacks",
    "run_shadow_attack",
    "run_unlearning_attack",
    "unlearning_attack",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"oblivio.audit.{_WHERE[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"oblivio.audit.{name}")
    else:
        raise AttributeError(f"module 'oblivio.audit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``oblivio.audit`` itself. Two functions share their module's name (``evaluate``,
    ``unlearning_attack``); importing such a submodule makes Python set the package attribute
    to the module, which would hide the function. Keep the function instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("evaluate", "unlearning_attack") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
