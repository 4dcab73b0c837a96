"""Spectral norms: agreement with numpy's exact 2-norm, upper-bound guarantees."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.linalg import spectral_norm, spectral_norm_bound


@pytest.fixture
def matrix(rng):
    return rng.standard_normal((60, 25))


@pytest.mark.parametrize("method", ["auto", "dense", "lanczos", "power"])
def test_methods_match_numpy(matrix, method):
    exact = np.linalg.norm(matrix, 2)
    assert spectral_norm(matrix, method=method) == pytest.approx(exact, rel=1e-7)


@pytest.mark.parametrize("method", ["dense", "lanczos", "power"])
def test_sparse_and_wide(rng, method):
    dense = rng.standard_normal((15, 40)) * (rng.random((15, 40)) < 0.3)
    exact = np.linalg.norm(dense, 2)
    assert spectral_norm(sp.csr_matrix(dense), method=method) == pytest.approx(exact, rel=1e-7)
    assert spectral_norm(dense.T, method=method) == pytest.approx(exact, rel=1e-7)


def test_bound_dense_route_is_tight_and_above(matrix):
    exact = np.linalg.norm(matrix, 2)
    bound = spectral_norm_bound(matrix)
    assert exact <= bound <= exact * (1 + 1e-9)


def test_bound_from_a_given_gram_matrix(matrix):
    exact = np.linalg.norm(matrix, 2)
    bound = spectral_norm_bound(matrix, gram=matrix.T @ matrix)
    assert exact <= bound <= exact * (1 + 1e-9)


def test_bound_cheap_route_is_a_true_upper_bound(rng):
    X = rng.standard_normal((50, 30))
    exact = np.linalg.norm(X, 2)
    cheap = spectral_norm_bound(X, dense_limit=10)
    assert cheap >= exact
    assert cheap <= np.linalg.norm(X) + 1e-12  # never worse than the Frobenius norm
    cheap_sparse = spectral_norm_bound(sp.csr_matrix(X), dense_limit=10)
    assert cheap_sparse == pytest.approx(cheap)


def test_power_iteration_is_an_estimate_from_below(rng):
    X = rng.standard_normal((40, 20))
    few = spectral_norm(X, method="power", max_iter=2)
    assert few <= np.linalg.norm(X, 2) * (1 + 1e-12)


def test_empty_and_bad_method(matrix):
    assert spectral_norm(np.zeros((0, 3))) == 0.0
    assert spectral_norm_bound(np.zeros((0, 3))) == 0.0
    assert spectral_norm(np.zeros((4, 3))) == 0.0
    with pytest.raises(ValueError, match="'nope'"):
        spectral_norm(matrix, method="nope")


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_bound_never_below_the_norm(n, d, seed):
    X = np.random.default_rng(seed).standard_normal((n, d))
    exact = np.linalg.norm(X, 2)
    assert spectral_norm_bound(X) >= exact
    assert spectral_norm_bound(X, dense_limit=0) >= exact * (1 - 1e-12)
