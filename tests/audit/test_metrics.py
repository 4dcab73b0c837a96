"""Basic audit metrics on cases with known answers."""

import numpy as np
import pytest
import torch

from oblivio.audit import accuracy, agreement, gradient_residual, param_distance
from oblivio.data import Dataset
from oblivio.models import LogisticRegression


class FixedModel:
    """Predicts a fixed class per row (first column of X)."""

    l2 = 0.0

    def __init__(self, theta):
        self.theta = torch.as_tensor(theta, dtype=torch.float64)

    def predict(self, X):
        return np.asarray(X)[:, 0].astype(int)


def test_accuracy_and_agreement_known_answers():
    data = Dataset(np.array([[0.0], [1.0], [1.0], [0.0]]), np.array([0, 1, 0, 0]))
    assert accuracy(FixedModel([0.0]), data) == pytest.approx(0.75)
    assert np.isnan(accuracy(FixedModel([0.0]), data.empty()))

    class Ones(FixedModel):
        def predict(self, X):
            return np.ones(len(X), dtype=int)

    assert agreement(FixedModel([0.0]), Ones([0.0]), data) == pytest.approx(0.5)


def test_param_distance_known_answer():
    assert param_distance(FixedModel([0.0, 0.0]), FixedModel([3.0, 4.0])) == pytest.approx(5.0)
    assert param_distance(np.array([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        param_distance(np.zeros(2), np.zeros(3))


def test_gradient_residual_includes_regulariser_and_noise():
    # One record x = 1, y = 1 (label 1), l2 = 1: objective = log(1 + e^-w) + w^2/2 + b w.
    data = Dataset(np.array([[1.0]]), np.array([1]), classes=(0, 1))
    model = LogisticRegression(l2=1.0)
    model.fit(data)  # sets shapes; we then evaluate at chosen points
    model.theta = torch.tensor([0.0])
    # d/dw at 0: -sigmoid(0) + 0 = -0.5
    assert gradient_residual(model, data) == pytest.approx(0.5)
    model.noise = np.array([0.25])
    assert gradient_residual(model, data) == pytest.approx(0.25)
    model.theta = torch.tensor([1.0])
    expected = -1.0 / (1.0 + np.e) + 1.0 + 0.25
    assert gradient_residual(model, data) == pytest.approx(abs(expected))
