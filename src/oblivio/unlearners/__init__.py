"""Unlearning methods behind one base class and a registry.

``create(name, model, **options)`` builds a method by name; ``available()`` lists them.
"""

from oblivio.unlearners.base import (
    Certificate,
    LoadError,
    Outcome,
    Unlearner,
    UnlearningError,
    UnlearningWarning,
    UnlearnResult,
    available,
    create,
    get,
    load,
    register,
)
from oblivio.unlearners.certified import CertifiedRemoval
from oblivio.unlearners.deletion import SCRUB, L1Sparse, NegGradPlus
from oblivio.unlearners.influence import FirstOrder, SecondOrder
from oblivio.unlearners.instance import FineTune, GradientAscent, RandomLabels
from oblivio.unlearners.l2ul import L2UL
from oblivio.unlearners.margin_match import MarginMatch
from oblivio.unlearners.retrain import Retrain
from oblivio.unlearners.salun import SalUn
from oblivio.unlearners.sisa import SISA, CheckpointError, SISAEnsemble

__all__ = [
    "Certificate",
    "CertifiedRemoval",
    "LoadError",
    "FirstOrder",
    "FineTune",
    "GradientAscent",
    "L2UL",
    "L1Sparse",
    "MarginMatch",
    "NegGradPlus",
    "SalUn",
    "SCRUB",
    "RandomLabels",
    "SecondOrder",
    "Outcome",
    "Retrain",
    "SISA",
    "SISAEnsemble",
    "CheckpointError",
    "UnlearnResult",
    "Unlearner",
    "UnlearningError",
    "UnlearningWarning",
    "available",
    "create",
    "get",
    "load",
    "register",
]
