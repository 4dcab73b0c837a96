"""TorchModel: derivatives against finite differences, parameter restriction, determinism,
state round trips, and exact unlearning by retraining."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

import oblivio as ob
from oblivio.data import Dataset, Remove
from oblivio.models import MLP, CharLSTM, NotFittedError, TorchModel
from oblivio.testing import check_unlearner
from oblivio.unlearners import Retrain


@pytest.fixture(scope="module")
def small(digits_split):
    """200 training records of the 10-class digits (standardised by l2 rows)."""
    train = digits_split.train
    return train.take(np.arange(200))


def _tiny_double(data: Dataset, hidden=(5,), params=None, l2=1e-2, seed=0) -> TorchModel:
    """A float64 MLP with a few hundred parameters, trained briefly (non-trivial point)."""
    module = MLP(data.n_features, hidden, data.n_classes).double()
    model = TorchModel(module, l2=l2, epochs=2, lr=1e-2, seed=seed, params=params)
    return model.fit(data)


def _random_direction(model: TorchModel, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(model.n_params, generator=generator, dtype=model.dtype)


# -- derivatives ----------------------------------------------------------------------------
def test_grad_matches_central_differences(small):
    data = small.take(np.arange(40))
    model = _tiny_double(data, hidden=(3,))
    theta = model.theta
    gradient = model.grad(data)
    eps = 1e-6
    # every coordinate of a small network
    numeric = torch.empty_like(theta)
    for i in range(theta.numel()):
        step = torch.zeros_like(theta)
        step[i] = eps
        numeric[i] = (model.loss(data, theta + step) - model.loss(data, theta - step)) / (2 * eps)
    torch.testing.assert_close(gradient, numeric, atol=1e-6, rtol=1e-6)
    assert gradient.norm() > 1e-2  # not at a stationary point: the check has teeth


def test_hvp_matches_central_differences_of_objective_gradient(small):
    data = small.take(np.arange(40))
    model = _tiny_double(data, l2=0.05)
    theta = model.theta
    eps = 1e-5
    for seed in range(3):
        v = _random_direction(model, seed)
        numeric = (
            model.objective_grad(data, theta + eps * v)
            - model.objective_grad(data, theta - eps * v)
        ) / (2 * eps)
        torch.testing.assert_close(model.hvp(data, v), numeric, atol=1e-6, rtol=1e-6)
    # the l2 * n * v term is in the hvp: without it the products differ
    v = _random_direction(model, 7)
    plain = model.clone()
    plain.l2 = 0.0
    plain.set_state(model.get_state())
    gap = model.hvp(data, v) - plain.hvp(data, v)
    torch.testing.assert_close(gap, 0.05 * len(data) * v)


def test_hvp_equals_dense_hessian_and_hessian_is_symmetric(small):
    data = small.take(np.arange(60))
    model = _tiny_double(data, hidden=(4,))
    H = model.hessian(data)
    assert H.shape == (model.n_params, model.n_params)
    torch.testing.assert_close(H, H.T, atol=1e-12, rtol=0)
    for seed in range(3):
        v = _random_direction(model, seed)
        torch.testing.assert_close(model.hvp(data, v), H @ v, atol=1e-9, rtol=1e-9)
    # the objective's Hessian of a non-convex net is not (l2 n) I
    assert torch.linalg.matrix_norm(H - model.l2 * len(data) * torch.eye(len(H))) > 1e-2


def _hessian_from_hvps(model: TorchModel, data: Dataset, theta: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(model.n_params, dtype=model.dtype)
    return torch.stack([model.hvp(data, e, theta) for e in eye])


class _Doubled(nn.Module):
    """An MLP whose logits are scaled after its last layer."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.inner(x)


def test_last_layer_hessian_in_closed_form_matches_the_hvps(small, monkeypatch):
    """theta = the last layer's weight and bias: the closed form (one forward pass) equals
    the Hessian from Hessian-vector products, at a theta other than the fitted one; a layer
    whose output is transformed afterwards, or a theta beyond the last layer, takes the
    general path (and is right too)."""
    data = small.take(np.arange(80))
    head = MLP(data.n_features, (6,), data.n_classes).head_name
    model = _tiny_double(data, hidden=(6,), params=[head], l2=0.05)
    theta = model.theta + 0.3 * _random_direction(model, 1)
    assert model._linear_head_hessian(data, theta) is not None  # the closed form runs
    H = model.hessian(data, theta)
    torch.testing.assert_close(H, _hessian_from_hvps(model, data, theta), atol=1e-9, rtol=1e-9)
    assert torch.linalg.matrix_norm(H - 0.05 * len(data) * torch.eye(len(H))) > 1e-1
    # built over pieces of a batch (a small memory bound): the same matrix
    from oblivio.models import _torch_curvature

    monkeypatch.setattr(_torch_curvature, "_HEAD_PIECE", 3 * 10 * 10 * 7)
    torch.testing.assert_close(model.hessian(data, theta), H, atol=1e-10, rtol=0)

    inner = MLP(data.n_features, (6,), data.n_classes).double()
    doubled = TorchModel(_Doubled(inner), l2=0.05, epochs=2, lr=1e-2, params=[f"inner.{head}"])
    doubled.fit(data)
    assert doubled._linear_head() is not None
    assert doubled._linear_head_hessian(data, doubled.theta) is None  # 2 x logits: not linear
    torch.testing.assert_close(
        doubled.hessian(data), _hessian_from_hvps(doubled, data, doubled.theta), atol=1e-9, rtol=0
    )
    whole = _tiny_double(data, hidden=(6,))
    assert whole._linear_head() is None


def test_derivatives_are_independent_of_the_evaluation_batch_size(small):
    data = small.take(np.arange(50))
    model = _tiny_double(data)
    other = model.clone()
    other.eval_batch_size = 7
    other.set_state(model.get_state())
    v = _random_direction(model)
    torch.testing.assert_close(other.loss(data), model.loss(data))
    torch.testing.assert_close(other.grad(data), model.grad(data))
    torch.testing.assert_close(other.hvp(data, v), model.hvp(data, v))


def test_float32_char_lstm_hessian_matches_hvp():
    """Float32 LSTMs have no forward-mode derivative on CPU: the reverse fallback is used."""
    rng = np.random.default_rng(1)
    data = Dataset(rng.integers(0, 5, size=(20, 3)), rng.integers(0, 5, size=20), classes=range(5))
    model = TorchModel(CharLSTM(5, embed=2, hidden=3), l2=1e-2, epochs=1, lr=1e-2).fit(data)
    H = model.hessian(data)
    v = _random_direction(model)
    torch.testing.assert_close(H @ v, model.hvp(data, v), atol=1e-4, rtol=1e-4)
    theta = model.theta.requires_grad_(True)
    model.loss(data, theta).backward()
    torch.testing.assert_close(model.grad(data), theta.grad)


def test_loss_is_differentiable_in_a_theta_that_requires_grad(small):
    model = _tiny_double(small.take(np.arange(30)))
    data = small.take(np.arange(30))
    theta = model.theta.requires_grad_(True)
    model.loss(data, theta).backward()
    torch.testing.assert_close(theta.grad, model.grad(data))
    assert model.loss(data).grad_fn is None


def test_loss_and_objective_use_the_sum_convention(small):
    model = _tiny_double(small, l2=0.1)
    per_record = model.per_record_loss(small)
    assert per_record.shape == (len(small),)
    assert float(model.loss(small)) == pytest.approx(per_record.sum(), rel=1e-10)
    theta = model.theta
    expected = per_record.sum() + 0.1 * len(small) / 2 * float(theta @ theta)
    assert float(model.objective(small)) == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(
        model.objective_grad(small), model.grad(small) + 0.1 * len(small) * theta
    )


def test_char_lstm_hvp_matches_finite_differences():
    rng = np.random.default_rng(0)
    data = Dataset(rng.integers(0, 6, size=(30, 4)), rng.integers(0, 6, size=30), classes=range(6))
    model = TorchModel(CharLSTM(6, embed=3, hidden=4).double(), l2=1e-2, epochs=1, lr=1e-2)
    model.fit(data)
    theta, eps = model.theta, 1e-5
    v = _random_direction(model)
    numeric = (
        model.objective_grad(data, theta + eps * v) - model.objective_grad(data, theta - eps * v)
    ) / (2 * eps)
    torch.testing.assert_close(model.hvp(data, v), numeric, atol=1e-6, rtol=1e-6)
    H = model.hessian(data)
    torch.testing.assert_close(H @ v, model.hvp(data, v), atol=1e-9, rtol=1e-9)
    u = _random_direction(model, 1)
    numeric_grad = (model.loss(data, theta + eps * u) - model.loss(data, theta - eps * u)) / (
        2 * eps
    )
    assert float(model.grad(data) @ u) == pytest.approx(float(numeric_grad), rel=1e-6)


# -- parameter restriction --------------------------------------------------------------------
def test_params_restricts_theta_to_the_named_layer(small):
    data = small.take(np.arange(40))
    full = _tiny_double(data)
    head = TorchModel(full.module, l2=full.l2, epochs=2, lr=1e-2, params=["fc2"])
    head.set_state(full.get_state())
    assert head.param_names == ["fc2.weight", "fc2.bias"]
    assert head.n_params == 5 * 10 + 10
    assert full.param_names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    # gradients of the head are the matching slice of the full gradient
    first = full.module_.fc1.weight.numel() + full.module_.fc1.bias.numel()
    torch.testing.assert_close(head.grad(data), full.grad(data)[first:])
    H = head.hessian(data)
    assert H.shape == (60, 60)
    v = _random_direction(head)
    torch.testing.assert_close(head.hvp(data, v), H @ v)
    # setting theta moves only the head
    body = full.module_.fc1.weight.detach().clone()
    head.theta = torch.zeros(60, dtype=torch.float64)
    assert torch.equal(head.module_.fc1.weight, body)
    assert torch.count_nonzero(head.module_.fc2.weight) == 0
    # a name prefix and the exact names select the same parameters
    exact = TorchModel(full.module, params=["fc2.weight", "fc2.bias"])
    assert exact.param_names == head.param_names


def test_train_all_false_trains_only_theta(small):
    template = MLP(small.n_features, (8,), small.n_classes)
    start = TorchModel(template, epochs=0, seed=3, params=["fc2"]).fit(small)
    head_only = TorchModel(template, epochs=2, seed=3, params=["fc2"], train_all=False).fit(small)
    everything = TorchModel(template, epochs=2, seed=3, params=["fc2"]).fit(small)
    assert torch.equal(head_only.module_.fc1.weight, start.module_.fc1.weight)
    assert all(p.requires_grad for p in head_only.module_.parameters())  # flags restored
    assert not torch.equal(head_only.theta, start.theta)
    assert not torch.equal(everything.module_.fc1.weight, start.module_.fc1.weight)


def test_bad_params_and_theta_are_rejected_with_clear_errors(small):
    with pytest.raises(ValueError, match="fc9"):
        TorchModel(MLP(64, (8,), 10), params=["fc9"]).fit(small)
    model = TorchModel(MLP(64, (8,), 10), epochs=0).fit(small)
    with pytest.raises(ValueError, match="theta must have 610 entries"):
        model.theta = torch.zeros(3)
    with pytest.raises(ValueError, match="non-finite"):
        model.theta = torch.full((610,), float("nan"))
    with pytest.raises(ValueError, match="v must have 610"):
        model.hvp(small, torch.zeros(4))
    with pytest.raises(ValueError, match="outputs 3 logits .* 10 classes"):
        TorchModel(MLP(64, (8,), 3)).fit(small)
    with pytest.raises(ValueError, match="optimizer"):
        TorchModel(MLP(64, (8,), 10), optimizer="lbfgs").fit(small)
    with pytest.raises(ValueError, match="l2"):
        TorchModel(MLP(64, (8,), 10), l2=-1.0).fit(small)
    with pytest.raises(NotFittedError):
        TorchModel(MLP(64, (8,), 10)).theta  # noqa: B018
    big = TorchModel(MLP(64, (100,), 10), epochs=0).fit(small)
    with pytest.raises(ValueError, match="too large"):
        big.hessian(small)


# -- training -------------------------------------------------------------------------------
def test_fit_is_deterministic_given_the_seed(small):
    template = MLP(small.n_features, (16,), small.n_classes, dropout=0.2)
    state = torch.random.get_rng_state()
    a = TorchModel(template, epochs=2, batch_size=32, seed=5).fit(small)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(123)  # the global seed does not matter
    b = TorchModel(template, epochs=2, batch_size=32, seed=5).fit(small)
    c = TorchModel(template, epochs=2, batch_size=32, seed=6).fit(small)
    assert torch.equal(a.theta, b.theta)
    for name, value in a.module_.state_dict().items():
        assert torch.equal(value, b.module_.state_dict()[name]), name
    assert not torch.allclose(a.theta, c.theta)
    # the template is never modified
    assert all(
        not torch.equal(p, q)
        for p, q in zip(template.parameters(), a.module_.parameters(), strict=True)
    )


def test_fit_improves_accuracy_on_digits(digits_split):
    train, test = digits_split
    module = MLP(train.n_features, (32,), train.n_classes)
    untrained = TorchModel(module, epochs=0).fit(train)
    model = TorchModel(module, l2=1e-4, epochs=15, lr=1e-2, batch_size=64).fit(train)
    before = ob.audit.accuracy(untrained, test)
    after = ob.audit.accuracy(model, test)
    assert before < 0.3
    assert after > 0.9
    assert model.objective(train) < untrained.objective(train)


def test_sgd_with_momentum_trains(small):
    module = MLP(small.n_features, (16,), small.n_classes)
    model = TorchModel(module, epochs=20, batch_size=32, optimizer="sgd", lr=0.2, momentum=0.9)
    model.fit(small)
    untrained = TorchModel(module, epochs=0).fit(small)
    assert model.loss(small) < 0.5 * untrained.loss(small)


def test_init_continues_from_given_parameters(small):
    template = MLP(small.n_features, (8,), small.n_classes)
    trained = TorchModel(template, epochs=3, lr=1e-2).fit(small)
    same = TorchModel(template, epochs=3, lr=1e-2).fit(small, init=trained.theta, epochs=0)
    assert torch.equal(same.theta, trained.theta)
    more = TorchModel(template, epochs=1, lr=1e-2).fit(small, init=trained.theta)
    assert more.loss(small) < trained.loss(small)
    # a fitted model (or a state dict) warm-starts every parameter, also with params=[...]
    head = TorchModel(template, params=["fc2"], epochs=0).fit(small, init=trained)
    assert torch.equal(head.module_.fc1.weight, trained.module_.fc1.weight)
    head = TorchModel(template, params=["fc2"], epochs=0).fit(small, init=trained.get_state())
    assert torch.equal(head.module_.fc1.weight, trained.module_.fc1.weight)


def test_reinit_false_starts_from_the_template(small):
    template = MLP(small.n_features, (8,), small.n_classes)
    model = TorchModel(template, epochs=0, reinit=False).fit(small)
    assert torch.equal(model.module_.fc1.weight, template.fc1.weight)
    model = TorchModel(template, epochs=0).fit(small)
    assert not torch.equal(model.module_.fc1.weight, template.fc1.weight)


def test_verbose_controls_the_progress_bar(small, capsys):
    TorchModel(MLP(64, (8,), 10), epochs=1).fit(small)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- prediction and state -------------------------------------------------------------------
def test_predict_proba_rows_sum_to_one_in_eval_mode(small, digits_split):
    module = MLP(small.n_features, (16,), small.n_classes, dropout=0.5)
    model = TorchModel(module, epochs=2, eval_batch_size=33).fit(small)
    P = model.predict_proba(digits_split.test.X)
    assert P.shape == (len(digits_split.test), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(P >= 0)
    np.testing.assert_array_equal(P, model.predict_proba(digits_split.test))  # no dropout
    np.testing.assert_array_equal(model.predict(digits_split.test.X), P.argmax(axis=1))
    assert not model.module_.training


def test_sparse_input_matches_dense(small):
    sparse = Dataset(sp.csr_matrix(small.X), small.y, small.ids, classes=small.classes)
    module = MLP(small.n_features, (8,), small.n_classes)
    dense_model = TorchModel(module, epochs=2).fit(small)
    sparse_model = TorchModel(module, epochs=2).fit(sparse)
    torch.testing.assert_close(sparse_model.theta, dense_model.theta)
    np.testing.assert_allclose(
        sparse_model.predict_proba(sparse.X), dense_model.predict_proba(small.X), atol=1e-6
    )


def test_state_round_trip_and_clone(small):
    model = TorchModel(MLP(small.n_features, (8,), small.n_classes), epochs=2).fit(small)
    state = model.get_state()
    assert set(state) == set(model.module_.state_dict()) | {"__meta__"}
    assert all(isinstance(v, np.ndarray) for k, v in state.items() if k != "__meta__")
    import json

    json.dumps(state["__meta__"])
    copy = model.clone()
    with pytest.raises(NotFittedError):
        copy.theta  # noqa: B018 - clone is unfitted
    copy.set_state(state)
    assert torch.equal(copy.theta, model.theta)
    np.testing.assert_array_equal(copy.predict_proba(small.X), model.predict_proba(small.X))
    copy.theta = torch.zeros_like(copy.theta)  # shares nothing with the original
    assert not torch.equal(copy.theta, model.theta)
    assert copy.get_params()["loss"] == "cross_entropy"


def test_float64_module_gives_float64_theta(small):
    model = TorchModel(MLP(64, (4,), 10).double(), epochs=1).fit(small)
    assert model.theta.dtype == torch.float64
    assert TorchModel(MLP(64, (4,), 10), epochs=0).fit(small).theta.dtype == torch.float32


# -- exact unlearning -------------------------------------------------------------------------
def test_retrain_equals_a_fresh_fit_with_the_same_seed(small, digits_split):
    model = TorchModel(MLP(small.n_features, (16,), small.n_classes), epochs=3, lr=1e-2, seed=4)
    unlearner = Retrain(model).fit(small)
    original = unlearner.model_.predict_proba(digits_split.test.X)
    ids = small.ids[[3, 17, 42, 99]]
    result = unlearner.forget(Remove(ids=ids))
    assert result.exact and result.retrained
    fresh = model.clone().fit(small.drop(ids))
    test_X = digits_split.test.X
    np.testing.assert_array_equal(
        unlearner.model_.predict_proba(test_X), fresh.predict_proba(test_X)
    )
    assert torch.equal(unlearner.model_.theta, fresh.theta)
    assert not np.array_equal(original, fresh.predict_proba(test_X))  # the removal mattered


def test_retrain_save_load_round_trip(small, tmp_path):
    model = TorchModel(MLP(small.n_features, (8,), small.n_classes), epochs=1)
    unlearner = Retrain(model).fit(small)
    unlearner.forget(Remove(ids=small.ids[:2]))
    path = unlearner.save(tmp_path / "retrain")
    loaded = Retrain.load(path, model=model)
    assert torch.equal(loaded.model_.theta, unlearner.model_.theta)
    np.testing.assert_array_equal(
        loaded.model_.predict_proba(small.X), unlearner.model_.predict_proba(small.X)
    )


def test_retrain_passes_the_unlearner_contract(small):
    model = TorchModel(MLP(small.n_features, (8,), small.n_classes), epochs=2, lr=1e-2, seed=2)
    check_unlearner(lambda: Retrain(model), small)


def test_integer_inputs_are_token_ids_only_for_embedding_modules(small):
    pixels = Dataset((small.X * 16).round().astype(np.uint8), small.y, classes=small.classes)
    model = TorchModel(MLP(64, (8,), 10), epochs=1).fit(pixels)  # uint8 -> float
    floats = Dataset(pixels.X.astype(np.float32), pixels.y, classes=pixels.classes)
    np.testing.assert_array_equal(model.predict_proba(pixels.X), model.predict_proba(floats.X))
    tokens = Dataset(np.arange(12).reshape(6, 2) % 4, np.arange(6) % 4, classes=range(4))
    lstm = TorchModel(CharLSTM(4, embed=2, hidden=3), epochs=1).fit(tokens)
    assert lstm.predict_proba(tokens.X).shape == (6, 4)


def test_a_plain_nn_module_works():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    data = Dataset(X, y, classes=[0, 1])
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model = TorchModel(module, epochs=30, lr=5e-2, params=["2"]).fit(data)
    assert model.param_names == ["2.weight", "2.bias"]
    assert ob.audit.accuracy(model, data) > 0.9
