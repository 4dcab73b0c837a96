"""oblivio: machine unlearning of records, features and labels.

>>> import oblivio as ob
>>> split = ob.datasets.load("digits")
>>> u = ob.unlearners.create("retrain", ob.models.LogisticRegression(l2=1e-3)).fit(split.train)
>>> result = u.forget(ob.Remove(ids=[3, 17]))
"""

from oblivio import audit, datasets, models, unlearners
from oblivio.data import Dataset, Relabel, Remove, Replace, ReplaceFeatures, RequestError, Split
from oblivio.unlearners import (
    Certificate,
    LoadError,
    UnlearningError,
    UnlearningWarning,
    UnlearnResult,
    load,
)

__version__ = "0.1.0"

__all__ = [
    "Certificate",
    "Dataset",
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
    "unlearners",
]
