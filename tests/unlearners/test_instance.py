"""Tests of instance-wise neural unlearning: L2UL (Cha et al., AAAI 2024) and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import oblivio as ob
from oblivio.audit import accuracy
from oblivio.data import Dataset, Relabel, Remove, ReplaceFeatures, RequestError
from oblivio.models import MLP, LogisticRegression, SmallCNN, TorchModel
from oblivio.testing import check_unlearner
from oblivio.unlearners import L2UL, FineTune, GradientAscent, RandomLabels, Unlearner
from oblivio.unlearners._neural import (
    complement_loss,
    draw_targets,
    invert_importance,
    mas_importance,
    predict_labels,
    targeted_l2_pgd,
)

# The defaults are meant for small nets (10 examples x 10 PGD steps); the paper's attack
# (L2UL.PAPER) is 20 examples x 100 steps.


@pytest.fixture(scope="module")
def digits01():
    """scikit-learn digits scaled to [0, 1] (pixel range 0..16), 10 classes."""
    split = ob.datasets.load("digits")

    def scaled(data: Dataset) -> Dataset:
        return Dataset(
            X=(data.X / 16.0).astype(np.float32), y=data.y, ids=data.ids, classes=data.classes
        )

    return scaled(split.train), scaled(split.test)


def _mlp_model(epochs: int = 20) -> TorchModel:
    return TorchModel(MLP(64, (32,), 10), epochs=epochs, lr=1e-2, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def trained(digits01):
    train, _ = digits01
    return _mlp_model().fit(train)


def _forget_ids(train: Dataset, model: TorchModel, k: int, seed: int) -> np.ndarray:
    """``k`` training records the model classifies correctly (so forgetting is not vacuous)."""
    correct = train.ids[model.predict(train.X) == train.y]
    return np.random.default_rng(seed).choice(correct, size=k, replace=False)


# -- building blocks -------------------------------------------------------------------------
def test_pgd_stays_in_ball_and_box_and_hits_target(digits01, trained):
    train, _ = digits01
    module = trained.module_
    x = torch.tensor(train.X[:40])
    y = torch.tensor(train.y[:40])
    target = torch.as_tensor(draw_targets(train.y[:40], 10, 1, np.random.default_rng(0)))
    assert not torch.any(target == y)
    before = [p.detach().clone() for p in module.parameters()]
    eps = 3.0
    generator = torch.Generator().manual_seed(0)
    x_adv = targeted_l2_pgd(
        module, x, target, eps=eps, step=0.25, steps=40, clip=(0.0, 1.0), generator=generator
    )
    norms = torch.linalg.vector_norm((x_adv - x).flatten(1), dim=1)
    assert float(norms.max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    hit = (predict_labels(module, x_adv) == target).float().mean()
    assert float(hit) >= 0.9
    # the clean inputs are classified as their labels, not the targets (non-vacuity)
    assert float((predict_labels(module, x) == target).float().mean()) <= 0.05
    # the attack does not touch the model
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    # a small ball is respected too, and a different clipping range is honoured
    x_half = x.clamp(0.0, 0.5)
    x_small = targeted_l2_pgd(
        module, x_half, target, eps=0.1, step=0.05, steps=5, clip=(0.0, 0.5), generator=generator
    )
    gap = torch.linalg.vector_norm((x_small - x_half).flatten(1), dim=1)
    assert float(gap.max()) <= 0.1 + 1e-5 and float(gap.min()) > 0.0
    assert float(x_small.max()) <= 0.5


def test_pgd_rejects_bad_settings(trained):
    x = torch.zeros(2, 64)
    target = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="eps"):
        targeted_l2_pgd(trained.module_, x, target, eps=0.0)
    with pytest.raises(ValueError, match="clip"):
        targeted_l2_pgd(trained.module_, x, target, clip=(1.0, 1.0))
    with pytest.raises(ValueError, match="floating-point"):
        targeted_l2_pgd(trained.module_, x.long(), target)


def test_draw_targets():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 3, 4] * 40)
    targets = draw_targets(y, 5, 3, rng)
    labels = np.repeat(y, 3)
    assert targets.shape == labels.shape
    assert not np.any(targets == labels)
    assert set(np.unique(targets[labels == 2])) == {0, 1, 3, 4}
    # the released code's rule can collide with the label when it equals C // 2 (pitfall 2)
    original = draw_targets(y, 5, 3, np.random.default_rng(0), sampling="original")
    assert np.any(original == labels)
    assert np.all(original[original == labels] == 2)
    with pytest.raises(ValueError, match="sampling"):
        draw_targets(y, 5, 1, rng, sampling="nope")


def test_mas_importance_matches_hand_computation():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    batch = 2
    importance = mas_importance(layer, x, batch_size=batch)
    W, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    X = x.numpy()
    # by hand: d||Wx + b|| / dW = u x^T, d/db = u, with u = z / ||z||; abs of the batch mean
    total_W, total_b = np.zeros_like(W), np.zeros_like(b)
    for start in range(0, 5, batch):
        xb = X[start : start + batch]
        z = xb @ W.T + b
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        total_W += len(xb) * np.abs(np.einsum("ni,nj->ij", u, xb) / len(xb))
        total_b += len(xb) * np.abs(u.mean(axis=0))
    scale = (5 // batch + 1) * batch
    np.testing.assert_allclose(importance["weight"].numpy(), total_W / scale, rtol=1e-5)
    np.testing.assert_allclose(importance["bias"].numpy(), total_b / scale, rtol=1e-5)
    # per-batch gradients, not a running sum (pitfall 4): differs from |sum of batch grads|
    z = X @ W.T + b
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert not np.allclose(np.abs(u.sum(axis=0)) / scale, total_b / scale)
    assert layer.weight.grad is None  # the module's gradients are left alone


def test_invert_importance_normalises_and_guards_constant_tensors():
    omega = {
        "a": torch.tensor([[0.0, 1.0], [3.0, 4.0]]),
        "constant": torch.full((3,), 2.0),
        "zero": torch.zeros(2, 2),
    }
    inverted = invert_importance(omega)
    np.testing.assert_allclose(inverted["a"].numpy(), [[1.0, 0.75], [0.25, 0.0]])
    for name in ("constant", "zero"):
        assert torch.equal(inverted[name], torch.ones_like(omega[name]))
    assert all(bool(torch.isfinite(t).all()) for t in inverted.values())


def test_complement_loss_is_minus_log_one_minus_p():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]])
    labels = torch.tensor([0, 2, 1])
    p = torch.softmax(logits, dim=1)[torch.arange(3), labels]
    torch.testing.assert_close(complement_loss(logits, labels), -torch.log1p(-p))
    # finite where p_y rounds to 1 (the naive formula gives inf), and its gradient on the
    # logit z_y is p_y: large for a confident record, small for a forgotten one
    z = torch.tensor([[60.0, 0.0, 0.0], [-5.0, 0.0, 0.0]], requires_grad=True)
    loss = complement_loss(z, torch.tensor([0, 0]))
    value = loss.detach()
    assert bool(torch.isfinite(value).all())
    assert float(value[0]) == pytest.approx(60.0 - math.log(2.0), abs=1e-4)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    p0 = torch.softmax(z.detach(), dim=1)[:, 0]
    torch.testing.assert_close(grad[:, 0], p0)
    assert float(grad[0, 0]) > 0.99 and float(grad[1, 0]) < 0.01
    # -CE = log p_y has the opposite behaviour: gradient 1 - p_y on z_y (vanishing here)
    (ce_grad,) = torch.autograd.grad(
        -nn.functional.cross_entropy(z, torch.tensor([0, 0]), reduction="sum"), z
    )
    assert abs(float(ce_grad[0, 0])) < 1e-6
    with pytest.raises(ValueError, match="logits"):
        complement_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_predict_labels_flags_overflowed_outputs():
    layer = nn.Linear(2, 3)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels, finite = predict_labels(layer, x, with_finite=True)
    assert finite and torch.equal(labels, predict_labels(layer, x))
    with torch.no_grad():
        layer.weight[0, 0] = float("inf")  # an arg-max of inf/NaN logits means nothing
    _, finite = predict_labels(layer, x, with_finite=True)
    assert not finite


# -- the methods -------------------------------------------------------------------------------
# Library defaults, except where a method's defaults do not reach the goal on this tiny MLP
# (random labels with retained data: lr 1e-2 reached it for 4 of 6 forget sets, 3e-2 for 6).
# L2UL's default lr (1e-3, the paper's) needs ~1000 steps on these [0, 1] inputs; these tests
# check mechanics, so they run it at 1e-2 (its quality is tested in test_l2ul.py).
METHODS = {
    "l2ul": dict(lr=1e-2),
    "l2ul-noadv": dict(adversarial=False, lr=1e-2),
    "gradient-ascent": dict(goal="correction"),
    "random-labels": dict(goal="correction"),
    "random-labels+retain": dict(goal="correction", use_retain=True, lr=3e-2),
}


def _make(name: str, model, **extra) -> Unlearner:
    options = dict(METHODS[name])
    options.update(extra)
    return ob.unlearners.create(name.split("-noadv")[0].split("+")[0], model, **options)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_forget_reaches_the_stopping_target(name, digits01, trained):
    train, test = digits01
    ids = _forget_ids(train, trained, 12, seed=1)
    forget = train.select(ids)
    retrained = trained.clone().fit(train.drop(ids))
    assert accuracy(trained, forget) == 1.0
    # non-vacuity: retraining does not reach the goal by itself (the records generalise)
    assert accuracy(retrained, forget) > 0.5
    unlearner = _make(name, trained).attach(train)
    result = unlearner.forget(Remove(ids=ids))
    d = result.diagnostics
    assert d["goal_reached"] == 1.0 and d["stopped_by_cap"] == 0.0 and d["diverged"] == 0.0
    assert d["forget_accuracy"] == 0.0 == accuracy(unlearner, forget)
    assert d["steps"] >= 1 and d["epochs"] >= 1
    assert result.exact is False and result.n_affected == 12
    assert not np.isin(ids, unlearner.train_.ids).any()
    # the model moved, the user's model did not
    assert not torch.equal(unlearner.model_.theta, trained.theta)
    assert accuracy(trained, forget) == 1.0
    # it remains a classifier better than chance (0.1) on held-out data; gradient ascent,
    # which collapses most, keeps 0.22 here
    assert accuracy(unlearner, test) > 0.15


def test_stopping_at_the_epoch_cap_is_reported(digits01, trained):
    train, _ = digits01
    ids = _forget_ids(train, trained, 10, seed=2)
    unlearner = GradientAscent(trained, goal="correction", lr=1e-6, max_epochs=3).attach(train)
    with pytest.warns(ob.UnlearningWarning, match="not every forget record reached its goal"):
        d = unlearner.forget(Remove(ids=ids)).diagnostics
    assert d == {
        "landed": 0.0,
        "steps": 3.0,
        "epochs": 3.0,
        "goal_reached": 0.0,
        "stopped_by_cap": 1.0,
        "diverged": 0.0,
        "forget_accuracy": d["forget_accuracy"],
    }
    assert d["forget_accuracy"] > 0.5


def test_l2ul_steps_follow_the_adversarial_batches(digits01, trained):
    train, _ = digits01
    ids = _forget_ids(train, trained, 6, seed=3)
    options = dict(n_adv=4, adv_batch_size=10, lr=1e-7, max_epochs=2)
    u = L2UL(trained, **options).attach(train)
    d = u.forget(Remove(ids=ids)).diagnostics
    per_epoch = math.ceil(6 * 4 / 10)
    assert d["n_adversarial"] == 6 * 4
    assert d["steps"] == 2 * per_epoch and d["stopped_by_cap"] == 1.0
    assert 0.0 <= d["adversarial_target_rate"] <= 1.0
    assert u.input_range_ == (0.0, 1.0)


def test_finetune_trains_on_retained_records_for_its_epochs(digits01, trained):
    train, test = digits01
    ids = _forget_ids(train, trained, 30, seed=4)
    retain = train.drop(ids)
    unlearner = FineTune(trained, epochs=2, batch_size=64).attach(train)
    result = unlearner.forget(Remove(ids=ids))
    d = result.diagnostics
    assert d["epochs"] == 2.0 and d["steps"] == 2 * math.ceil(len(retain) / 64)
    assert d["forget_accuracy"] == accuracy(unlearner, train.select(ids))
    assert not torch.equal(unlearner.model_.theta, trained.theta)
    # judged against retraining: test accuracy of the same order as a retrained model
    retrained = trained.clone().fit(retain)
    assert accuracy(unlearner, test) >= accuracy(retrained, test) - 0.1
    # finetune works for any edit (it trains on D~), e.g. a feature edit
    unlearner.forget(ReplaceFeatures(features=[10, 11], value=0.0))


def test_needs_are_declared():
    model = _mlp_model()
    assert L2UL(model).needs == frozenset({"forget"})
    assert GradientAscent(model, goal="correction").needs == frozenset({"forget"})
    assert GradientAscent(model).needs == frozenset({"forget", "retain"})  # deletion
    assert FineTune(model).needs == frozenset({"retain"})
    assert RandomLabels(model, goal="correction").needs == frozenset({"forget"})
    assert RandomLabels(model, goal="correction", use_retain=True).needs == frozenset(
        {"forget", "retain"}
    )
    assert RandomLabels(model).needs == frozenset({"forget", "retain"})  # deletion
    assert not any(cls.exact for cls in (L2UL, GradientAscent, FineTune, RandomLabels))


def test_l2ul_relabel_mode(digits01, trained):
    train, _ = digits01
    ids = _forget_ids(train, trained, 8, seed=5)
    old = train.select(ids).y
    new = (old + 3) % 10
    unlearner = L2UL(trained, lr=1e-2).attach(train)
    result = unlearner.forget(Relabel(ids=ids, labels=new))
    d = result.diagnostics
    assert d["goal_reached"] == 1.0 and d["relabel_accuracy"] == 1.0
    np.testing.assert_array_equal(unlearner.model_.predict(train.select(ids).X), new)
    np.testing.assert_array_equal(unlearner.train_.select(ids).y, new)
    assert d["forget_accuracy"] == 0.0


def test_paper_settings_are_an_explicit_preset(digits01, trained):
    train, _ = digits01
    paper = L2UL(trained, **L2UL.PAPER)
    params = paper.get_params()
    assert params["forget_loss"] == "neg-ce" and params["lam"] == 1.0
    assert (params["n_adv"], params["pgd_steps"], params["eps"]) == (20, 100, 4.0)
    assert params["lr"] == 1e-3 and params["adv_batch_size"] == 256
    assert GradientAscent(trained, **GradientAscent.PAPER).get_params()["forget_loss"] == "neg-ce"
    with pytest.raises(TypeError):
        L2UL.PAPER["lam"] = 0.5  # read-only
    # the defaults are the cheap ones, and differ from the paper's
    defaults = L2UL(trained).get_params()
    assert defaults["n_adv"] * defaults["pgd_steps"] < params["n_adv"] * params["pgd_steps"] / 4
    # the preset runs (capped here: the paper's 1000 epochs are not needed for a test)
    ids = _forget_ids(train, trained, 4, seed=11)
    d = L2UL(trained, **{**L2UL.PAPER, "max_epochs": 2}).attach(train)
    d = d.forget(Remove(ids=ids)).diagnostics
    assert d["n_adversarial"] == 4 * 20 and d["adversarial_target_rate"] >= 0.9
    assert d["goal_reached"] + d["stopped_by_cap"] + d["diverged"] == 1.0


@pytest.mark.parametrize("name", ["gradient-ascent", "random-labels", "l2ul"])
def test_unsupported_requests_change_nothing(name, digits01, trained):
    train, _ = digits01
    unlearner = _make(name, trained).attach(train)
    theta = unlearner.model_.theta.clone()
    requests = [ReplaceFeatures(features=[5], value=0.0)]
    if name != "l2ul":
        requests.append(Relabel(ids=train.ids[:2], labels=(train.y[:2] + 1) % 10))
    for request in requests:
        with pytest.raises(RequestError, match=name):
            unlearner.forget(request)
        assert torch.equal(unlearner.model_.theta, theta)
        assert len(unlearner.history_) == 0 and len(unlearner.train_) == len(train)


@pytest.mark.parametrize("name", ["l2ul", "gradient-ascent"])
def test_continual_requests_keep_earlier_records_forgotten(name, digits01, trained):
    train, _ = digits01
    chosen = _forget_ids(train, trained, 24, seed=6)
    unlearner = _make(name, trained).attach(train)
    forgotten: list[int] = []
    for t, ids in enumerate(np.split(chosen, 3)):
        result = unlearner.forget(Remove(ids=ids))
        forgotten.extend(ids.tolist())
        d = result.diagnostics
        assert d["goal_reached"] == 1.0
        if t:
            assert d["n_earlier"] == 8 * t and d["earlier_at_goal"] == 1.0
        assert accuracy(unlearner, train.select(forgotten)) == 0.0
    assert len(unlearner.forgotten_) == 24


def test_continual_state_survives_save_and_load(tmp_path, digits01, trained):
    train, _ = digits01
    ids = _forget_ids(train, trained, 8, seed=7)
    unlearner = L2UL(trained, lr=1e-2).attach(train)
    unlearner.forget(Remove(ids=ids[:4]))
    unlearner.save(tmp_path / "u")
    loaded = Unlearner.load(tmp_path / "u", model=_mlp_model())
    assert isinstance(loaded, L2UL) and loaded.input_range_ == unlearner.input_range_
    np.testing.assert_array_equal(loaded.forgotten_.ids, unlearner.forgotten_.ids)
    assert torch.equal(loaded.model_.theta, unlearner.model_.theta)
    a, b = unlearner.forget(Remove(ids=ids[4:])), loaded.forget(Remove(ids=ids[4:]))
    assert a.diagnostics["n_earlier"] == b.diagnostics["n_earlier"] == 4
    assert torch.allclose(loaded.model_.theta, unlearner.model_.theta)


def test_negative_ce_runs_away_where_the_complement_loss_reaches_the_goal(digits01, trained):
    """Why ``forget_loss="complement"`` is the default (the paper's ``-CE`` is an option).

    Ascent on ``-CE`` collapses this MLP into one class (8), so the forget record labelled 8
    is never misclassified and the loss runs off to infinity: the run stops at the last
    finite model and reports it. ``-log(1 - p_y)`` reaches the goal in a few steps.
    """
    train, test = digits01
    ids = _forget_ids(train, trained, 12, seed=1)
    assert 8 in train.select(ids).y
    runaway = GradientAscent(trained, goal="correction", forget_loss="neg-ce").attach(train)
    d = runaway.forget(Remove(ids=ids)).diagnostics
    assert d["goal_reached"] == 0.0 and d["diverged"] == 1.0 and d["stopped_by_cap"] == 0.0
    assert d["forget_accuracy"] > 0.0 and d["steps"] < 1000
    # rolled back to the last finite step: finite parameters and outputs
    assert bool(torch.isfinite(runaway.model_.theta).all())
    assert np.isfinite(runaway.model_.predict_proba(test.X)).all()
    assert accuracy(runaway, test) < 0.15  # collapsed into one class
    reached = GradientAscent(trained, goal="correction").attach(train)
    reached = reached.forget(Remove(ids=ids)).diagnostics
    assert reached["goal_reached"] == 1.0 and reached["steps"] < 50


def test_constant_importance_gives_no_nan(digits01):
    train, _ = digits01

    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = MLP(64, (32,), 10)
            self.unused = nn.Linear(3, 3)  # gets no gradient: constant (zero) importance

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = TorchModel(WithUnused(), epochs=20, lr=1e-2, batch_size=64, seed=0).fit(train)
    ids = _forget_ids(train, model, 5, seed=9)
    x = torch.tensor(train.select(ids).X)
    inverted = invert_importance(mas_importance(model.module_, x))
    assert torch.equal(inverted["unused.weight"], torch.ones(3, 3))  # guarded, not NaN
    assert all(bool(torch.isfinite(t).all()) for t in inverted.values())
    unlearner = L2UL(model, weight_decay=0.0, lr=1e-2).attach(train)
    result = unlearner.forget(Remove(ids=ids))
    assert bool(torch.isfinite(unlearner.model_.theta).all())
    assert result.diagnostics["goal_reached"] == 1.0
    # the unused layer is anchored (weight 1) and gets no gradient: it does not move
    after = unlearner.model_.module_.unused.weight
    assert torch.equal(after, model.module_.unused.weight)


def test_bad_options_and_models_are_rejected(digits01, trained):
    train, _ = digits01
    for options, word in [
        (dict(forget_loss="ce"), "forget_loss"),
        (dict(lr=0.0), "lr"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(bn_mode="frozen"), "bn_mode"),
        (dict(eps=-1.0), "eps"),
        (dict(n_adv=0), "n_adv"),
        (dict(target_sampling="x"), "target_sampling"),
        (dict(input_range=(1.0, 0.0)), "input_range"),
        (dict(lam=-1.0), "lam"),
    ]:
        with pytest.raises(ValueError, match=word):
            L2UL(trained, **options).attach(train)
    with pytest.raises(ValueError, match="forget_loss"):
        GradientAscent(trained, forget_loss="ce").attach(train)
    with pytest.raises(ValueError, match="epochs"):
        FineTune(trained, epochs=0).attach(train)
    linear = LogisticRegression(l2=1e-3).fit(train)
    with pytest.raises(TypeError, match="TorchModel"):
        GradientAscent(linear).attach(train)


@pytest.mark.parametrize("name", sorted(METHODS) + ["finetune"])
def test_generic_contract(name, digits01):
    """``check_unlearner``: bad requests, empty requests, result fields, repeatability."""
    train, _ = digits01
    small = train.take(np.arange(300))
    if name == "finetune":

        def factory() -> Unlearner:
            return FineTune(_mlp_model(epochs=5), epochs=1)

    else:

        def factory() -> Unlearner:
            return _make(name, _mlp_model(epochs=5))

    check_unlearner(factory, small, atol=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    """L2UL on CUDA in the setting its defaults were measured in (``test_l2ul.py``: raw digit
    pixels, MLP(64) trained 20 epochs, 8 records): the goal is reached and the test
    accuracy kept as on the CPU. (A 5-epoch MLP on pixels scaled to [0, 1] does not reach
    its goal with the defaults on either device: seeds 0 and 1 stop at the cap on the CPU.)"""
    split = ob.datasets.load("digits")
    train, test = split.train, split.test
    model = TorchModel(MLP(64, (64,), 10), epochs=20, lr=1e-2, batch_size=64, device="cuda")
    model.fit(train)
    ids = np.random.default_rng(0).choice(train.ids, 8, replace=False)
    assert accuracy(model, train.select(ids)) == 1.0  # non-vacuous
    unlearner = L2UL(model).attach(train)
    result = unlearner.forget(Remove(ids=ids))
    assert result.diagnostics["goal_reached"] == 1.0
    assert accuracy(unlearner, train.select(ids)) == 0.0
    assert 100 * (accuracy(model, test) - accuracy(unlearner, test)) <= 10.0
    assert unlearner.model_.theta.device.type == "cuda"


# -- L2UL vs gradient ascent ---------------------------------------------------------------------
def _test_accuracy_drops(train, test, model, k, seeds, l2ul_options, ga_options):
    drops = {"gradient-ascent": [], "l2ul": []}
    base = accuracy(model, test)
    for seed in seeds:
        ids = _forget_ids(train, model, k, seed=seed)
        for name, options in (("gradient-ascent", ga_options), ("l2ul", l2ul_options)):
            unlearner = ob.unlearners.create(name, model, seed=seed, **options).attach(train)
            result = unlearner.forget(Remove(ids=ids))
            assert result.diagnostics["goal_reached"] == 1.0
            drops[name].append(base - accuracy(unlearner, test))
    return {name: float(np.mean(values)) for name, values in drops.items()}


def test_l2ul_loses_no_more_test_accuracy_than_gradient_ascent_mlp(digits01, trained):
    train, test = digits01
    drops = _test_accuracy_drops(
        train,
        test,
        trained,
        k=16,
        seeds=range(3),
        l2ul_options={"lr": 1e-2},
        ga_options=dict(goal="correction"),
    )
    assert drops["gradient-ascent"] > 0.0  # non-vacuity: the naive method does lose accuracy
    assert drops["l2ul"] <= drops["gradient-ascent"]


def test_l2ul_loses_no_more_test_accuracy_than_gradient_ascent_cnn():
    """About 8 s on one thread: 2,000 Fashion-MNIST images, a 2-layer CNN, 3 forget sets."""
    try:
        split = ob.datasets.load("fashion-mnist", limit=2000, seed=0)
    except (FileNotFoundError, OSError, ValueError) as error:
        pytest.skip(f"Fashion-MNIST not available: {error}")
    train, test = split.train, split.test
    model = TorchModel(SmallCNN(channels=(8, 16), hidden=64), epochs=8, lr=2e-3, batch_size=64)
    model.fit(train)
    drops = _test_accuracy_drops(
        train,
        test,
        model,
        k=16,
        seeds=range(3),
        l2ul_options={"lr": 1e-2, "n_adv": 10, "pgd_steps": 10},
        ga_options=dict(goal="correction"),
    )
    assert drops["gradient-ascent"] > 0.0
    assert drops["l2ul"] <= drops["gradient-ascent"]
