"""The model protocol every unlearner relies on, and a small shared base class."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from oblivio.data import Dataset


@runtime_checkable
class Model(Protocol):
    """What unlearners need from a model.

    Conventions (everywhere in oblivio): ``loss`` is the **sum** of per-record losses with no
    regulariser; ``l2`` is per record, so the objective on n records is
    ``loss + l2 * n / 2 * ||theta||^2 + b . theta`` where ``b`` is an optional
    loss-perturbation vector (Guo et al., ICML 2020, Eq. 2).
    """

    l2: float

    def fit(self, data: Dataset, *, init: torch.Tensor | None = None) -> Model: ...

    def predict_proba(self, X: Any) -> np.ndarray: ...

    def predict(self, X: Any) -> np.ndarray: ...

    @property
    def theta(self) -> torch.Tensor: ...

    def loss(self, data: Dataset, theta: torch.Tensor | None = None) -> torch.Tensor: ...

    def grad(self, data: Dataset, theta: torch.Tensor | None = None) -> torch.Tensor: ...

    def hvp(
        self, data: Dataset, v: torch.Tensor, theta: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def objective(self, data: Dataset, theta: torch.Tensor | None = None) -> torch.Tensor: ...

    def clone(self) -> Model: ...

    def get_params(self) -> dict[str, Any]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class NotFittedError(RuntimeError):
    """A model or unlearner was used before ``fit``/``attach``."""


class BaseModel:
    """Shared plumbing: hyper-parameters from ``__init__``, ``clone``, ``predict``."""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments of this model (read back from same-named attributes)."""
        signature = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        }

    def clone(self):
        """An unfitted copy with the same hyper-parameters (and seed)."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class (index into ``Dataset.classes``)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def objective(self, data: Dataset, theta: torch.Tensor | None = None) -> torch.Tensor:
        """``loss + l2 * n / 2 * ||theta||^2 + b . theta`` (sum convention)."""
        theta = self.theta if theta is None else theta
        value = self.loss(data, theta) + 0.5 * self.l2 * len(data) * torch.sum(theta * theta)
        noise = getattr(self, "noise", None)
        if noise is not None:
            value = value + torch.dot(torch.as_tensor(noise, dtype=theta.dtype), theta)
        return value

    def __repr__(self) -> str:
        params = ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items() if not hasattr(v, "shape")
        )
        return f"{type(self).__name__}({params})"
