"""First- and second-order influence unlearning (Warnecke et al., NDSS 2023).

Oracle: retraining on the edited data (``model.clone().fit(change.result)``); every
comparison also checks that the original model differs from the retrained one.
"""

import copy
import io
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_svmlight_file

import oblivio as ob
from oblivio.audit.metrics import gradient_residual, param_distance
from oblivio.data import Dataset, Relabel, Remove, Replace, ReplaceFeatures, RequestError
from oblivio.linalg import SolverError
from oblivio.models import LogisticRegression
from oblivio.testing import check_unlearner
from oblivio.unlearners import FirstOrder, SecondOrder, Unlearner, create


# -- data ----------------------------------------------------------------------------------
def libsvm_bag_of_words(n: int = 500, vocabulary: int = 200, seed: int = 0) -> Dataset:
    """A sparse binary text-like task written as LIBSVM lines and parsed back (as a user would
    load e.g. a spam corpus): Zipf word frequencies, a planted sparse linear rule."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, vocabulary + 1) ** 0.8
    popularity /= popularity.sum()
    weights = rng.normal(0.0, 1.0, vocabulary) * (rng.random(vocabulary) < 0.3)
    lines = []
    for _ in range(n):
        words = np.unique(rng.choice(vocabulary, size=rng.integers(5, 25), p=popularity))
        counts = rng.integers(1, 4, size=words.size)
        score = float(weights[words] @ counts) / math.sqrt(words.size) + rng.normal(0, 0.5)
        label = "+1" if score > 0 else "-1"
        pairs = " ".join(f"{w + 1}:{c}" for w, c in zip(words, counts, strict=True))
        lines.append(f"{label} {pairs}")
    X, y = load_svmlight_file(io.BytesIO("\n".join(lines).encode()), n_features=vocabulary)
    X = sp.csr_matrix(X, dtype=np.float64)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / norms) @ X)
    return Dataset(X=X, y=(y > 0).astype(np.int64), classes=("ham", "spam"), name="libsvm-bow")


@pytest.fixture(scope="module")
def problems():
    """(train, l2) for three real-data logistic-regression problems."""
    return {
        "breast-cancer": (ob.datasets.load("breast-cancer", normalize="l2").train, 1e-3),
        "digits-4class": (
            ob.datasets.load("digits", normalize="l2", classes=[1, 4, 7, 9]).train,
            1e-2,
        ),
        "sparse-libsvm": (libsvm_bag_of_words(), 1e-2),
    }


@pytest.fixture(scope="module")
def fitted(problems):
    return {name: LogisticRegression(l2=l2).fit(train) for name, (train, l2) in problems.items()}


def make_request(kind: str, train: Dataset, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.choice(train.ids, size=max(5, len(train) // 20), replace=False)
    if kind == "remove":
        return Remove(ids)
    if kind == "relabel":
        return Relabel(ids, (train.select(ids).y + 1) % train.n_classes)
    if kind == "features":  # the two most frequent columns, zeroed where they are non-zero
        frequency = np.asarray((train.X != 0).sum(axis=0)).ravel()
        return ReplaceFeatures(features=[int(i) for i in np.argsort(-frequency)[:2]])
    if kind == "replace":  # overwrite the records with other records' features
        others = rng.choice(np.setdiff1d(train.ids, ids), size=ids.size, replace=False)
        return Replace(ids, X=train.select(others).X)
    raise AssertionError(kind)


KINDS = ["remove", "relabel", "features", "replace"]
PROBLEMS = ["breast-cancer", "digits-4class", "sparse-libsvm"]


# -- quality against retraining -------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_updates_against_retraining(problems, fitted, problem, kind):
    train, _ = problems[problem]
    model = fitted[problem]
    request = make_request(kind, train)
    change = request.resolve(train)
    retrained = model.clone().fit(change.result)

    none_residual = gradient_residual(model, change.result)
    none_distance = param_distance(model, retrained)
    # non-vacuity: the request matters for the model
    assert none_distance > 1e-2 * float(torch.linalg.vector_norm(retrained.theta))
    assert none_residual > 1e-3

    second = SecondOrder(model).attach(train)
    result = second.forget(request)
    residual = gradient_residual(second, change.result)
    assert residual <= 0.1 * none_residual
    assert param_distance(second, retrained) <= 0.1 * none_distance
    assert result.diagnostics["gradient_residual"] == pytest.approx(residual, rel=1e-9)
    # at the exact optimum the gradient difference is the residual of doing nothing
    assert result.diagnostics["grad_diff_norm"] == pytest.approx(none_residual, rel=1e-5)
    assert result.diagnostics["solver_converged"] == 1.0
    assert result.diagnostics["solver_residual"] < 1e-10
    assert result.n_affected == len(change) and not result.exact

    first = FirstOrder(model).attach(train)
    result = first.forget(request)
    assert 0 < result.diagnostics["tau"] < math.inf
    assert gradient_residual(first, change.result) <= none_residual
    assert param_distance(first, retrained) <= none_distance
    assert param_distance(first, model) > 0  # it did move


def test_first_order_tau_auto_is_inverse_largest_eigenvalue(problems, fitted):
    train, _ = problems["breast-cancer"]
    model = fitted["breast-cancer"]
    first = FirstOrder(model).attach(train)
    lam = np.linalg.eigvalsh(model.hessian(train).numpy())[-1]
    request = make_request("relabel", train)
    result = first.forget(request)  # same size: tau = 1 / lambda_max(H(D~)) ~ 1 / lambda_max(H(D))
    assert result.diagnostics["tau"] == pytest.approx(1.0 / lam, rel=1e-3)
    fixed = FirstOrder(model, tau=1e-3).attach(train)
    assert fixed.forget(request).diagnostics["tau"] == 1e-3
    assert param_distance(fixed, first) > 0


def test_pure_removal_equals_newton_step_of_certified_removal(binary_data):
    """Z~ empty: theta - H(D~)^{-1} grad L(theta; D~) exactly (Guo et al., Eq. 5, sigma = 0)."""
    model = LogisticRegression(l2=1e-3).fit(binary_data)
    ids = binary_data.ids[::25]
    remaining = binary_data.drop(ids)
    H = model.hessian(remaining).numpy()
    newton = model.theta.numpy() - np.linalg.solve(H, model.objective_grad(remaining).numpy())
    assert np.linalg.norm(newton - model.theta.numpy()) > 1e-2  # the step is not trivial
    for solver in ("cholesky", "cg"):
        second = SecondOrder(model, solver=solver).attach(binary_data)
        second.forget(Remove(ids))
        np.testing.assert_allclose(second.model_.theta.numpy(), newton, rtol=1e-7, atol=1e-9)
    certified = pytest.importorskip("oblivio.unlearners.certified")
    guo = certified.CertifiedRemoval(
        LogisticRegression(l2=1e-3), sigma=0.0, hessian="exact", batch=True
    ).fit(binary_data)
    np.testing.assert_allclose(guo.model_.theta.numpy(), model.theta.numpy(), atol=1e-7)
    guo.forget(Remove(ids))
    second = SecondOrder(model).attach(binary_data)
    second.forget(Remove(ids))
    np.testing.assert_allclose(second.model_.theta.numpy(), guo.model_.theta.numpy(), atol=1e-6)


def test_removal_gradient_difference_includes_regulariser(binary_data):
    """G = -sum grad l(Z) - l2 m theta: without the l2 term the step would miss the optimum."""
    model = LogisticRegression(l2=1e-2).fit(binary_data)
    ids = binary_data.ids[:10]
    result = SecondOrder(model).attach(binary_data).forget(Remove(ids))
    theta = model.theta
    without = -model.grad(binary_data.select(ids))
    with_l2 = without - 1e-2 * 10 * theta
    assert result.diagnostics["grad_diff_norm"] == pytest.approx(
        float(torch.linalg.vector_norm(with_l2)), rel=1e-10
    )
    gap = float(torch.linalg.vector_norm(without)) - result.diagnostics["grad_diff_norm"]
    assert abs(gap) > 1e-3


@pytest.mark.parametrize("solver", ["cg", "lissa"])
def test_matrix_free_solvers_on_logistic_regression(problems, fitted, solver):
    train, _ = problems["digits-4class"]
    model = fitted["digits-4class"]
    request = make_request("relabel", train)
    change = request.resolve(train)
    exact = SecondOrder(model, solver="cholesky").attach(train)
    exact.forget(request)
    options = {"max_iter": 3000, "lissa_batch_size": len(train), "lissa_patience": 3000}
    approx = SecondOrder(model, solver=solver, **(options if solver == "lissa" else {}))
    result = approx.attach(train).forget(request)
    step = param_distance(exact, model)
    assert param_distance(approx, exact) <= (1e-6 if solver == "cg" else 1e-2) * step
    if solver == "cg":
        assert result.diagnostics["cg_iterations"] >= 1
    else:
        assert result.diagnostics["lissa_diverged"] == 0.0
        assert result.diagnostics["solver_residual"] < 1e-2
    assert gradient_residual(approx, change.result) < 0.1 * gradient_residual(model, change.result)


def test_stepwise_variant(problems, fitted):
    train, _ = problems["sparse-libsvm"]
    model = fitted["sparse-libsvm"]
    request = make_request("features", train)
    change = request.resolve(train)
    none = gradient_residual(model, change.result)
    single = SecondOrder(model).attach(train)
    single.forget(request)
    stepwise = SecondOrder(model, steps=4).attach(train)
    result = stepwise.forget(request)
    assert result.diagnostics["steps"] == 4.0
    assert param_distance(stepwise, single) > 0  # a different path
    assert gradient_residual(stepwise, change.result) <= 0.1 * none
    assert np.array_equal(stepwise.train_.ids, change.result.ids)
    assert (stepwise.train_.X != change.result.X).nnz == 0
    first = FirstOrder(model, steps=3).attach(train)
    assert first.forget(request).diagnostics["steps"] == 3.0
    assert gradient_residual(first, change.result) <= none


def test_sigma_certified_and_residual_sample(binary_data):
    model = LogisticRegression(l2=1e-3).fit(binary_data)
    ids = binary_data.ids[:5]
    result = SecondOrder(model, epsilon=0.1, delta=0.01).attach(binary_data).forget(Remove(ids))
    c = math.sqrt(2 * math.log(150))  # reference §5: 3.1656 for delta = 0.01
    assert c == pytest.approx(3.1656, abs=1e-4)
    assert result.diagnostics["sigma_certified"] == pytest.approx(
        result.diagnostics["gradient_residual"] * c / 0.1
    )
    sampled = SecondOrder(model, residual_records=50).attach(binary_data).forget(Remove(ids))
    assert "gradient_residual" not in sampled.diagnostics
    assert sampled.diagnostics["residual_sample_size"] == 50.0
    assert np.isfinite(sampled.diagnostics["gradient_residual_estimate"])
    none = FirstOrder(model, residual_records=0).attach(binary_data).forget(Remove(ids))
    assert "gradient_residual" not in none.diagnostics


# -- bad input ------------------------------------------------------------------------------
def test_lissa_divergence_is_reported_not_silent(binary_data):
    model = LogisticRegression(l2=1e-3).fit(binary_data)
    ids = binary_data.ids[:8]
    options = {"solver": "lissa", "lissa_scale": 1e-3, "max_iter": 50}
    unlearner = SecondOrder(model, on_failure="raise", **options)
    unlearner.attach(binary_data)
    with pytest.raises(SolverError, match="LiSSA diverged"):
        unlearner.forget(Remove(ids))
    assert torch.equal(unlearner.model_.theta, model.theta)  # nothing changed
    assert len(unlearner.train_) == len(binary_data) and not unlearner.history_
    skip = SecondOrder(model, solver="lissa", lissa_scale=1e-3, max_iter=50, on_failure="skip")
    result = skip.attach(binary_data).forget(Remove(ids))
    assert result.diagnostics["lissa_diverged"] == 1.0
    assert result.diagnostics["solver_failed"] == 1.0
    assert torch.equal(skip.model_.theta, model.theta)  # a diverged step is never applied
    assert len(skip.train_) == len(binary_data) - 8
    warned = SecondOrder(model, **options).attach(binary_data)  # default: on_failure="warn"
    with pytest.warns(ob.UnlearningWarning, match="LiSSA diverged"):
        result = warned.forget(Remove(ids))
    assert result.diagnostics["landed"] == 0.0 and len(warned.train_) == len(binary_data) - 8


def test_invalid_options_are_rejected(binary_data):
    model = LogisticRegression(l2=1e-3)
    bad = [
        (SecondOrder, {"solver": "newton"}, "solver"),
        (SecondOrder, {"damping": -1.0}, "damping"),
        (SecondOrder, {"on_failure": "explode"}, "on_failure"),
        (SecondOrder, {"lissa_scale": "big"}, "lissa_scale"),
        (FirstOrder, {"tau": 0.0}, "tau"),
        (FirstOrder, {"steps": 0}, "steps"),
        (FirstOrder, {"epsilon": 0.1}, "epsilon and delta"),
        (FirstOrder, {"epsilon": 0.1, "delta": 2.0}, "delta"),
    ]
    for klass, options, message in bad:
        with pytest.raises(ValueError, match=message):
            klass(model, **options).fit(binary_data)


def test_requests_are_validated(problems, fitted):
    train, _ = problems["breast-cancer"]
    unlearner = SecondOrder(fitted["breast-cancer"]).attach(train)
    theta = unlearner.model_.theta.clone()
    for request in (ReplaceFeatures(features=[99]), Relabel(ids=[int(train.ids[0])], labels=[5])):
        with pytest.raises(RequestError):
            unlearner.forget(request)
    assert torch.equal(unlearner.model_.theta, theta) and not unlearner.history_


@pytest.mark.parametrize("name", ["first-order", "second-order"])
def test_contract(binary_data, name):
    train = binary_data.take(np.arange(200))
    check_unlearner(lambda: create(name, LogisticRegression(l2=1e-3)), train)


def test_save_and_load_round_trip(tmp_path, binary_data):
    unlearner = FirstOrder(LogisticRegression(l2=1e-3)).fit(binary_data)
    unlearner.forget(Remove(binary_data.ids[:3]))
    unlearner.save(tmp_path / "u")
    loaded = Unlearner.load(tmp_path / "u")
    assert isinstance(loaded, FirstOrder) and loaded.lambda_max_ == unlearner.lambda_max_
    a = unlearner.forget(Remove(binary_data.ids[3:6]))
    b = loaded.forget(Remove(binary_data.ids[3:6]))
    assert a.diagnostics["tau"] == b.diagnostics["tau"]
    assert torch.equal(unlearner.model_.theta, loaded.model_.theta)


# -- neural networks (TorchModel) ---------------------------------------------------------
torch_models = pytest.importorskip("oblivio.models")


@pytest.fixture(scope="module")
def small_net():
    """A float64 MLP (64-8-4, 556 parameters) on four digit classes: non-convex."""
    train = ob.datasets.load("digits", normalize="l2", classes=[0, 1, 2, 3]).train
    net = torch_models.MLP(64, hidden=(8,), n_classes=4).double()
    model = torch_models.TorchModel(net, l2=1e-3, epochs=40, lr=1e-2, batch_size=64, seed=0)
    return train, model.fit(train)


def newton_polish(model, data, steps: int = 8):
    """Exact optimum of a strictly convex (restricted) objective by plain Newton steps."""
    for _ in range(steps):
        H = model.hessian(data).numpy()
        g = model.objective_grad(data).numpy()
        model.theta = torch.from_numpy(model.theta.numpy() - np.linalg.solve(H, g))
    return model


def test_hvp_agrees_with_dense_hessian_on_network(small_net):
    train, model = small_net
    v = torch.from_numpy(np.random.default_rng(0).standard_normal(model.n_params))
    H = model.hessian(train)
    torch.testing.assert_close(model.hvp(train, v), H @ v, rtol=1e-9, atol=1e-9)


def test_cg_and_lissa_agree_with_cholesky_on_network(small_net):
    """Relative difference of the updates: CG <= 1e-6, LiSSA <= 1e-3 (full-batch, damped)."""
    train, model = small_net
    ids = np.random.default_rng(0).choice(train.ids, size=20, replace=False)
    request = Relabel(ids, (train.select(ids).y + 1) % 4)
    edited = request.resolve(train).result
    assert np.linalg.eigvalsh(model.hessian(edited).numpy())[0] < 0  # genuinely indefinite
    with pytest.raises(SolverError, match="not positive definite"):
        SecondOrder(model, solver="cholesky", on_failure="raise").attach(train).forget(request)
    steps = {}
    for solver, options in [
        ("cholesky", {}),
        ("cg", {"rtol": 1e-10}),
        ("lissa", {"max_iter": 250, "lissa_batch_size": len(train), "lissa_patience": 250}),
    ]:
        unlearner = SecondOrder(model, solver=solver, damping=50.0, **options).attach(train)
        result = unlearner.forget(request)
        assert result.diagnostics["solver_converged"] == 1.0
        steps[solver] = unlearner.model_.theta - model.theta
    size = float(torch.linalg.vector_norm(steps["cholesky"]))
    assert size > 0.1
    assert float(torch.linalg.vector_norm(steps["cg"] - steps["cholesky"])) <= 1e-6 * size
    assert float(torch.linalg.vector_norm(steps["lissa"] - steps["cholesky"])) <= 1e-3 * size


@pytest.mark.parametrize("kind", ["remove", "features"])
def test_network_head_only_against_exact_head_retraining(small_net, kind):
    """TorchModel(params=["fc2"]): only the head moves; the head's objective is convex.

    (Relabelling 5 % of these well-separated records moves the exact head optimum by ~1e3:
    far outside the region where one Newton step is accurate, so it is not tested here.)
    """
    train, full = small_net
    head = torch_models.TorchModel(
        full.module_, l2=1e-3, params=["fc2"], epochs=0, reinit=False
    ).fit(train)
    newton_polish(head, train)
    assert float(torch.linalg.vector_norm(head.objective_grad(train))) < 1e-8
    request = make_request(kind, train)
    change = request.resolve(train)
    retrained = newton_polish(copy.deepcopy(head), change.result)  # exact head optimum on D~
    none_residual = gradient_residual(head, change.result)
    none_distance = param_distance(head, retrained)
    assert none_distance > 1e-2
    body = {k: v.clone() for k, v in head.module_.state_dict().items() if k.startswith("fc1")}

    second = SecondOrder(head).attach(train)
    second.forget(request)
    assert gradient_residual(second, change.result) <= 0.1 * none_residual
    assert param_distance(second, retrained) <= 0.1 * none_distance
    for name, value in second.model_.module_.state_dict().items():
        if name.startswith("fc1"):
            assert torch.equal(value, body[name])  # the body is untouched
    first = FirstOrder(head).attach(train)
    first.forget(request)
    assert gradient_residual(first, change.result) <= none_residual
    assert param_distance(first, retrained) <= none_distance
