"""Population, SalUn and shadow-model membership inference (oblivio.audit.mia)."""

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio.audit.mia import (
    AttackInputData,
    AttackResult,
    AttackResults,
    AttackType,
    SklearnModel,
    balanced_accuracy,
    entropy,
    fit_clone,
    loss_attack_cv,
    mia_efficacy,
    modified_entropy,
    per_record_loss,
    posteriors,
    roc,
    run_attacks,
    run_shadow_attack,
    tpr_at_fpr,
)
from oblivio.data import Dataset


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # tiny L-BFGS problems are ~20x slower with multi-threaded BLAS on a busy machine
    with threadpool_limits(1):
        yield


def synthetic(n=600, d=20, seed=0, noise=2.0, name="synth"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.normal(scale=noise, size=n) > 0).astype(int)
    return Dataset(X, y, name=name)


# -- metrics: golden numbers computed by hand ---------------------------------------------
def test_auc_balanced_accuracy_tpr_small_golden():
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    result = AttackResult.from_scores("hand", labels, scores)
    # positive/negative pairs ranked correctly: 3 + 3 + 2 of 9
    assert result.auc == pytest.approx(8 / 9)
    # threshold 0.8: TPR 2/3, FPR 0 -> (2/3 + 1) / 2; threshold 0.3: TPR 1, FPR 1/3 -> same
    assert result.balanced_accuracy == pytest.approx(5 / 6)
    assert result.advantage == pytest.approx(2 / 3)
    assert result.tpr_at_1pct_fpr == pytest.approx(2 / 3)
    assert result.tpr_at_01pct_fpr == pytest.approx(2 / 3)
    assert (result.n_in, result.n_out) == (3, 3)


def test_tpr_at_low_fpr_golden():
    negatives = np.arange(1000, dtype=float)  # 0 .. 999
    positives = np.array([999.5, 998.5, 995.5, 990.5, 500.5])
    labels = np.r_[np.ones(5), np.zeros(1000)]
    scores = np.r_[positives, negatives]
    result = AttackResult.from_scores("hand", labels, scores)
    # FPR <= 0.1 %: at most one negative (999) above the threshold: 999.5 and 998.5 caught
    assert result.tpr_at_01pct_fpr == pytest.approx(0.4)
    # FPR <= 1 %: negatives 990..999 above: four positives caught
    assert result.tpr_at_1pct_fpr == pytest.approx(0.8)
    # negatives below each positive: 1000 + 999 + 996 + 991 + 501 of 5 * 1000
    assert result.auc == pytest.approx(4487 / 5000)
    curve = roc(labels, scores)
    assert tpr_at_fpr(curve, 1.0) == 1.0
    assert tpr_at_fpr(curve, 0.0) == pytest.approx(0.2)  # only 999.5 beats every negative
    assert balanced_accuracy(curve) == pytest.approx(max((curve.tpr + 1 - curve.fpr) / 2))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="both members"):
        roc(np.ones(3), np.arange(3.0))
    with pytest.raises(ValueError, match="0/1"):
        roc(np.array([0, 2]), np.arange(2.0))
    with pytest.raises(ValueError, match="finite"):
        roc(np.array([0, 1]), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="max_fpr"):
        tpr_at_fpr(roc(np.array([0, 1]), np.array([0.0, 1.0])), 2.0)


def test_per_record_statistics_golden():
    P = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    y = np.array([0, 0, 2])
    np.testing.assert_allclose(per_record_loss(P, y), [-np.log(0.7), 0.0, np.log(3)], atol=1e-12)
    np.testing.assert_allclose(
        entropy(P),
        [-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)), 0.0, np.log(3)],
        atol=1e-10,
    )
    # Song & Mittal: -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)
    expected0 = -0.3 * np.log(0.7) - 0.2 * np.log(0.8) - 0.1 * np.log(0.9)
    expected2 = -(2 / 3) * np.log(1 / 3) - 2 * (1 / 3) * np.log(2 / 3)
    np.testing.assert_allclose(modified_entropy(P, y), [expected0, 0.0, expected2], atol=1e-10)
    # a confident wrong prediction has a large modified entropy (entropy alone says 0)
    wrong = modified_entropy(np.array([[1.0, 0.0]]), np.array([1]))
    assert wrong[0] > 20


# -- threshold attacks ----------------------------------------------------------------------
def hand_input():
    members = np.array([[0.95, 0.05], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    non_members = np.array([[0.6, 0.4], [0.45, 0.55], [0.7, 0.3], [0.2, 0.8]])
    return AttackInputData(
        probs_in=members,
        probs_out=non_members,
        labels_in=np.array([0, 1, 0, 1]),
        labels_out=np.array([0, 1, 1, 1]),
    )


def test_run_attacks_hand_made_input():
    data = hand_input()
    results = run_attacks(data)
    assert [r.attack_type for r in results] == ["loss", "confidence", "entropy", "modified_entropy"]
    # member confidences p_y: .95 .9 .8 .7; non-members: .6 .55 .3 .8 -> pairs won 4+4+3.5+3
    assert results["confidence"].auc == pytest.approx(14.5 / 16)
    # the loss is a monotone transform of the confidence: same ROC
    assert results[AttackType.LOSS].auc == pytest.approx(results["confidence"].auc)
    frame = results.to_frame()
    assert list(frame["attack_type"]) == [r.attack_type for r in results]
    assert {"auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr"} <= set(frame)
    assert "confidence" in results.summary()
    assert results.best().auc == max(frame["auc"])
    with pytest.raises(KeyError, match="shadow"):
        results["shadow"]
    with pytest.raises(ValueError, match="run_shadow_attack"):
        run_attacks(data, ["shadow"])


def test_losses_only_input_and_save_load(tmp_path):
    data = AttackInputData(loss_in=np.array([0.1, 0.2, 0.5]), loss_out=np.array([0.4, 0.9, 1.5]))
    results = run_attacks(data, [AttackType.LOSS])
    assert results["loss"].auc == pytest.approx(8 / 9)
    with pytest.raises(ValueError, match="probabilities"):
        run_attacks(data, ["confidence"])
    path = results.save(tmp_path / "sub" / "mia.json")
    loaded = AttackResults.load(path)
    assert loaded.to_frame().equals(results.to_frame())
    np.testing.assert_array_equal(loaded["loss"].roc.fpr, results["loss"].roc.fpr)
    np.testing.assert_array_equal(loaded["loss"].roc.thresholds, results["loss"].roc.thresholds)
    assert not list((tmp_path / "sub").glob("*.tmp"))  # the temporary file was renamed


def test_attack_input_validation():
    good = hand_input()
    assert good.validate() is good
    bad = [
        (dict(probs_in=None), "probs_in"),
        (dict(labels_in=np.array([0, 1, 0])), "labels_in"),
        (dict(probs_out=np.array([[0.5, 0.6]] * 4)), "sum to 1"),
        (dict(probs_out=np.ones((4, 3)) / 3), "classes"),
        (dict(labels_out=np.array([0, 1, 2, 1])), "0..C-1"),
        (dict(probs_in=np.zeros((0, 2)), labels_in=np.zeros(0, dtype=int)), "no records"),
    ]
    for change, message in bad:
        data = hand_input()
        for key, value in change.items():
            setattr(data, key, value)
        with pytest.raises(ValueError, match=message):
            data.validate()


def test_from_model_overfit_vs_fresh_records():
    data = synthetic(n=400, d=30)
    train, test = data.take(np.arange(40)), data.take(np.arange(200, 400))
    model = ob.models.LogisticRegression(l2=1e-4, fit_intercept=True).fit(train)
    leaked = run_attacks(AttackInputData.from_model(model, train, test))
    # null: two sets of records the model never saw
    null = run_attacks(AttackInputData.from_model(model, data.take(np.arange(100, 200)), test))
    assert abs(null["loss"].auc - 0.5) < 0.1
    # an overfitted model: training records have clearly lower loss
    assert leaked["loss"].auc > 0.6
    assert leaked["loss"].auc > null["loss"].auc + 0.1
    assert leaked["loss"].balanced_accuracy > 0.7


# -- SalUn MIA-efficacy and the starting-kit attack -----------------------------------------
def test_mia_efficacy_original_vs_retrained():
    data = synthetic(n=600, d=30)
    train, test = data.take(np.arange(60)), data.take(np.arange(300, 600))
    forget, retain = train.take(np.arange(20)), train.take(np.arange(20, 60))
    template = ob.models.LogisticRegression(l2=1e-4, fit_intercept=True)
    original, retrained = template.clone().fit(train), template.clone().fit(retain)
    before = mia_efficacy(original, retain=retain, test=test, forget=forget)
    after = mia_efficacy(retrained, retain=retain, test=test, forget=forget)
    assert before.feature == "confidence" and before.n_forget == 20
    assert before.n_shadow == 40  # min(|retain|, |test|)
    # the original model trained on the forget set: its records look like members
    assert before.efficacy < 0.15
    assert after.efficacy > before.efficacy + 0.2
    assert after.percent == pytest.approx(100 * after.efficacy)
    again = mia_efficacy(retrained, retain=retain, test=test, forget=forget)
    assert again == after  # seeded
    for feature in ("correctness", "entropy", "modified_entropy", "probs"):
        value = mia_efficacy(original, retain=retain, test=test, forget=forget, feature=feature)
        assert 0.0 <= value.efficacy <= 1.0
    with pytest.raises(ValueError, match="feature"):
        mia_efficacy(original, retain=retain, test=test, forget=forget, feature="loss")
    with pytest.raises(ValueError, match="non-empty"):
        mia_efficacy(original, retain=retain, test=test, forget=forget.empty())


def test_loss_attack_cv():
    data = synthetic(n=800, d=50, noise=1.0)
    train, test = data.take(np.arange(100)), data.take(np.arange(400, 800))
    forget, retain = train.take(np.arange(50)), train.take(np.arange(50, 100))
    template = ob.models.LogisticRegression(l2=1e-3, fit_intercept=True)
    original, retrained = template.clone().fit(train), template.clone().fit(retain)
    leaked = loss_attack_cv(original, forget, test)
    null = loss_attack_cv(retrained, forget, test)
    assert abs(null - 0.5) < 0.1
    assert leaked > 0.6
    assert leaked > null + 0.1
    assert loss_attack_cv(original, forget, test) == leaked
    with pytest.raises(ValueError, match=">= 5"):
        loss_attack_cv(original, forget.take(np.arange(3)), test)


# -- shadow-model attack --------------------------------------------------------------------
def test_shadow_attack_overfit_and_null():
    data = synthetic(n=800, d=20)
    target_train = data.take(np.arange(60))
    fresh, fresh2 = data.take(np.arange(60, 120)), data.take(np.arange(120, 180))
    shadow_data = data.take(np.arange(400, 800))
    tree = SklearnModel(DecisionTreeClassifier(random_state=0))
    target = tree.clone().fit(target_train)
    hit = run_shadow_attack(
        target,
        members=target_train,
        non_members=fresh,
        shadow_data=shadow_data,
        n_shadows=3,
        attack_classifier="dt",
    )
    null = run_shadow_attack(
        target,
        members=fresh2,
        non_members=fresh,
        shadow_data=shadow_data,
        n_shadows=3,
        attack_classifier="dt",
    )
    assert hit.attack_type == "shadow"
    assert hit.auc > 0.65
    assert abs(null.auc - 0.5) < 0.12
    again = run_shadow_attack(
        target,
        members=target_train,
        non_members=fresh,
        shadow_data=shadow_data,
        n_shadows=3,
        attack_classifier="dt",
    )
    assert again.auc == hit.auc
    # a raw scikit-learn estimator works as the shadow template too
    raw = run_shadow_attack(
        target,
        members=target_train,
        non_members=fresh,
        shadow_data=shadow_data,
        shadow_model=DecisionTreeClassifier(random_state=0),
        n_shadows=3,
        attack_classifier="lr",
    )
    assert raw.auc > 0.6
    with pytest.raises(ValueError, match="n_shadows"):
        run_shadow_attack(
            target, members=fresh, non_members=fresh2, shadow_data=shadow_data, n_shadows=0
        )


# -- model adapters -------------------------------------------------------------------------
def test_sklearn_model_maps_missing_classes():
    X = np.arange(12, dtype=float).reshape(6, 2)
    data = Dataset(X, np.array([0, 0, 2, 2, 0, 2]), classes=(0, 1, 2))
    model = SklearnModel(DecisionTreeClassifier(random_state=0)).fit(data)
    P = model.predict_proba(X)
    assert P.shape == (6, 3)
    np.testing.assert_array_equal(P[:, 1], 0.0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert model.theta.numel() == 0
    assert isinstance(model.clone(), SklearnModel) and not hasattr(model.clone(), "estimator_")
    raw = DecisionTreeClassifier(random_state=0).fit(X, data.y)
    np.testing.assert_allclose(posteriors(raw, X, 3), P)
    with pytest.raises(ValueError, match="expected 4"):
        posteriors(ob.models.LogisticRegression(l2=1e-2).fit(data), X, 4)
    assert isinstance(fit_clone(DecisionTreeClassifier(), data), DecisionTreeClassifier)
