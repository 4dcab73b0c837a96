"""oblivio.sklearn: scikit-learn's estimator contract, Pipeline/GridSearchCV, forget()."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import oblivio as ob
from oblivio.sklearn import UnlearningLogisticRegression

ESTIMATORS = [
    UnlearningLogisticRegression(method="second-order"),
    UnlearningLogisticRegression(method="retrain"),
    UnlearningLogisticRegression(method="certified", sigma=0.1, random_state=0),
]


@parametrize_with_checks(ESTIMATORS)
def test_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    split = ob.datasets.load("digits", normalize="l2")
    return split.train.X, split.train.y, split.test.X, split.test.y


@pytest.mark.parametrize("method", ["second-order", "retrain", "certified"])
def test_forget_matches_retraining(digits, method):
    X, y, X_test, _ = digits
    keep = np.isin(y, [3, 8])
    X, y = X[keep], np.where(y[keep] == 3, "three", "eight")
    options = {"sigma": 0.0} if method == "certified" else {}
    clf = UnlearningLogisticRegression(method=method, C=10.0, **options).fit(X, y)
    rows = np.arange(0, 40, 2)
    reference = UnlearningLogisticRegression(method="retrain", C=10.0).fit(X, y)
    # the reference keeps l2 = 1/(C n) of the full set, as forget() does
    rest = np.setdiff1d(np.arange(len(y)), rows)
    before = clf.coef_.copy()
    clf.forget(rows)
    reference.forget(rows)
    retrained = reference.coef_
    assert np.linalg.norm(before - retrained) > 1e-3  # removal changes the model
    tolerance = 1e-6 if method == "retrain" else 0.05 * np.linalg.norm(before - retrained)
    assert np.linalg.norm(clf.coef_ - retrained) <= tolerance
    assert set(clf.predict(X_test)) <= {"three", "eight"}
    (result,) = clf.unlearning_report_
    assert result.n_affected == len(rows) and result.method == method
    assert len(clf.unlearner_.train_) == len(rest)
    # the same rows again: named as already removed, nothing changes
    with pytest.raises(ob.RequestError, match="already removed"):
        clf.forget(rows[:1])
    assert len(clf.unlearning_report_) == 1


def test_sample_ids_name_rows(digits):
    X, y, *_ = digits
    ids = np.arange(len(y)) * 10 + 7
    clf = UnlearningLogisticRegression(method="retrain").fit(X, y, sample_ids=ids)
    clf.forget([7, 17])
    assert not clf.unlearner_.train_.contains([7, 17]).any()
    with pytest.raises(ob.RequestError, match="3"):
        clf.forget([3])


def test_pipeline_and_grid_search(digits):
    X, y, X_test, y_test = digits
    pipe = make_pipeline(StandardScaler(), UnlearningLogisticRegression(method="second-order"))
    search = GridSearchCV(pipe, {"unlearninglogisticregression__C": [0.1, 1.0]}, cv=2)
    search.fit(X[:600], y[:600])
    assert search.best_params_["unlearninglogisticregression__C"] in (0.1, 1.0)
    best = search.best_estimator_
    accuracy = best.score(X_test, y_test)
    best[-1].forget(range(10))
    assert best[-1].unlearning_report_[0].n_affected == 10
    assert abs(best.score(X_test, y_test) - accuracy) < 0.05
    assert clone(best[-1]).get_params() == best[-1].get_params()


def test_bad_parameters_name_the_value(digits):
    X, y, *_ = digits
    with pytest.raises(ValueError, match="'newton'"):
        UnlearningLogisticRegression(method="newton").fit(X, y)
    with pytest.raises(ValueError, match="-1"):
        UnlearningLogisticRegression(C=-1).fit(X, y)
