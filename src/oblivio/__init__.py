"""oblivio: machine unlearning of records, features and labels.

>>> import oblivio as ob
>>> split = ob.datasets.load("digits")
>>> u = ob.unlearners.create("retrain", ob.models.LogisticRegression(l2=1e-3)).fit(split.train)
>>> result = u.forget(ob.Remove(ids=[3, 17]))

Submodules and names load on first use (PEP 562), so ``import oblivio`` and the command
line's ``--help`` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the names below, for type checkers and linters
    from oblivio import audit, datasets, models, sklearn, unlearners
    from oblivio.data import (
        Dataset,
        Relabel,
        Remove,
        Replace,
        ReplaceFeatures,
        RequestError,
        Split,
    )
    from oblivio.ledger import Ledger
    from oblivio.unlearners import (
        Certificate,
        LoadError,
        UnlearningError,
        UnlearningWarning,
        UnlearnResult,
        load,
    )

_SUBMODULES = ("audit", "datasets", "models", "sklearn", "testing", "unlearners")
_NAMES = {
    "Dataset": "oblivio.data",
    "Relabel": "oblivio.data",
    "Remove": "oblivio.data",
    "Replace": "oblivio.data",
    "ReplaceFeatures": "oblivio.data",
    "RequestError": "oblivio.data",
    "Split": "oblivio.data",
    "Certificate": "oblivio.unlearners",
    "UnlearnResult": "oblivio.unlearners",
    "LoadError": "oblivio.unlearners",
    "UnlearningError": "oblivio.unlearners",
    "UnlearningWarning": "oblivio.unlearners",
    "load": "oblivio.unlearners",
    "Ledger": "oblivio.ledger",
}

__all__ = [
    "Certificate",
    "Dataset",
    "Ledger",
    "LoadError",
    "Relabel",
    "Remove",
    "Replace",
    "ReplaceFeatures",
    "RequestError",
    "Split",
    "UnlearnResult",
    "UnlearningError",
    "UnlearningWarning",
    "audit",
    "datasets",
    "load",
    "models",
    "sklearn",
    "unlearners",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"oblivio.{name}")
    elif name in _NAMES:
        module = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'oblivio' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
