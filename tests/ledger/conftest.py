"""Small ledgers on digits 3 vs 8 (n = 268): every request takes milliseconds."""

import pytest

import oblivio as ob


@pytest.fixture
def retrain_unlearner(binary_data):
    return ob.unlearners.create("retrain", ob.models.LogisticRegression(l2=1e-3)).fit(binary_data)


@pytest.fixture
def certified_unlearner(binary_data):
    model = ob.models.LogisticRegression(l2=1e-3)
    return ob.unlearners.create("certified", model, epsilon=1.0, sigma=1.0, seed=0).fit(binary_data)
