"""Unlearning methods behind one base class and a registry.

``create(name, model, **options)`` builds a method by name; ``available()`` lists them.
"""

from oblivio.unlearners.base import (
    Certificate,
    Outcome,
    Unlearner,
    UnlearnResult,
    available,
    create,
    get,
    register,
)
from oblivio.unlearners.retrain import Retrain

__all__ = [
    "Certificate",
    "Outcome",
    "Retrain",
    "UnlearnResult",
    "Unlearner",
    "available",
    "create",
    "get",
    "register",
]
