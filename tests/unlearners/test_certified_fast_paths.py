"""Certified removal's fast paths (fit, sparse CG) against plain float64 references."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.special import expit, log_expit

from oblivio.data import Dataset, Remove
from oblivio.models import LogisticRegression
from oblivio.unlearners import (
    CertifiedRemoval,
    _certified_cache,
    _certified_numerics,
    _certified_state,
)
from oblivio.unlearners._certified_numerics import _weighted_gram
from oblivio.unlearners._passes import logistic_pass


def random_data(seed: int, n: int, d: int, k: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.standard_normal((k, d))[y] * 1.5 + rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return Dataset(X=X, y=y, ids=np.arange(n))


@pytest.mark.parametrize("block", [7, 64, 10_000])
def test_logistic_pass_equals_the_plain_loss_and_gradient(block):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 9))
    W = rng.standard_normal((3, 9)) * 4  # large margins of both signs
    S = np.where(rng.random((300, 3)) < 0.4, 1.0, -1.0)
    margins = S * (X @ W.T)
    loss, grad = logistic_pass(X, W, S, block=block)
    assert loss == pytest.approx(-log_expit(margins).sum(), rel=1e-13)
    np.testing.assert_allclose(grad, (X.T @ (-S * expit(-margins))).T, rtol=1e-12, atol=1e-12)
    loss32, grad32 = logistic_pass(X.astype(np.float32), W, S, block=block)
    assert grad32.dtype == np.float64
    assert loss32 == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(grad32, grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["none", "positive", "some_zero"])
def test_blocked_weighted_gram_equals_the_direct_product(kind, monkeypatch):
    monkeypatch.setattr(_certified_numerics, "_GRAM_BLOCK", 16)  # many blocks
    rng = np.random.default_rng(1)
    X = rng.standard_normal((101, 7))
    weights = {"none": None, "positive": rng.random(101), "some_zero": rng.random(101)}[kind]
    if kind == "some_zero":
        weights[rng.random(101) < 0.5] = 0.0
    expected = X.T @ X if weights is None else X.T @ (X * weights[:, None])
    gram = _weighted_gram(X, weights)
    np.testing.assert_allclose(gram, expected, rtol=1e-13, atol=1e-13)
    assert np.array_equal(gram, gram.T)


def test_certified_fit_reaches_the_optimum_and_caches_exact_hessians(monkeypatch):
    data = random_data(2, 500, 10, 3)
    u = CertifiedRemoval(LogisticRegression(l2=1e-2, multi_class="ovr"), sigma=1.0, seed=0)
    coarse = {}
    original = _certified_state.StateMixin._coarse_fit

    def spy(self, *args):
        coarse["W0"], iterations = original(self, *args)
        return coarse["W0"], iterations

    monkeypatch.setattr(_certified_state.StateMixin, "_coarse_fit", spy)
    u.fit(data)
    model = u.model_
    assert float(torch.linalg.vector_norm(model.objective_grad(data))) <= model.tol
    reference = LogisticRegression(l2=1e-2, multi_class="ovr", noise=model.noise).fit(data)
    np.testing.assert_allclose(model.coef_, reference.coef_, atol=1e-8)
    # the polish did work: the float32 coarse point is not the optimum
    assert np.abs(coarse["W0"] - model.coef_).max() > 1e-6
    X = data.X
    for k in range(3):  # H~ = X^T diag(cf) X + lam n I with the recorded curvatures
        cf = u._cache["cf"][:, k]
        assert np.all(cf > 0)
        expected = X.T @ (X * cf[:, None]) + 1e-2 * len(data) * np.eye(10)
        np.testing.assert_allclose(u._cache["H"][k], expected, rtol=1e-12, atol=1e-12)
    assert u.gradient_residual() <= u.budget_used_


def hashed_data(seed: int, n: int, d: int) -> Dataset:
    """Zipf-distributed tokens hashed into ``d`` columns (frequent head, long tail)."""
    rng = np.random.default_rng(seed)
    cols = (rng.zipf(1.3, size=n * 12) * 2654435761) % d
    X = sp.csr_matrix((np.ones(n * 12), cols, np.arange(0, n * 12 + 1, 12)), shape=(n, d))
    X.sum_duplicates()
    X = sp.diags(1.0 / np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())) @ X
    logits = 3.0 * (X @ rng.standard_normal(d))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    return Dataset(X=X.tocsr(), y=y, ids=np.arange(n))


def test_sparse_cg_head_block_preconditioner_and_float32_products(monkeypatch):
    data = hashed_data(0, 1500, 300)
    options = {"sigma": 1.0, "epsilon": 50.0, "seed": 0, "verify": True}
    model = LogisticRegression(l2=1e-3)
    exact = CertifiedRemoval(model, hessian="exact", **options).fit(data)
    start = exact.model_.coef_.copy()
    ids = [3, 77, 512]
    reference = [exact.forget(Remove(ids=[i])).diagnostics["step_bound"] for i in ids]
    iterations = {}
    for head in (0, 16):  # 0: plain Jacobi
        monkeypatch.setattr(_certified_cache, "_CG_HEAD", head)
        u = CertifiedRemoval(model, hessian="cg", **options).fit(data)
        squares, single = u._sparse_copies(u._X)
        assert single.dtype == np.float32 and np.shares_memory(single.indices, u._X.indices)
        np.testing.assert_array_equal(squares.toarray(), u._X.multiply(u._X).toarray())
        iterations[head] = 0
        for i, bound in zip(ids, reference, strict=True):
            result = u.forget(Remove(ids=[i]))
            assert result.diagnostics["gradient_residual"] <= result.certificate.residual_bound
            assert result.diagnostics["step_bound"] <= 1.05 * bound + 1e-9
            iterations[head] += result.diagnostics["solver_iterations"]
        moved = np.linalg.norm(exact.model_.coef_ - start)
        assert moved > 0
        assert np.linalg.norm(u.model_.coef_ - exact.model_.coef_) <= 1e-3 * moved
    assert iterations[16] < iterations[0]
