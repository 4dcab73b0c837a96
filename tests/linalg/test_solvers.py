"""Inverse-Hessian-vector products and extreme eigenvalues (reference §4, §9)."""

import numpy as np
import pytest
import torch

from oblivio.linalg import (
    SolverError,
    cg_solve,
    cholesky_solve,
    largest_eigenvalue,
    lissa,
    smallest_eigenvalue,
)


def spd(dim: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    """Random symmetric matrix with eigenvalues spread over [low, high]."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (Q * np.linspace(low, high, dim)) @ Q.T


@pytest.fixture
def system():
    rng = np.random.default_rng(1)
    return spd(30, 0.5, 20.0), rng.standard_normal(30)


# -- Cholesky ------------------------------------------------------------------------------
def test_cholesky_solves_spd_system_with_and_without_damping(system):
    A, b = system
    result = cholesky_solve(A, b)
    np.testing.assert_allclose(result.x, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
    assert result.residual < 1e-12
    assert result.info["condition"] == pytest.approx(np.linalg.cond(A, 1), rel=0.5)
    damped = cholesky_solve(torch.from_numpy(A), torch.from_numpy(b), damping=3.0)
    np.testing.assert_allclose(damped.x, np.linalg.solve(A + 3.0 * np.eye(30), b), rtol=1e-10)
    assert not np.allclose(damped.x, result.x)  # damping is not ignored


def test_cholesky_refuses_indefinite_matrix_and_names_the_fix():
    A = spd(20, -2.0, 5.0)
    b = np.ones(20)
    with pytest.raises(SolverError, match=r"not positive definite \(smallest eigenvalue -2"):
        cholesky_solve(A, b)
    with pytest.raises(SolverError, match="pass damping > 2"):
        cholesky_solve(A, b, damping=0.0)
    solved = cholesky_solve(A, b, damping=2.5)  # the suggested remedy works
    np.testing.assert_allclose(solved.x, np.linalg.solve(A + 2.5 * np.eye(20), b), rtol=1e-9)


def test_cholesky_refuses_ill_conditioned_matrix():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((40, 5))
    A = V @ V.T + 1e-13 * np.eye(40)  # rank 5 plus a whisper: positive definite but useless
    with pytest.raises(SolverError, match="ill-conditioned"):
        cholesky_solve(A, np.ones(40))
    assert cholesky_solve(A, np.ones(40), damping=1e-3).residual < 1e-10


def test_cholesky_rejects_bad_shapes_and_values(system):
    A, b = system
    with pytest.raises(ValueError, match="square"):
        cholesky_solve(A[:, :5], b)
    with pytest.raises(ValueError, match="b has 29 entries"):
        cholesky_solve(A, b[:-1])
    with pytest.raises(ValueError, match="damping"):
        cholesky_solve(A, b, damping=-1.0)
    bad = A.copy()
    bad[0, 0] = np.nan
    with pytest.raises(SolverError, match="non-finite"):
        cholesky_solve(bad, b)


# -- CG ------------------------------------------------------------------------------------
def test_cg_agrees_with_cholesky_and_reports_iterations(system):
    A, b = system
    exact = cholesky_solve(A, b, damping=0.1).x
    result = cg_solve(lambda v: torch.from_numpy(A @ v), b, damping=0.1, rtol=1e-10)
    assert result.converged
    assert result.residual <= 1e-9
    assert 1 <= result.iterations <= 60
    assert result.hvp_calls >= result.iterations
    np.testing.assert_allclose(result.x, exact, rtol=1e-8, atol=1e-10)


def test_cg_reports_non_convergence_and_zero_rhs(system):
    A, b = system
    capped = cg_solve(lambda v: A @ v, b, rtol=1e-12, maxiter=2)
    assert not capped.converged
    assert capped.residual > 1e-6
    zero = cg_solve(lambda v: A @ v, np.zeros(30))
    assert zero.converged and zero.hvp_calls == 0 and not zero.x.any()


# -- LiSSA ---------------------------------------------------------------------------------
def test_lissa_converges_to_damped_inverse_with_effective_damping_d_times_s(system):
    A, b = system  # eigenvalues 0.5 .. 20
    result = lissa(
        lambda positions, u: A @ u,
        b,
        n_records=1,
        batch_size=1,
        scale=25.0,
        damping=0.02,
        max_iter=3000,
        patience=3000,
    )
    assert not result.diverged and result.converged
    assert result.info["effective_damping"] == pytest.approx(0.5)
    target = np.linalg.solve(A + 0.5 * np.eye(30), b)  # (H + d s I)^-1 b, not (H + d I)^-1 b
    np.testing.assert_allclose(result.x, target, rtol=1e-6, atol=1e-8)
    wrong = np.linalg.solve(A + 0.02 * np.eye(30), b)
    assert np.linalg.norm(result.x - wrong) > 10 * np.linalg.norm(result.x - target)


def test_lissa_sum_mean_conversion_with_minibatches():
    """H_sum^{-1} g = H_mean^{-1} (g / n) (reference §3), estimated from mini-batch HVPs."""
    rng = np.random.default_rng(3)
    n, dim = 200, 6
    rows = rng.standard_normal((n, dim))
    l2 = 0.5
    H_sum = rows.T @ rows + l2 * n * np.eye(dim)  # sum of per-record Hessians x x^T + l2 I
    g = rng.standard_normal(dim)

    def batch_hvp(positions, u):
        block = rows[positions]
        return block.T @ (block @ u) / len(positions) + l2 * u

    result = lissa(
        batch_hvp,
        g / n,
        n_records=n,
        batch_size=50,
        scale=30.0,
        max_iter=400,
        rounds=4,
        patience=400,
        seed=0,
    )
    target = np.linalg.solve(H_sum, g)
    assert not result.diverged
    assert result.iterations == 1600 and result.hvp_calls == 1600
    assert np.linalg.norm(result.x - target) <= 0.1 * np.linalg.norm(target)
    # applying H_mean^{-1} to g itself overshoots by n (the original code's convention mix)
    assert np.linalg.norm(result.x * n - target) > 50 * np.linalg.norm(target)


def test_lissa_reports_divergence_for_too_small_scale(system):
    A, b = system
    result = lissa(lambda p, u: A @ u, b, n_records=1, batch_size=1, scale=5.0, max_iter=200)
    assert result.diverged and not result.converged
    assert result.iterations <= 10  # stopped by patience, not run to the end


def test_lissa_reports_divergence_on_negative_curvature_without_damping():
    A = spd(10, -1.0, 4.0)
    result = lissa(
        lambda p, u: A @ u,
        np.ones(10),
        n_records=1,
        batch_size=1,
        scale=5.0,
        max_iter=5000,
        patience=5000,
    )
    assert result.diverged  # grows along the negative direction until it is non-finite
    damped = lissa(
        lambda p, u: A @ u,
        np.ones(10),
        n_records=1,
        batch_size=1,
        scale=5.0,
        damping=0.4,
        max_iter=3000,
        patience=3000,
    )
    assert not damped.diverged
    np.testing.assert_allclose(
        damped.x, np.linalg.solve(A + 2.0 * np.eye(10), np.ones(10)), rtol=1e-6
    )


def test_lissa_validates_its_parameters(system):
    A, b = system
    hvp = lambda p, u: A @ u  # noqa: E731
    with pytest.raises(ValueError, match="scale"):
        lissa(hvp, b, n_records=1, batch_size=1, scale=0.0)
    with pytest.raises(ValueError, match="damping"):
        lissa(hvp, b, n_records=1, batch_size=1, scale=1.0, damping=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        lissa(hvp, b, n_records=1, batch_size=0, scale=1.0)


# -- spectrum ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_extreme_eigenvalues(method):
    A = spd(40, -1.5, 9.0, seed=4)
    values = np.linalg.eigvalsh(A)
    top = largest_eigenvalue(lambda v: A @ v, 40, method=method, tol=1e-10, maxiter=5000)
    bottom = smallest_eigenvalue(lambda v: A @ v, 40, method=method, tol=1e-10, maxiter=5000)
    assert top == pytest.approx(values[-1], rel=1e-4)
    assert bottom == pytest.approx(values[0], rel=1e-3)


def test_eigenvalues_of_tiny_operators_and_bad_method():
    A = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert largest_eigenvalue(lambda v: A @ v, 2) == pytest.approx(3.0)
    assert smallest_eigenvalue(lambda v: A @ v, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        largest_eigenvalue(lambda v: A @ v, 2, method="qr")


# -- truncated CG on indefinite and capped systems -------------------------------------------
def quadratic(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
    return 0.5 * float(x @ A @ x) - float(b @ x)


def indefinite_system(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues -1 and 1..8; b mostly on the positive eigenvectors, a little on the
    negative one, so CG makes progress before it meets the negative curvature."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    values = np.concatenate([[-1.0], np.linspace(1.0, 8.0, 11)])
    coefficients = np.concatenate([[0.05], rng.uniform(0.5, 1.5, 11)])
    return (Q * values) @ Q.T, Q @ coefficients


def test_cg_stops_at_negative_curvature_and_returns_a_descent_iterate():
    A, b = indefinite_system()
    result = cg_solve(lambda v: A @ v, b, rtol=1e-10)
    assert result.info["negative_curvature"] == 1.0 and result.info["truncated"] == 1.0
    assert result.info["curvature"] < 0 and not result.converged and not result.diverged
    assert result.iterations >= 1  # it made progress first
    q = quadratic(A, b, result.x)
    assert q < 0  # -x is a descent direction of the quadratic model
    assert result.info["model_change"] == pytest.approx(q, rel=1e-10)
    assert float(b @ result.x) > 0
    # the remedy named in the docstring: damping past |lambda_min| solves the system exactly
    damped = cg_solve(lambda v: A @ v, b, damping=1.5, rtol=1e-10)
    assert damped.converged and damped.info["negative_curvature"] == 0.0
    np.testing.assert_allclose(damped.x, np.linalg.solve(A + 1.5 * np.eye(12), b), rtol=1e-8)


def test_cg_negative_curvature_at_the_first_direction_returns_zero():
    A = -np.eye(5)
    result = cg_solve(lambda v: A @ v, np.ones(5))
    assert result.iterations == 0 and not result.x.any()
    assert result.info["negative_curvature"] == 1.0 and result.info["model_change"] == 0.0


def test_truncated_cg_iterates_decrease_the_quadratic_model_monotonically():
    A = spd(60, 1e-3, 50.0, seed=6)  # condition 5e4: CG needs many iterations
    b = np.random.default_rng(7).standard_normal(60)
    values = []
    for cap in (1, 2, 4, 8, 16):
        result = cg_solve(lambda v: A @ v, b, rtol=1e-12, maxiter=cap)
        assert result.iterations == cap and not result.converged
        assert result.info["truncated"] == 1.0 and result.info["negative_curvature"] == 0.0
        values.append(quadratic(A, b, result.x))
        assert result.info["model_change"] == pytest.approx(values[-1], rel=1e-9)
    assert all(later < earlier for earlier, later in zip(values, values[1:], strict=False))
    optimum = quadratic(A, b, np.linalg.solve(A, b))
    assert values[-1] > optimum  # truncated: not there yet


def test_cholesky_reports_the_model_change(system):
    A, b = system
    result = cholesky_solve(A, b)
    assert result.info["model_change"] == pytest.approx(-0.5 * b @ np.linalg.solve(A, b))
