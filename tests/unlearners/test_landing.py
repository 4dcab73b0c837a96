"""Approximate methods judge their own result against doing nothing (and against retraining)."""

import warnings

import numpy as np
import pytest
import torch

import oblivio as ob
from oblivio.audit.metrics import param_distance
from oblivio.models import LogisticRegression
from oblivio.unlearners import FirstOrder, SecondOrder, UnlearningError


@pytest.fixture(scope="module")
def digits():
    return ob.datasets.load("digits").train


@pytest.fixture(scope="module")
def cancer():
    return ob.datasets.load("breast-cancer", normalize="standard").train


def _objective_gradient_norm(model, data, theta):
    g = model.grad(data, theta) + model.l2 * len(data) * theta
    return float(torch.linalg.vector_norm(g))


def test_first_order_on_all_columns_warns_that_it_missed(digits):
    model = LogisticRegression(l2=1e-3).fit(digits)
    request = ob.ReplaceFeatures(features=list(range(64)), value=0.0)
    unlearner = FirstOrder(model).attach(digits)
    with pytest.warns(ob.UnlearningWarning, match=r"first-order: the update did not land"):
        result = unlearner.forget(request)
    assert result.diagnostics["landed"] == 0.0 and result.diagnostics["residual_ratio"] > 0.99
    # the verdict is right: retraining moves far, first order hardly at all
    retrained = LogisticRegression(l2=1e-3).fit(unlearner.train_)
    assert param_distance(unlearner.model_, retrained) > 0.9 * param_distance(model, retrained)
    # raise: nothing changes; ignore: no warning, the diagnostic still says so
    strict = FirstOrder(model, on_failure="raise").attach(digits)
    with pytest.raises(UnlearningError, match="did not land.*Nothing was changed"):
        strict.forget(request)
    assert torch.equal(strict.model_.theta, model.theta) and len(strict.history_) == 0
    assert len(strict.train_) == len(digits) and strict.train_ is digits
    quiet = FirstOrder(model, on_failure="ignore").attach(digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.forget(request).diagnostics["landed"] == 0.0


def test_residual_ratio_is_the_residual_against_doing_nothing(cancer):
    """At an optimum, residual_ratio = ||grad L(new; D~)|| / ||grad L(old; D~)|| exactly."""
    model = LogisticRegression(l2=1e-2).fit(cancer)
    request = ob.Remove(ids=cancer.ids[:5])
    unlearner = SecondOrder(model).attach(cancer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small removal lands: no warning
        result = unlearner.forget(request)
    edited = unlearner.train_
    expected = _objective_gradient_norm(model, edited, unlearner.model_.theta) / (
        _objective_gradient_norm(model, edited, model.theta)
    )
    assert result.diagnostics["residual_ratio"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert result.diagnostics["landed"] == 1.0 and expected < 0.1


def test_steps_auto_lands_a_large_feature_edit(cancer):
    """5 of 30 standardised columns, every row: one Newton step leaves > 0.1x."""
    model = LogisticRegression(l2=1e-3).fit(cancer)
    request = ob.ReplaceFeatures(features=[0, 1, 2, 3, 4], value=0.0)
    one = SecondOrder(model).attach(cancer)
    with pytest.warns(ob.UnlearningWarning, match="steps='auto'"):
        single = one.forget(request)
    auto = SecondOrder(model, steps="auto").attach(cancer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repeated = auto.forget(request)
    assert single.diagnostics["residual_ratio"] > 0.1
    assert repeated.diagnostics["residual_ratio"] <= 0.1
    assert repeated.diagnostics["newton_steps"] >= 2 and repeated.diagnostics["landed"] == 1.0
    retrained = LogisticRegression(l2=1e-3).fit(auto.train_)
    assert param_distance(model, retrained) > 1.0  # the edit moves the optimum (non-vacuous)
    assert param_distance(auto.model_, retrained) < 0.25 * param_distance(one.model_, retrained)


def test_steps_auto_on_a_small_removal_takes_one_step(cancer):
    model = LogisticRegression(l2=1e-2).fit(cancer)
    request = ob.Remove(ids=cancer.ids[:3])
    plain = SecondOrder(model).attach(cancer)
    auto = SecondOrder(model, steps="auto").attach(cancer)
    assert auto.forget(request).diagnostics["newton_steps"] == 1.0
    plain.forget(request)
    assert torch.equal(plain.model_.theta, auto.model_.theta)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_failure": "loudly"}, "on_failure"),
        ({"land_ratio": 0.0}, "land_ratio"),
        ({"land_ratio": 2}, "land_ratio"),
        ({"steps": "auto", "schedule": "misclassified"}, "steps='auto'"),
    ],
)
def test_landing_options_are_checked(cancer, options, message):
    model = LogisticRegression(l2=1e-2).fit(cancer)
    with pytest.raises(ValueError, match=message):
        SecondOrder(model, **options).attach(cancer)
    with pytest.raises(ValueError, match=r"steps must be a positive integer, got 'auto'"):
        FirstOrder(model, steps="auto").attach(cancer)


def test_on_failure_survives_save_and_load(cancer, tmp_path):
    model = LogisticRegression(l2=1e-2).fit(cancer)
    unlearner = SecondOrder(model, steps="auto", on_failure="raise", land_ratio=0.2)
    loaded = ob.load(unlearner.attach(cancer).save(tmp_path / "s"))
    assert (loaded.steps, loaded.on_failure, loaded.land_ratio) == ("auto", "raise", 0.2)
    assert np.array_equal(loaded.train_.ids, cancer.ids)


def test_finetune_says_when_a_feature_edit_did_not_land():
    from oblivio.models import MLP, TorchModel

    torch.set_num_threads(1)
    split = ob.datasets.load("digits", normalize="standard")
    train = split.train.take(np.arange(300))
    net = TorchModel(MLP(64, hidden=(16,), n_classes=10), epochs=8, lr=1e-2, seed=0).fit(train)
    unlearner = ob.unlearners.create("finetune", net, epochs=2).attach(train)
    with pytest.warns(ob.UnlearningWarning, match="finetune: the update did not land"):
        result = unlearner.forget(ob.ReplaceFeatures(features=list(range(64)), value=0.0))
    assert result.diagnostics["landed"] == 0.0
    assert result.diagnostics["feature_sensitivity_ratio"] > 0.9
    # the verdict is right: the model still classifies the original images
    assert ob.audit.accuracy(unlearner, split.test) > 0.8
    # a removal has no feature check: no verdict, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        removal = unlearner.forget(ob.Remove(ids=unlearner.train_.ids[:3]))
    assert "landed" not in removal.diagnostics
