"""Basic metrics for judging an unlearned model against a retrained reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from oblivio.data import Dataset
from oblivio.models.base import Model


def _model_of(model_or_unlearner: Any) -> Model:
    return getattr(model_or_unlearner, "model_", model_or_unlearner)


def accuracy(model: Any, data: Dataset) -> float:
    """Share of records in ``data`` whose label ``model`` predicts (nan for empty data)."""
    if len(data) == 0:
        return float("nan")
    return float(np.mean(_model_of(model).predict(data.X) == data.y))


def _theta_of(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().double().ravel()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.float64).ravel())
    return _model_of(value).theta.detach().double().ravel()


def param_distance(a: Any, b: Any) -> float:
    """Euclidean distance ``||theta_a - theta_b||`` between two models (or vectors)."""
    theta_a, theta_b = _theta_of(a), _theta_of(b)
    if theta_a.shape != theta_b.shape:
        raise ValueError(
            f"parameter shapes differ: {tuple(theta_a.shape)} vs {tuple(theta_b.shape)}"
        )
    return float(torch.linalg.vector_norm(theta_a - theta_b))


def agreement(a: Any, b: Any, X: Any) -> float:
    """Share of rows of ``X`` (or of a Dataset's X) on which the two models predict alike."""
    if isinstance(X, Dataset):
        X = X.X
    predictions_a = _model_of(a).predict(X)
    predictions_b = _model_of(b).predict(X)
    if len(predictions_a) == 0:
        return float("nan")
    return float(np.mean(predictions_a == predictions_b))


def gradient_residual(model: Any, data: Dataset) -> float:
    """``||grad objective(theta; data)||``: zero exactly at the optimum on ``data``.

    The objective includes the model's regulariser (``l2 * n / 2 ||theta||^2``) and its
    loss-perturbation term ``b . theta`` when it has one (Guo et al., ICML 2020, Sec. 3).
    """
    model = _model_of(model)
    objective_grad = getattr(model, "objective_grad", None)
    if objective_grad is not None:
        gradient = objective_grad(data)
    else:
        theta = model.theta.detach()
        gradient = model.grad(data) + model.l2 * len(data) * theta
        noise = getattr(model, "noise", None)
        if noise is not None:
            gradient = gradient + torch.as_tensor(noise, dtype=theta.dtype)
    return float(torch.linalg.vector_norm(gradient))
