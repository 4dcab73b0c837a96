"""LogisticRegression: agreement with scikit-learn, derivatives, optimality, sparse input."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import oblivio as ob
from oblivio.data import Dataset
from oblivio.models import LogisticRegression, NotFittedError


def _subset(data: Dataset, n_classes: int) -> Dataset:
    keep = np.flatnonzero(data.y < n_classes)
    return Dataset(data.X[keep], data.y[keep], data.ids[keep], classes=data.classes[:n_classes])


@pytest.mark.parametrize("n_classes", [2, 10])
def test_matches_scikit_learn_on_equivalent_objective(digits_split, n_classes):
    train = _subset(digits_split.train, n_classes)
    l2 = 1e-3
    ours = LogisticRegression(l2=l2).fit(train)
    theirs = SkLogisticRegression(
        C=1.0 / (l2 * len(train)), fit_intercept=False, tol=1e-12, max_iter=20000
    ).fit(train.X, train.y)
    test = _subset(digits_split.test, n_classes)
    np.testing.assert_array_equal(ours.predict(test.X), theirs.predict(test.X))
    np.testing.assert_allclose(ours.predict_proba(test.X), theirs.predict_proba(test.X), atol=1e-5)


@pytest.mark.parametrize("multi_class", ["auto", "ovr"])
@pytest.mark.parametrize("intercept", [False, True])
def test_solved_to_gradient_tolerance(digits_split, multi_class, intercept):
    train = digits_split.train
    model = LogisticRegression(l2=1e-4, multi_class=multi_class, fit_intercept=intercept)
    model.fit(train)
    assert ob.audit.gradient_residual(model, train) <= 1e-8


def _finite_difference_checks(model, data, rng):
    theta = model.theta + 0.1 * torch.from_numpy(rng.standard_normal(model.n_params))
    direction = torch.from_numpy(rng.standard_normal(model.n_params))
    step = 1e-6
    numeric = (
        model.objective(data, theta + step * direction)
        - model.objective(data, theta - step * direction)
    ) / (2 * step)
    analytic = torch.dot(model.objective_grad(data, theta), direction)
    assert float(numeric) == pytest.approx(float(analytic), rel=1e-6, abs=1e-6)
    loss_numeric = (
        model.loss(data, theta + step * direction) - model.loss(data, theta - step * direction)
    ) / (2 * step)
    assert float(loss_numeric) == pytest.approx(
        float(torch.dot(model.grad(data, theta), direction)), rel=1e-6, abs=1e-6
    )
    grad_numeric = (
        model.objective_grad(data, theta + step * direction)
        - model.objective_grad(data, theta - step * direction)
    ) / (2 * step)
    hvp = model.hvp(data, direction, theta)
    torch.testing.assert_close(hvp, grad_numeric, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.hessian(data, theta) @ direction, hvp, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("multi_class", ["auto", "ovr", "multinomial"])
def test_grad_and_hvp_match_finite_differences(digits_split, rng, multi_class):
    data = _subset(digits_split.train, 3 if multi_class != "auto" else 2).take(np.arange(120))
    model = LogisticRegression(l2=1e-2, multi_class=multi_class, fit_intercept=True)
    model.fit(data)
    model.noise = rng.standard_normal(model.n_params)
    _finite_difference_checks(model, data, rng)


def test_sparse_and_dense_agree(digits_split):
    data = _subset(digits_split.train, 2)
    sparse = Dataset(sp.csr_matrix(data.X), data.y, data.ids, classes=data.classes)
    dense_model = LogisticRegression(l2=1e-3, fit_intercept=True).fit(data)
    sparse_model = LogisticRegression(l2=1e-3, fit_intercept=True).fit(sparse)
    torch.testing.assert_close(dense_model.theta, sparse_model.theta, rtol=0, atol=1e-7)
    torch.testing.assert_close(
        dense_model.hessian(data), sparse_model.hessian(sparse), rtol=1e-12, atol=1e-10
    )


def test_noise_shifts_the_optimum(binary_data, rng):
    plain = LogisticRegression(l2=1e-3).fit(binary_data)
    noise = rng.standard_normal(plain.n_params)
    noisy = LogisticRegression(l2=1e-3, noise=noise).fit(binary_data)
    assert ob.audit.param_distance(plain, noisy) > 1e-3
    assert ob.audit.gradient_residual(noisy, binary_data) <= 1e-8
    # Without the noise term in the gradient the noisy optimum is not stationary.
    assert (
        float(torch.linalg.vector_norm(noisy.objective_grad(binary_data) - torch.from_numpy(noise)))
        > 1e-3
    )


def test_warm_start_reaches_the_same_optimum(binary_data):
    cold = LogisticRegression(l2=1e-3).fit(binary_data)
    subset = binary_data.drop(binary_data.ids[:10])
    warm = LogisticRegression(l2=1e-3).fit(subset, init=cold.theta)
    fresh = LogisticRegression(l2=1e-3).fit(subset)
    assert ob.audit.param_distance(warm, fresh) < 1e-8
    assert ob.audit.param_distance(cold, fresh) > 1e-4


def test_bad_parameters_and_unfitted_use(binary_data):
    with pytest.raises(ValueError, match="l2"):
        LogisticRegression(l2=0.0).fit(binary_data)
    with pytest.raises(ValueError, match="multi_class"):
        LogisticRegression(multi_class="softmax").fit(binary_data)
    with pytest.raises(ValueError, match="noise has 3 entries"):
        LogisticRegression(noise=np.zeros(3)).fit(binary_data)
    with pytest.raises(NotFittedError):
        LogisticRegression().theta  # noqa: B018
    model = LogisticRegression().fit(binary_data)
    with pytest.raises(ValueError, match="theta must have"):
        model.theta = torch.zeros(3)


def test_state_round_trip_and_clone(binary_data):
    model = LogisticRegression(l2=1e-3, fit_intercept=True).fit(binary_data)
    copy = model.clone()
    assert not copy.is_fitted
    copy.set_state(model.get_state())
    np.testing.assert_array_equal(
        copy.predict_proba(binary_data.X), model.predict_proba(binary_data.X)
    )
