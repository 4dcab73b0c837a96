"""Adopting fitted scikit-learn models (ob.models.from_sklearn) and the SklearnModel adapter."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

import oblivio as ob
from oblivio.models import PipelineModel, SklearnModel, from_sklearn


@pytest.fixture(scope="module")
def digits():
    split = ob.datasets.load("digits", normalize="l2")
    return split.train, split.test


@pytest.fixture(scope="module")
def binary():
    split = ob.datasets.load("digits", normalize="l2", classes=[3, 8])
    return split.train, split.test


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_binary_predictions_match(binary, fit_intercept):
    data, test = binary
    sk = SkLogistic(C=10.0, fit_intercept=fit_intercept, tol=1e-10, max_iter=5000)
    sk.fit(data.X, data.y)
    model = from_sklearn(sk, n_samples=len(data))
    np.testing.assert_allclose(model.predict_proba(test.X), sk.predict_proba(test.X), atol=1e-6)
    assert model.l2 == pytest.approx(1 / (10.0 * len(data)))
    # Without an intercept both objectives are the same: sklearn's optimum is oblivio's.
    if not fit_intercept:
        refit = ob.models.LogisticRegression(l2=model.l2).fit(data)
        np.testing.assert_allclose(refit.coef_, model.coef_, atol=1e-5)  # sklearn lbfgs stops ~1e-6


def test_multinomial_and_ovr_predictions_match(digits):
    train, test = digits
    sk = SkLogistic(C=1.0, max_iter=2000).fit(train.X, train.y)
    model = from_sklearn(sk, n_samples=len(train))
    assert model.mode(train.n_classes) == "multinomial"
    np.testing.assert_allclose(model.predict_proba(test.X), sk.predict_proba(test.X), atol=1e-6)
    ovr = OneVsRestClassifier(SkLogistic(C=1.0, max_iter=2000)).fit(train.X, train.y)
    adopted = from_sklearn(ovr, n_samples=len(train))
    assert adopted.multi_class == "ovr"
    np.testing.assert_allclose(adopted.predict_proba(test.X), ovr.predict_proba(test.X), atol=1e-6)


def test_string_labels_keep_classes(binary):
    data, test = binary
    names = np.array(["three", "eight"])[data.y]
    sk = SkLogistic().fit(data.X, names)
    model = from_sklearn(sk)
    assert list(model.classes_) == sorted(["three", "eight"])
    np.testing.assert_array_equal(model.classes_[model.predict(test.X)], sk.predict(test.X))


def test_pipeline_keeps_a_frozen_transform_and_unlearns(binary):
    data, test = binary
    pipe = make_pipeline(StandardScaler(), SkLogistic(C=0.5, tol=1e-10, max_iter=5000))
    pipe.fit(data.X, data.y)
    model = from_sklearn(pipe, n_samples=len(data))
    assert isinstance(model, PipelineModel)
    np.testing.assert_allclose(model.predict_proba(test.X), pipe.predict_proba(test.X), atol=1e-6)
    # Polish to oblivio's optimum (intercept penalised), then a Newton removal against retraining.
    model.fit(data, init=model.theta)
    u = ob.unlearners.create("second-order", model).attach(data)
    forget = data.ids[:10]
    u.forget(ob.Remove(ids=forget))
    retrained = model.clone().fit(data.drop(forget))
    original_gap = np.linalg.norm(model.theta - retrained.theta)
    gap = np.linalg.norm(u.model_.theta - retrained.theta)
    assert original_gap > 1e-4 and gap < 0.05 * original_gap
    # the scaler is the same fitted object, never refitted
    assert model.transform[0] is pipe[0]


def test_without_n_samples_predicts_but_objective_asks_for_it(binary):
    data, test = binary
    model = from_sklearn(SkLogistic().fit(data.X, data.y))
    model.predict(test.X)
    with pytest.raises(ValueError, match="n_samples"):
        ob.unlearners.create("second-order", model).attach(data)


@pytest.mark.parametrize(
    ("estimator", "error", "message"),
    [
        (DecisionTreeClassifier(), TypeError, "cannot adopt a DecisionTreeClassifier; supported"),
        (LinearSVC(), TypeError, "cannot adopt a LinearSVC"),
        (SkLogistic(C=1.0, l1_ratio=1.0, solver="saga"), ValueError, "L2 penalty"),
        (SkLogistic(class_weight="balanced"), ValueError, "class_weight"),
    ],
)
def test_refuses_what_it_cannot_adopt(binary, estimator, error, message):
    data = binary[0]
    estimator.fit(data.X, data.y)
    with pytest.raises(error, match=message):
        from_sklearn(estimator)


def test_refuses_unfitted():
    with pytest.raises(ValueError, match="fitted"):
        from_sklearn(SkLogistic())


def test_sklearn_model_adapter_lives_in_models(digits):
    train, test = digits
    tree = SklearnModel(DecisionTreeClassifier(random_state=0)).fit(train)
    assert tree.predict_proba(test.X).shape == (len(test), train.n_classes)
    from oblivio.audit.mia import SklearnModel as OldPath

    assert OldPath is SklearnModel
    with pytest.raises(TypeError, match="only the unlearners that retrain"):
        ob.unlearners.create("first-order", tree).attach(train)


def test_a_raw_sklearn_estimator_is_refused_with_the_way_in(binary):
    data = binary[0]
    with pytest.raises(TypeError, match=r"from_sklearn\(estimator, n_samples=len\(train\)\)"):
        ob.unlearners.create("retrain", SkLogistic().fit(data.X, data.y))
