"""Certified removal at scale: batch modes, threaded and memory-mapped passes."""

import numpy as np
import pytest
import torch

from oblivio.data import Dataset, Remove
from oblivio.models import LogisticRegression
from oblivio.unlearners import CertifiedRemoval, _certified_batch
from oblivio.unlearners._passes import BLOCK, fused_pass, row_ranges


def random_data(seed: int, n: int, d: int, k: int) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 1.5
    y = np.arange(n) % k
    X = centers[y] + rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X *= rng.uniform(0.5, 1.0, size=(n, 1))
    return Dataset(X=X, y=y, ids=np.arange(n))


def true_residual(u) -> float:
    return float(torch.linalg.vector_norm(u.model_.objective_grad(u.train_)))


@pytest.fixture(scope="module")
def three_classes():
    return random_data(3, 600, 12, 3)


def _fitted(data, **options):
    model = LogisticRegression(l2=1e-2, multi_class="ovr")
    return CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0, verify=True, **options).fit(
        data
    )


def _spend(data, ids, **options):
    u = _fitted(data, **options)
    before = u.budget_used_
    result = u.forget(Remove(ids=ids))
    assert not result.retrained
    assert true_residual(u) <= result.certificate.residual_bound
    return result.diagnostics["steps"], u.budget_used_ - before, u


@pytest.mark.parametrize("mixed", [False, True])
def test_batch_modes_steps_budgets_and_auto_choice(three_classes, mixed):
    # records of one class: similar gradients, the joint step costs more budget than m
    # single steps; records of all classes: their gradients cancel and the joint step wins
    ids = three_classes.ids[:12] if mixed else three_classes.ids[three_classes.y == 0][:12]
    seq_steps, seq_cost, seq = _spend(three_classes, ids, batch="sequential")
    joint_steps, joint_cost, joint = _spend(three_classes, ids, batch="joint")
    auto_steps, auto_cost, _ = _spend(three_classes, ids, batch="auto")
    assert (seq_steps, joint_steps) == (12, 1)
    if mixed:
        assert joint_cost < seq_cost and auto_steps == 1
    else:
        assert joint_cost > 2 * seq_cost > 0 and auto_steps == 12
    assert auto_cost == pytest.approx(min(seq_cost, joint_cost), rel=1e-6)
    # both land near retraining, far nearer than the original model is
    original = _fitted(three_classes).model_.coef_
    gap = np.linalg.norm(original - seq.model_.coef_)
    assert gap > 0 and np.linalg.norm(joint.model_.coef_ - seq.model_.coef_) < 0.2 * gap
    assert _spend(three_classes, ids, batch=True)[0] == 1
    assert _spend(three_classes, ids, batch=False)[0] == 12


def test_auto_batch_fits_the_time_limit(three_classes, monkeypatch):
    ids = three_classes.ids[three_classes.y == 0][:20]
    assert _spend(three_classes, ids, batch="auto", time_limit=1e6)[0] == 20
    # a fake clock that advances 1 s per reading: about one reading per step
    clock = iter(range(1000))
    monkeypatch.setattr(_certified_batch, "_clock", lambda: next(clock))
    steps, cost, _ = _spend(three_classes, ids, batch="auto", time_limit=8)
    assert 3 <= steps <= 10 and cost > 0
    steps, _, _ = _spend(three_classes, ids, batch="auto", time_limit=0.1)
    assert steps == 1  # no time for more than one step: the joint one


def test_threaded_pass_matches_the_serial_pass_and_stays_rigorous(three_classes):
    serial = _fitted(three_classes)
    threaded = _fitted(three_classes, n_jobs=2)
    for record in three_classes.ids[:6]:
        a = serial.forget(Remove(ids=[record]))
        b = threaded.forget(Remove(ids=[record]))
        assert true_residual(threaded) <= b.certificate.residual_bound
        assert b.diagnostics["step_bound"] == pytest.approx(a.diagnostics["step_bound"], rel=1e-3)
    assert np.allclose(serial.model_.coef_, threaded.model_.coef_, atol=1e-9)


@pytest.mark.parametrize("K", [1, 4])
def test_fused_pass_on_threads_and_memmap_equals_plain_products(tmp_path, K):
    rng = np.random.default_rng(0)
    n, d = 3 * BLOCK + 17, 9
    X = rng.standard_normal((n, d)).astype(np.float32)
    s = rng.standard_normal((K, d))
    w = rng.random((n, K))
    A_ref = X.astype(np.float64) @ s.T
    G_ref = (X.astype(np.float64).T @ (w * A_ref)).T
    path = tmp_path / "X.f32"
    X.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        for source, workers, parts in ((X, None, 1), (X, pool, 3), (mapped, None, 1)):
            A, G = fused_pass(source, s, w, workers=workers, parts=parts)
            assert A.dtype == np.float32 and G.dtype == np.float64
            assert np.allclose(A, A_ref, atol=1e-4) and np.allclose(G, G_ref, rtol=1e-4)
    ranges = row_ranges(n, 3)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(high == low for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch", "both"),
        ("batch", None),
        ("time_limit", 0.0),
        ("time_limit", float("nan")),
        ("n_jobs", 0),
        ("n_jobs", 1.5),
    ],
)
def test_bad_scale_options_are_rejected_by_name(three_classes, option, value):
    u = CertifiedRemoval(LogisticRegression(), **{option: value})
    with pytest.raises(ValueError, match=option):
        u.fit(three_classes)


def sparse_data(seed: int, n: int, d: int, k: int = 2) -> Dataset:
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=min(1.0, 20 / d), random_state=seed, format="csr")
    y = rng.integers(0, k, size=n)
    signal = sp.csr_matrix((np.ones(n), (np.arange(n), y * 7 % d)), shape=(n, d))
    X = (X + 2.0 * signal).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.diags(1.0 / norms) @ X
    return Dataset(X=X.tocsr(), y=y, ids=np.arange(n))


@pytest.mark.parametrize(("d", "hessian"), [(40, "cg"), (5000, "amortized")])
def test_matrix_free_cg_mode_is_rigorous_and_close_to_exact(d, hessian):
    data = sparse_data(0, 300, d)
    model = LogisticRegression(l2=1e-2)
    u = CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0, hessian=hessian, verify=True).fit(
        data
    )
    assert u._solver_mode() == "cg" and u._cache is None
    assert (u._gram is None) == (d > 4096)  # no d x d matrix at all for large d
    reference = None
    if d <= 100:
        reference = CertifiedRemoval(
            model, sigma=1.0, epsilon=50.0, seed=0, hessian="exact", verify=True
        ).fit(data)
    rng = np.random.default_rng(1)
    for _ in range(5):
        ids = rng.choice(u.train_.ids, size=1)
        result = u.forget(Remove(ids=ids))
        assert not result.retrained and result.diagnostics["solver_iterations"] > 0
        assert true_residual(u) <= result.certificate.residual_bound
        assert result.diagnostics["step_bound"] > 0
        if reference is not None:
            other = reference.forget(Remove(ids=ids))
            assert result.diagnostics["step_bound"] <= 2 * other.diagnostics["step_bound"]
    # non-vacuous: the removals moved the model towards retraining on what is left
    retrained = LogisticRegression(l2=1e-2, noise=u.model_.noise).fit(u.train_)
    original = CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0, hessian=hessian).fit(data)
    before = np.linalg.norm(original.model_.coef_ - retrained.coef_)
    after = np.linalg.norm(u.model_.coef_ - retrained.coef_)
    assert before > 0 and after < 0.1 * before
    if reference is not None:
        assert np.allclose(u.model_.coef_, reference.model_.coef_, atol=1e-6)


def test_jacobi_preconditioned_cg_solves_and_needs_fewer_iterations():
    from oblivio.linalg.solvers import cg_solve

    rng = np.random.default_rng(0)
    scales = np.logspace(0, 3, 60)
    Q = np.linalg.qr(rng.standard_normal((60, 60)))[0]
    H = np.diag(scales) + 0.05 * (Q @ np.diag(rng.random(60)) @ Q.T)
    b = rng.standard_normal(60)
    plain = cg_solve(lambda v: H @ v, b, rtol=1e-10, maxiter=2000)
    inverse = 1.0 / np.diag(H)
    jacobi = cg_solve(
        lambda v: H @ v, b, rtol=1e-10, maxiter=2000, preconditioner=lambda v: inverse * v
    )
    exact = np.linalg.solve(H, b)
    assert plain.converged and jacobi.converged
    assert np.allclose(jacobi.x, exact, rtol=1e-7, atol=1e-9)
    assert jacobi.iterations < plain.iterations


@pytest.mark.parametrize("intercept", [False, True])
def test_float32_memmap_dataset_gives_the_same_certified_removal(tmp_path, intercept):
    """Out of core: a memory-mapped float32 Dataset, blocked float64 products, same maths."""
    from oblivio.data import blocked
    from oblivio.data.blocked import BlockedRows, memmap_dataset

    data = random_data(5, 500, 6, 3)
    X32 = data.X.astype(np.float32)
    rounded = Dataset(X=X32.astype(np.float64), y=data.y, ids=data.ids)  # same values
    chunks = ((X32[i : i + 128], data.y[i : i + 128]) for i in range(0, 500, 128))
    mapped = memmap_dataset(tmp_path / "train.npy", chunks, 500, 6, ids=data.ids)
    assert isinstance(mapped.X, np.ndarray) and mapped.X.dtype == np.float32
    assert not (tmp_path / ".train.npy.partial").exists()
    old_rows = blocked.ROWS
    blocked.ROWS = 64  # many blocks
    try:
        units = []
        for train in (rounded, mapped):
            model = LogisticRegression(l2=1e-2, multi_class="ovr", fit_intercept=intercept)
            u = CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0, verify=True).fit(train)
            for record in data.ids[:4]:
                result = u.forget(Remove(ids=[record]))
                assert true_residual(u) <= result.certificate.residual_bound
            units.append(u)
        assert isinstance(units[1]._X, BlockedRows) and not isinstance(units[0]._X, BlockedRows)
        if not intercept:
            assert units[1]._X32 is units[1]._X.data  # the stored float32 rows, no copy
        assert np.allclose(units[0].model_.coef_, units[1].model_.coef_, atol=1e-7)
        assert units[0].budget_used_ == pytest.approx(units[1].budget_used_, rel=1e-3)
    finally:
        blocked.ROWS = old_rows


def test_memmap_dataset_refuses_a_wrong_row_count(tmp_path):
    from oblivio.data.blocked import memmap_dataset

    rows = [(np.zeros((3, 2), np.float32), np.zeros(3, np.int64))]
    with pytest.raises(ValueError, match="n=5"):
        memmap_dataset(tmp_path / "x.npy", rows, 5, 2)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_second_order_on_high_dimensional_sparse_data_uses_preconditioned_cg(monkeypatch):
    """d = 5000 hashed-like features: no dense Hessian, Jacobi-preconditioned CG."""
    from oblivio.linalg import solvers
    from oblivio.unlearners import SecondOrder

    data = sparse_data(2, 400, 5000)
    seen = []
    original = solvers.cg_solve

    def spy(*args, **kwargs):
        seen.append(kwargs.get("preconditioner"))
        return original(*args, **kwargs)

    monkeypatch.setattr("oblivio.unlearners._influence_solve.cg_solve", spy)
    model = LogisticRegression(l2=1e-2).fit(data)
    monkeypatch.setattr(LogisticRegression, "hessian", None)  # a d x d matrix is not an option
    u = SecondOrder(model).attach(data)
    ids = data.ids[:5]
    result = u.forget(Remove(ids=ids))
    assert seen and all(p is not None for p in seen)
    assert result.diagnostics["solver_converged"] == 1.0
    retrained = LogisticRegression(l2=1e-2).fit(data.drop(ids))
    before = np.linalg.norm(model.coef_ - retrained.coef_)
    after = np.linalg.norm(u.model_.coef_ - retrained.coef_)
    assert before > 0 and after < 0.05 * before
