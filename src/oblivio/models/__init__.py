"""Models: the protocol unlearners rely on, logistic regression, and the torch adapter."""

from oblivio.models.base import BaseModel, Model, NotFittedError
from oblivio.models.logistic import ConvergenceWarning, LogisticRegression

__all__ = ["BaseModel", "ConvergenceWarning", "LogisticRegression", "Model", "NotFittedError"]
