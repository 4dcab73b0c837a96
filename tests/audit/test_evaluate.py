"""oblivio.audit.evaluate: the table that compares an unlearned model with retraining."""

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio.audit.evaluate import MODEL_METRICS, PAIR_METRICS, Evaluation
from oblivio.data import Dataset
from oblivio.models import SklearnModel


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 50))
    y = (X @ rng.normal(size=50) + rng.normal(size=700) > 0).astype(int)
    data = Dataset(X, y, name="synth")
    return data.take(np.arange(100)), data.take(np.arange(300, 700))


def test_exact_unlearning_has_zero_gaps(split):
    train, test = split
    model = ob.models.LogisticRegression(l2=1e-3, fit_intercept=True)
    unlearner = ob.unlearners.create("retrain", model).fit(train)
    forget_ids = train.ids[:50]
    forget, retain = train.select(forget_ids), train.drop(forget_ids)
    original_model = unlearner.model_
    unlearner.forget(ob.Remove(ids=forget_ids))
    reference = model.clone().fit(retain)
    evaluation = ob.audit.evaluate(
        unlearner, forget=forget, retain=retain, test=test, reference=reference
    )
    for name in MODEL_METRICS:
        assert evaluation.gaps[name] == pytest.approx(0.0, abs=1e-12), name
    assert evaluation.gaps["param_distance"] < 1e-5
    for name in ("agreement_forget", "agreement_retain", "agreement_test"):
        assert evaluation.gaps[name] == 1.0
    # non-vacuous: the model before unlearning is far from the reference
    before = ob.audit.evaluate(
        original_model, forget=forget, retain=retain, test=test, reference=reference
    )
    assert before.gaps["param_distance"] > 1.0
    assert before.gaps["accuracy_forget"] > 0.1  # it had learnt the forget set
    assert before.gaps["mia_auc"] > 0.1  # forget records still look like members
    assert before.gaps["mia_efficacy"] < -0.1
    assert before.gaps["agreement_forget"] < 1.0
    assert before.metrics["accuracy_forget"] == 1.0 and before.metrics["accuracy_retain"] == 1.0


def test_table_without_reference_and_round_trip(split, tmp_path):
    train, test = split
    model = ob.models.LogisticRegression(l2=1e-2, fit_intercept=True).fit(train)
    forget, retain = train.take(np.arange(10)), train.take(np.arange(10, 100))
    evaluation = ob.audit.evaluate(model, forget=forget, retain=retain, test=test)
    assert evaluation.reference is None and evaluation.gaps == {}
    frame = evaluation.to_frame()
    assert list(frame.columns) == ["model"] and list(frame.index) == list(MODEL_METRICS)
    assert evaluation.sizes == {"forget": 10, "retain": 90, "test": 400}
    assert 0.0 <= evaluation.metrics["mia_efficacy"] <= 1.0
    assert "mia_auc" in evaluation.summary()
    loaded = Evaluation.load(evaluation.save(tmp_path / "eval.json"))
    assert loaded.to_frame().equals(frame)
    # an empty forget set: nan, not a crash
    empty = ob.audit.evaluate(model, forget=train.empty(), retain=train, test=test)
    assert np.isnan(empty.metrics["accuracy_forget"]) and np.isnan(empty.metrics["mia_auc"])
    loaded = Evaluation.load(empty.save(tmp_path / "empty.json"))
    assert np.isnan(loaded.metrics["mia_efficacy"])


def test_any_model_with_predict_proba(split):
    train, test = split
    forget, retain = train.take(np.arange(30)), train.take(np.arange(30, 100))
    tree = SklearnModel(DecisionTreeClassifier(random_state=0))
    original, reference = tree.clone().fit(train), tree.clone().fit(retain)
    evaluation = ob.audit.evaluate(
        original, forget=forget, retain=retain, test=test, reference=reference
    )
    assert np.isnan(evaluation.gaps["param_distance"])  # no parameter vector
    assert set(PAIR_METRICS) <= set(evaluation.gaps)
    assert evaluation.gaps["accuracy_forget"] > 0  # the tree memorised the forget set
    # a raw scikit-learn estimator
    raw = DecisionTreeClassifier(random_state=0).fit(retain.X, retain.y)
    plain = ob.audit.evaluate(raw, forget=forget, retain=retain, test=test)
    assert plain.metrics["accuracy_retain"] == 1.0


def test_loss_histogram_plot(split, tmp_path):
    from oblivio.audit.plots import plot_loss_histogram, plot_roc

    train, test = split
    forget, retain = train.take(np.arange(30)), train.take(np.arange(30, 100))
    model = ob.models.LogisticRegression(l2=1e-3, fit_intercept=True)
    original, reference = model.clone().fit(train), model.clone().fit(retain)
    figure = plot_loss_histogram(original, forget, test, reference=reference, title="losses")
    figure.savefig(tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 1000
    results = ob.audit.run_attacks(ob.audit.AttackInputData.from_model(original, forget, test))
    plot_roc(results, log_scale=False).savefig(tmp_path / "roc.png")
    assert len(figure.axes[0].patches) > 0
    with pytest.raises(TypeError, match="cannot plot"):
        plot_roc(3.0)
