"""DP feature extractor (Opacus) under certified removal: a tiny run, and the composition."""

import math

import numpy as np
import pytest
import torch

from oblivio.data import Dataset, Remove
from oblivio.models import LogisticRegression
from oblivio.unlearners import CertifiedRemoval

pytest.importorskip("opacus")

from oblivio.unlearners.dp_features import (  # noqa: E402
    DPFeatureExtractor,
    combined_guarantee,
)


@pytest.fixture(scope="module")
def images(digits_split):
    train = digits_split.train
    keep = np.flatnonzero(np.isin(train.y, [3, 8]))[:240]
    part = train.take(keep)
    y = (part.y == 8).astype(np.int64)
    return Dataset(X=part.dense(), y=y, ids=part.ids, classes=(3, 8), name="digits-3-8")


def test_composition_golden_numbers():
    # group privacy: T eps_DP and T e^{(T-1) eps_DP} delta_DP, plus the head's (eps, delta)
    eps, delta = combined_guarantee(0.1, 1e-5, 1.0, 1e-4, n_removed=10)
    assert eps == pytest.approx(2.0)
    assert delta == pytest.approx(10 * math.exp(0.9) * 1e-5 + 1e-4)
    assert combined_guarantee(0.1, 1e-5, 1.0, 1e-4, n_removed=0) == (1.0, 1e-4)
    with pytest.raises(ValueError, match="n_removed"):
        combined_guarantee(0.1, 1e-5, 1.0, 1e-4, n_removed=-1)


def test_tiny_dp_run_feeds_certified_removal(images):
    torch.manual_seed(0)
    extractor = DPFeatureExtractor(
        image_shape=(1, 8, 8),
        epochs=2,
        batch_size=60,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        seed=0,
    )
    extractor.fit(images)
    assert 0 < extractor.epsilon_ < float("inf")
    features = extractor.transform(images)
    assert np.array_equal(features.ids, images.ids)
    np.testing.assert_allclose(np.linalg.norm(features.X, axis=1), 1.0, atol=1e-9)
    assert features.X.shape[1] == extractor.n_features_ == 16 * 2 * 2

    u = CertifiedRemoval(LogisticRegression(l2=1e-2), sigma=1.0, seed=0).fit(features)
    result = u.forget(Remove(ids=features.ids[:3]))
    assert result.certificate.valid
    residual = float(torch.linalg.vector_norm(u.model_.objective_grad(u.train_)))
    assert residual <= result.certificate.residual_bound
    eps, delta = extractor.guarantee(result.certificate, n_removed=3)
    assert eps == pytest.approx(3 * extractor.epsilon_ + result.certificate.epsilon)
    assert delta > result.certificate.delta

    # more noise, smaller epsilon (the accountant is wired to the run's options)
    quieter = DPFeatureExtractor(
        image_shape=(1, 8, 8),
        epochs=2,
        batch_size=60,
        noise_multiplier=4.0,
        max_grad_norm=1.0,
        seed=0,
    ).fit(images)
    assert quieter.epsilon_ < extractor.epsilon_


def test_bad_options(images):
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPFeatureExtractor(noise_multiplier=0.0).fit(images)
    with pytest.raises(RuntimeError, match="not fitted"):
        DPFeatureExtractor().transform(images)
