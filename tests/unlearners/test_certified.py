"""Certified removal (Guo et al., ICML 2020): bounds, budget, retraining, bad input."""

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oblivio as ob
from oblivio.data import Dataset, Relabel, Remove, Replace, ReplaceFeatures, RequestError
from oblivio.models import LogisticRegression
from oblivio.testing import check_unlearner
from oblivio.unlearners import CertifiedRemoval, _certified_cache, create
from oblivio.unlearners.certified import GAMMA, budget, noise_constant


def norm(t) -> float:
    return float(torch.linalg.vector_norm(torch.as_tensor(t)))


def true_residual(u) -> float:
    """||grad L_b(w; D')|| from the model's own objective (not the unlearner's caches)."""
    return norm(u.model_.objective_grad(u.train_))


def random_data(seed: int, n: int, d: int, k: int) -> Dataset:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 1.5
    y = np.arange(n) % k
    X = centers[y] + rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X *= rng.uniform(0.5, 1.0, size=(n, 1))  # norms <= 1, not all equal to 1
    return Dataset(X=X, y=y, ids=np.arange(100, 100 + n))


@pytest.fixture(scope="module")
def small():
    return random_data(0, 80, 5, 2)


# -- privacy maths: golden numbers (reference §5) ------------------------------------------
def test_golden_budget_numbers():
    assert noise_constant(1e-4) == pytest.approx(4.3854, abs=1e-4)
    assert budget(1.0, 1e-4, 10.0) == pytest.approx(2.2803, abs=1e-4)
    assert budget(1.0, 1e-2, 10.0) == pytest.approx(3.159, abs=1e-3)
    u = CertifiedRemoval(LogisticRegression(), epsilon=1.0, delta=1e-4, sigma=10.0)
    assert u.budget_total == pytest.approx(2.2803, abs=1e-4)
    assert "certified" in ob.unlearners.available()
    assert isinstance(create("certified", LogisticRegression()), CertifiedRemoval)


# -- the central property: true residual <= accumulated bound after every removal -----------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    k=st.sampled_from([2, 3]),
    hessian=st.sampled_from(["amortized", "exact"]),
    batch=st.booleans(),
    bound=st.sampled_from(["data", "worst"]),
    refine=st.integers(0, 2),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
)
def test_residual_never_exceeds_accumulated_bound(seed, k, hessian, batch, bound, refine, sizes):
    data = random_data(seed, 40 + 5 * k, 4, k)
    model = LogisticRegression(l2=0.05, multi_class="ovr")
    u = CertifiedRemoval(
        model,
        sigma=1.0,
        epsilon=2.0,
        hessian=hessian,
        batch=batch,
        bound=bound,
        refine=refine,
        verify=True,
        seed=seed,
    ).fit(data)
    assert true_residual(u) <= u.budget_used_
    rng = np.random.default_rng(seed)
    for size in sizes:
        ids = rng.choice(u.train_.ids, size=size, replace=False)
        result = u.forget(Remove(ids=ids))
        cert = result.certificate
        assert cert is not None and cert.valid
        assert cert.budget_used <= cert.budget_total
        residual = true_residual(u)
        assert residual <= cert.residual_bound
        assert residual == pytest.approx(result.diagnostics["gradient_residual"], abs=1e-9)
        if not result.retrained:
            assert result.diagnostics["step_bound"] > 0


@pytest.mark.parametrize(
    ("refine", "refresh"), [(0, 0.0), (0, 0.01), (1, 0.01), (2, 0.001), (1, 1e9), (3, 0.0)]
)
def test_amortized_paths_stay_rigorous(binary_data, refine, refresh, monkeypatch):
    """Cached solve, deferred and measured corrections, folds, partial and full refreshes."""
    monkeypatch.setattr(_certified_cache, "_FOLD_ROWS", 4)  # exercise the Woodbury fold often
    u = CertifiedRemoval(
        LogisticRegression(l2=1e-2),
        sigma=1.0,
        epsilon=50.0,
        seed=0,
        refine=refine,
        refresh=refresh,
        verify=True,
    ).fit(binary_data)
    rng = np.random.default_rng(0)
    deferred = full = 0
    for _ in range(25):
        result = u.forget(Remove(ids=rng.choice(u.train_.ids, size=1)))
        assert not result.retrained
        assert true_residual(u) <= result.certificate.residual_bound
        deferred += result.diagnostics["corrections"]
        full += result.diagnostics["full_refreshes"]
    if refresh == 0.0:
        assert full >= 24  # only the exact step (or an exact cache) is good enough
    if refresh == 1e9:
        assert full == 0 and deferred == 0
    if refine == 0:
        assert deferred == 0
    if (refine, refresh) == (1, 0.01):
        assert deferred > 10  # the O(d^2) correction was used


@pytest.mark.parametrize("k", [2, 3])
def test_mixed_precision_pass_is_bounded_by_its_rounding_allowance(k):
    """float32 ``X s`` and ``X^T (dc * a)``: errors within ``e_a`` and ``err`` (vs float64)."""
    data = random_data(4, 400, 30, k)
    model = LogisticRegression(l2=1e-2, multi_class="ovr")
    u = CertifiedRemoval(model, sigma=1.0, epsilon=50.0, seed=0).fit(data)
    for record in data.ids[:12]:  # drift the curvatures away from the cache
        u.forget(Remove(ids=[record]))
    assert u._X32 is not None and u._X32.dtype == np.float32
    K = u._K
    mask, counts = u._mask(), u._counts
    rng = np.random.default_rng(1)
    s = rng.standard_normal((K, u._D)) * 0.1
    Delta = rng.standard_normal((K, u._D))
    args = (u._X, u._Z, np.zeros(K), u._S, mask, counts, s, Delta, u._xnorm, np.zeros(K))
    mixed = u._measure(*args, zerr=np.zeros(K), cache=u._cache)
    exact = u._measure(*args, zerr=np.zeros(K), cache=None)  # float64 pass: the reference
    # the float64 pass carries its own (much smaller) rounding allowance
    assert np.all(mixed["e_a"] > 1e6 * exact["e_a"]) and np.all(exact["e_a"] > 0)
    error_a = np.abs(mixed["A_full"] - exact["A_full"])
    assert error_a.max() > 0  # rounding happened: the comparison is not vacuous
    assert np.all(error_a <= mixed["e_a"][None, :])
    error_r2 = np.linalg.norm(mixed["r2"] - exact["r2"], axis=1)
    assert np.all(error_r2 <= mixed["err"] + exact["err"])
    assert np.all(mixed["T1"] >= exact["T1"]) and np.all(mixed["T2"] >= exact["T2"] - 1e-12)
    # ... and the allowance is small: the certificate barely pays for the speed
    assert np.all(mixed["T2"] <= exact["T2"] + 1e-3 * np.linalg.norm(Delta, axis=1))


def test_bounds_are_not_vacuous_and_data_bound_is_tighter(binary_data):
    """The data bound is far below the worst case, and above the true residual."""
    model = LogisticRegression(l2=1e-3)
    rng = np.random.default_rng(1)
    ids = rng.choice(binary_data.ids, size=5, replace=False)
    steps = {}
    for kind in ("data", "worst"):
        u = CertifiedRemoval(model, sigma=0.0, bound=kind, hessian="exact").fit(binary_data)
        steps[kind] = [u.forget(Remove(ids=[i])).diagnostics["step_bound"] for i in ids]
        n = len(binary_data)
        for t, step in enumerate(steps[kind]):
            paper_worst = 4 * GAMMA / (1e-3**2 * (n - t - 1))
            if kind == "worst":  # no noise: lam ||w|| <= 1, so Thm 1's value covers it
                assert step <= paper_worst * (1 + 1e-9)
                assert step >= paper_worst / 4 / 2
    assert all(d < w / 100 for d, w in zip(steps["data"], steps["worst"], strict=True))


# -- sigma = 0 is the plain Newton step; non-vacuity both ways --------------------------------
def test_sigma_zero_is_plain_newton_step_and_close_to_retraining(binary_data):
    model = LogisticRegression(l2=1e-3)
    u = CertifiedRemoval(model, sigma=0.0, hessian="exact", batch=True).fit(binary_data)
    w = u.model_.theta.clone()
    ids = binary_data.ids[[3, 10, 50, 77, 120]]
    change = Remove(ids=ids).resolve(binary_data)
    lam, m = 1e-3, len(ids)
    delta = lam * m * w + u.model_.grad(change.before, theta=w)
    H = u.model_.hessian(change.result, theta=w).numpy()
    expected = w.numpy() + scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), delta.numpy())
    result = u.forget(Remove(ids=ids))
    assert result.certificate is None
    np.testing.assert_allclose(u.model_.theta.numpy(), expected, rtol=1e-10, atol=1e-12)

    retrained = model.clone().fit(change.result)
    before = norm(w - retrained.theta)
    after = norm(u.model_.theta - retrained.theta)
    assert before > 1e-3  # the removal matters: the test can fail
    assert after < before / 50
    assert model.clone().fit(binary_data).noise is None  # sigma=0 trains without noise


def test_amortized_matches_exact_closely(binary_data):
    model = LogisticRegression(l2=1e-3)
    ids = np.random.default_rng(2).choice(binary_data.ids, size=12, replace=False)
    thetas = {}
    for mode in ("amortized", "exact"):
        u = CertifiedRemoval(model, sigma=1.0, seed=3, hessian=mode).fit(binary_data)
        for chunk in np.split(ids, 4):
            result = u.forget(Remove(ids=chunk))
            assert not result.retrained
        thetas[mode] = u.model_.theta
        retrained = LogisticRegression(l2=1e-3, noise=u.model_.noise).fit(u.train_)
        original = LogisticRegression(l2=1e-3, noise=u.model_.noise).fit(binary_data)
        moved = norm(original.theta - retrained.theta)
        assert norm(u.model_.theta - retrained.theta) < moved / 20
    # the two modes take nearly the same steps (relative to how far the removals move w)
    assert norm(thetas["amortized"] - thetas["exact"]) < moved / 50


def test_sigma_changes_the_trained_weights(binary_data):
    plain = CertifiedRemoval(LogisticRegression(), sigma=0.0).fit(binary_data)
    noisy = CertifiedRemoval(LogisticRegression(), sigma=1.0, seed=0).fit(binary_data)
    assert norm(plain.model_.theta - noisy.model_.theta) > 1e-2
    np.testing.assert_allclose(
        noisy.model_.theta.numpy(),
        LogisticRegression(noise=noisy.model_.noise).fit(binary_data).theta.numpy(),
        atol=1e-8,
    )


# -- budget and retraining -------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True])
def test_budget_triggers_retrain_exactly_when_it_should(binary_data, batch):
    model = LogisticRegression(l2=1e-3)
    u = CertifiedRemoval(model, sigma=1.0, epsilon=0.5, seed=4, batch=batch).fit(binary_data)
    rng = np.random.default_rng(5)
    n_retrained = 0
    for _ in range(12):
        ids = rng.choice(u.train_.ids, size=2, replace=False)
        previous_beta = u.budget_used_
        twin = copy.deepcopy(u)
        twin.epsilon = 1e9  # same steps, but never retrains
        would_be = twin.forget(Remove(ids=ids))
        old_noise = np.asarray(u.model_.noise).copy()
        result = u.forget(Remove(ids=ids))
        cert = result.certificate
        assert cert.budget_used <= cert.budget_total
        if result.retrained:
            n_retrained += 1
            # retrained because the bound would have gone over the budget: and only then
            steps_taken = [would_be.diagnostics["step_bound"]] if batch else None
            if batch:
                assert previous_beta + steps_taken[0] > u.budget_total
            else:
                assert previous_beta + would_be.diagnostics["step_bound"] > u.budget_total
            assert cert.budget_used < 1e-6  # only the solver's residual is left
            assert not np.allclose(u.model_.noise, old_noise)  # a fresh b
            fresh = LogisticRegression(l2=1e-3, noise=u.model_.noise).fit(u.train_)
            np.testing.assert_allclose(u.model_.theta.numpy(), fresh.theta.numpy(), atol=1e-8)
        else:
            assert cert.budget_used == pytest.approx(
                previous_beta + result.diagnostics["step_bound"], rel=1e-12
            )
            assert previous_beta + would_be.diagnostics["step_bound"] <= u.budget_total + 1e-15
            np.testing.assert_array_equal(u.model_.noise, old_noise)
    assert n_retrained >= 1  # the budget was small enough to be exhausted


def test_retrain_draws_are_repeatable_with_a_seed(small):
    runs = []
    for _ in range(2):
        u = CertifiedRemoval(LogisticRegression(l2=0.05), sigma=0.5, epsilon=0.05, seed=11).fit(
            small
        )
        results = [u.forget(Remove(ids=[int(i)])) for i in small.ids[:6]]
        assert any(r.retrained for r in results)
        runs.append(u.model_.theta)
    assert torch.equal(runs[0], runs[1])


# -- multi-class one-vs-rest with negative subsampling ----------------------------------------
def test_ovr_subsampling_leaves_untouched_classes_alone():
    data = random_data(7, 120, 6, 4)
    u = CertifiedRemoval(
        LogisticRegression(l2=0.02, multi_class="ovr"), sigma=1.0, subsample=0.3, seed=0
    ).fit(data)
    members = u.class_members()
    assert members[np.arange(len(data)), data.y].all()  # every positive is kept
    assert 0.1 < members.mean() < 0.6
    # a record that only its own class trains on
    only_own = np.flatnonzero(members.sum(axis=1) == 1)
    assert only_own.size
    record = int(only_own[0])
    own = int(data.y[record])
    before = u.model_.coef_.copy()
    result = u.forget(Remove(ids=[int(data.ids[record])]))
    after = u.model_.coef_
    for k in range(4):
        if k == own:
            assert not np.allclose(after[k], before[k])
        else:
            np.testing.assert_array_equal(after[k], before[k])
    assert u.gradient_residual() <= result.certificate.residual_bound
    # several more removals keep the certificate honest
    for i in data.ids[10:16]:
        result = u.forget(Remove(ids=[int(i)]))
        assert u.gradient_residual() <= result.certificate.residual_bound


def test_multinomial_model_is_refused():
    data = random_data(1, 60, 4, 3)
    with pytest.raises(ValueError, match="multi_class='ovr'"):
        CertifiedRemoval(LogisticRegression(), sigma=1.0).fit(data)


# -- edits: relabel and feature replacement ---------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_relabel_and_replace_features_are_certified(k):
    data = random_data(3, 90, 5, k)
    model = LogisticRegression(l2=0.02, multi_class="ovr")
    u = CertifiedRemoval(model, sigma=2.0, seed=1).fit(data)
    u.forget(Remove(ids=data.ids[:3]))  # edits after removals (caches compacted)
    ids = data.ids[5:9]
    new_labels = (data.y[5:9] + 1) % k
    for request in (
        Relabel(ids=ids, labels=new_labels),
        ReplaceFeatures(features=[1, 3], value=0.0),
    ):
        original = LogisticRegression(l2=0.02, multi_class="ovr", noise=u.model_.noise).fit(
            u.train_
        )
        result = u.forget(request)
        assert result.request == type(request).__name__
        assert true_residual(u) <= result.certificate.residual_bound
        retrained = LogisticRegression(l2=0.02, multi_class="ovr", noise=u.model_.noise).fit(
            u.train_
        )
        if not result.retrained:
            gap_before = norm(original.theta - retrained.theta)
            assert gap_before > 1e-3
            assert norm(u.model_.theta - retrained.theta) < gap_before / 5
    u.forget(Remove(ids=data.ids[20:23]))
    assert true_residual(u) <= u.budget_used_


def test_replacement_rows_must_be_normalised(small):
    u = CertifiedRemoval(LogisticRegression(l2=0.05), sigma=1.0, seed=0).fit(small)
    beta, theta = u.budget_used_, u.model_.theta.clone()
    with pytest.raises(RequestError, match="norm <= 1"):
        u.forget(Replace(ids=small.ids[:1], X=np.full((1, 5), 3.0)))
    assert u.budget_used_ == beta and torch.equal(u.model_.theta, theta)


# -- bad input: clear errors, nothing changed ------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("epsilon", 0.0),
        ("epsilon", -1.0),
        ("epsilon", float("inf")),
        ("delta", 0.0),
        ("delta", 1.0),
        ("delta", 1.5),
        ("sigma", -0.1),
        ("sigma", float("nan")),
        ("bound", "tight"),
        ("hessian", "lbfgs"),
        ("subsample", 0.0),
        ("refine", -1),
    ],
)
def test_bad_options_are_rejected_by_name(small, option, value):
    u = CertifiedRemoval(LogisticRegression(), **{option: value})
    with pytest.raises(ValueError, match=option):
        u.fit(small)


def test_unnormalised_rows_are_rejected_and_change_nothing(small):
    u = CertifiedRemoval(LogisticRegression(l2=0.05), sigma=1.0, seed=0).fit(small)
    theta = u.model_.theta.clone()
    big = Dataset(X=small.X * 3.0, y=small.y, ids=small.ids)
    with pytest.raises(ValueError, match="normalize='l2'"):
        u.fit(big)
    assert torch.equal(u.model_.theta, theta) and u.train_ is small


def test_bad_requests_change_nothing(small):
    u = CertifiedRemoval(LogisticRegression(l2=0.05), sigma=1.0, seed=0).fit(small)
    u.forget(Remove(ids=small.ids[:2]))
    state = (u.model_.theta.clone(), u.train_.ids.copy(), u.budget_used_, len(u.history_))
    for request in (
        Remove(ids=[999_999]),
        Remove(ids=u.train_.ids),
        Remove(ids=small.ids[:1]),
    ):  # already removed
        with pytest.raises(RequestError):
            u.forget(request)
        assert torch.equal(u.model_.theta, state[0])
        assert np.array_equal(u.train_.ids, state[1])
        assert u.budget_used_ == state[2] and len(u.history_) == state[3]
    # and the next valid request works from the unchanged state
    result = u.forget(Remove(ids=u.train_.ids[:1]))
    assert true_residual(u) <= result.certificate.residual_bound


def test_contract(small):
    check_unlearner(lambda: CertifiedRemoval(LogisticRegression(l2=0.05), sigma=1.0, seed=0), small)
    check_unlearner(
        lambda: CertifiedRemoval(
            LogisticRegression(l2=0.05), sigma=1.0, seed=0, batch=True, hessian="exact"
        ),
        small,
    )


# -- attach: honesty about the noise -----------------------------------------------------
def test_attach_refuses_a_model_without_noise(small):
    plain = LogisticRegression(l2=0.05).fit(small)
    with pytest.raises(ValueError, match="loss perturbation"):
        CertifiedRemoval(plain, sigma=1.0).attach(small)
    u = CertifiedRemoval(plain, sigma=0.0).attach(small)  # uncertified Newton steps are fine
    assert u.forget(Remove(ids=small.ids[:1])).certificate is None


def test_attach_checks_noise_scale_and_certifies(small):
    b = np.random.default_rng(0).normal(0.0, 2.0, size=5)
    noisy = LogisticRegression(l2=0.05, noise=b).fit(small)
    with pytest.raises(ValueError, match="implausible"):
        CertifiedRemoval(noisy, sigma=500.0).attach(small)
    u = CertifiedRemoval(noisy, sigma=2.0).attach(small)
    assert u.budget_used_ >= true_residual(u)
    result = u.forget(Remove(ids=small.ids[:2]))
    assert true_residual(u) <= result.certificate.residual_bound
    assert torch.equal(noisy.theta, LogisticRegression(l2=0.05, noise=b).fit(small).theta)


def test_attach_refuses_a_model_far_from_the_optimum(small):
    b = np.random.default_rng(0).normal(0.0, 1.0, size=5)
    noisy = LogisticRegression(l2=0.05, noise=b).fit(small)
    noisy.theta = noisy.theta + 0.5
    with pytest.raises(ValueError, match="not at the optimum"):
        CertifiedRemoval(noisy, sigma=1.0, epsilon=0.1).attach(small)


# -- persistence -------------------------------------------------------------------------------
def test_save_load_continues_identically(small, tmp_path):
    def make():
        return CertifiedRemoval(
            LogisticRegression(l2=0.05), sigma=0.5, epsilon=0.2, seed=5, hessian="exact"
        )

    u = make().fit(small)
    u.forget(Remove(ids=small.ids[:2]))
    u.save(tmp_path / "cr")
    v = CertifiedRemoval.load(tmp_path / "cr")
    assert v.budget_used_ == pytest.approx(u.budget_used_)
    for i in small.ids[2:8]:
        a, b = u.forget(Remove(ids=[int(i)])), v.forget(Remove(ids=[int(i)]))
        assert a.retrained == b.retrained
        assert a.certificate.budget_used == pytest.approx(b.certificate.budget_used, rel=1e-6)
    np.testing.assert_allclose(u.model_.theta.numpy(), v.model_.theta.numpy(), atol=1e-8)
    assert math.isfinite(v.gradient_residual())


def test_budget_plot_follows_the_certificates(binary_data, tmp_path):
    from oblivio.audit.plots import plot_certificate_budget

    u = CertifiedRemoval(LogisticRegression(l2=1e-3), sigma=0.05, epsilon=1.0, seed=0)
    u.fit(binary_data)
    true = []
    for t, record in enumerate(binary_data.ids[:30], start=1):
        u.forget(Remove(ids=[record]))
        true.append((t, u.gradient_residual()))
    retrains = sum(r.retrained for r in u.history_)
    assert retrains >= 1  # the small sigma makes the budget run out: the plot shows it
    figure = plot_certificate_budget(u, epsilons=[0.5, 2.0], true_residuals=true)
    ax = figure.axes[0]
    np.testing.assert_allclose(
        ax.lines[0].get_ydata(), [r.certificate.budget_used for r in u.history_]
    )
    vertical = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(vertical) == retrains
    used = [r.certificate.budget_used for r in u.history_]
    assert all(value <= bound for (_, value), bound in zip(true, used, strict=True))
    figure.savefig(tmp_path / "budget.png")
    assert (tmp_path / "budget.png").stat().st_size > 1000
    plain = CertifiedRemoval(LogisticRegression(l2=1e-3), sigma=0.0).fit(binary_data)
    plain.forget(Remove(ids=[binary_data.ids[0]]))
    with pytest.raises(ValueError, match="certificate"):
        plot_certificate_budget(plain)
