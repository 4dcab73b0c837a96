"""Models: the protocol unlearners rely on, logistic regression, and the torch adapter."""

from oblivio.models.base import BaseModel, Model, NotFittedError
from oblivio.models.logistic import ConvergenceWarning, LogisticRegression
from oblivio.models.nets import MLP, CharLSTM, SmallCNN
from oblivio.models.sklearn_adapter import PipelineModel, SklearnModel, from_sklearn
from oblivio.models.torch_model import TorchModel

__all__ = [
    "MLP",
    "BaseModel",
    "CharLSTM",
    "ConvergenceWarning",
    "LogisticRegression",
    "Model",
    "NotFittedError",
    "PipelineModel",
    "SklearnModel",
    "SmallCNN",
    "TorchModel",
    "from_sklearn",
]
