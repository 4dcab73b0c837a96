"""Models: the protocol unlearners rely on, logistic regression, and the torch adapter."""

from oblivio.models.base import BaseModel, Model, NotFittedError
from oblivio.models.logistic import ConvergenceWarning, LogisticRegression
from oblivio.models.nets import MLP, CharLSTM, SmallCNN
from oblivio.models.torch_model import TorchModel

__all__ = [
    "MLP",
    "BaseModel",
    "CharLSTM",
    "ConvergenceWarning",
    "LogisticRegression",
    "Model",
    "NotFittedError",
    "SmallCNN",
    "TorchModel",
]
