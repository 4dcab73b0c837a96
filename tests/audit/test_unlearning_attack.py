"""The unlearning attack of Chen et al. (CCS 2021): features, defences, metrics, end to end."""

import argparse
import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio.audit import command
from oblivio.audit.unlearning_attack import (
    BASELINE,
    FEATURES,
    Defense,
    TemperatureScaled,
    UnlearningAttackInput,
    UnlearningAttackResults,
    build_feature,
    collect_posteriors,
    deg_count,
    deg_rate,
    direct_concat,
    direct_diff,
    euclidean_distance,
    label_only,
    make_attack_classifier,
    run_unlearning_attack,
    sorted_concat,
    sorted_diff,
    temperature_scaling,
    top_k,
    unlearning_attack,
)
from oblivio.data import Dataset


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # tiny L-BFGS problems are ~20x slower with multi-threaded BLAS on a busy machine
    with threadpool_limits(1):
        yield


def synthetic(n=800, d=20, seed=0, noise=2.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.normal(scale=noise, size=n) > 0).astype(int)
    return Dataset(X, y, name="synth")


# An overfitting model: 21 parameters, 25 training records, almost no regularisation.
OVERFIT = dict(set_size=25, n_original=5, n_unlearn=40)


def overfit_model():
    return ob.models.LogisticRegression(l2=1e-3, fit_intercept=True)


# -- features on tiny posteriors ------------------------------------------------------------
P_O = np.array([[0.1, 0.6, 0.3]])
P_U = np.array([[0.5, 0.2, 0.3]])  # its own ascending order differs from P_O's


def test_feature_constructions_by_hand():
    np.testing.assert_allclose(direct_diff(P_O, P_U), [[-0.4, 0.4, 0.0]])
    # ascending order of P_O is (0, 2, 1); both vectors are permuted by it
    np.testing.assert_allclose(sorted_diff(P_O, P_U), [[0.1 - 0.5, 0.3 - 0.3, 0.6 - 0.2]])
    np.testing.assert_allclose(euclidean_distance(P_O, P_U), [[np.sqrt(0.32)]])
    np.testing.assert_allclose(direct_concat(P_O, P_U), [[0.1, 0.6, 0.3, 0.5, 0.2, 0.3]])
    np.testing.assert_allclose(sorted_concat(P_O, P_U), [[0.1, 0.3, 0.6, 0.5, 0.3, 0.2]])
    np.testing.assert_allclose(build_feature(BASELINE, P_O, P_U), P_O)
    shapes = {
        name: build_feature(name, np.tile(P_O, (4, 1)), np.tile(P_U, (4, 1))).shape
        for name in FEATURES
    }
    assert shapes == {
        "direct_diff": (4, 3),
        "sorted_diff": (4, 3),
        "euclidean": (4, 1),
        "direct_concat": (4, 6),
        "sorted_concat": (4, 6),
    }
    # sorting makes the feature class-agnostic: permuting the classes changes nothing
    perm = [2, 0, 1]
    np.testing.assert_allclose(sorted_diff(P_O[:, perm], P_U[:, perm]), sorted_diff(P_O, P_U))
    assert not np.allclose(direct_diff(P_O[:, perm], P_U[:, perm]), direct_diff(P_O, P_U))
    with pytest.raises(ValueError, match="equal shape"):
        direct_diff(P_O, np.ones((1, 2)) / 2)
    with pytest.raises(ValueError, match="unknown feature"):
        build_feature("cosine", P_O, P_U)


# -- defences ---------------------------------------------------------------------------------
def test_defences_change_posteriors_as_specified():
    P = np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    np.testing.assert_allclose(top_k(P, 2), [[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.3, 0.5]])
    np.testing.assert_allclose(top_k(P, 1)[0], [0.5, 1 / 6, 1 / 6, 1 / 6])
    np.testing.assert_allclose(top_k(P, 4), P)  # k >= C: nothing to hide
    np.testing.assert_allclose(top_k(np.array([[0.7, 0.3]]), 1), [[0.7, 0.3]])  # binary top-1
    np.testing.assert_array_equal(label_only(P), [[1, 0, 0, 0], [0, 0, 0, 1]])
    # T = 2 on (0.8, 0.2): softmax(log p / 2) = (sqrt .8, sqrt .2) / sum = (2/3, 1/3)
    np.testing.assert_allclose(temperature_scaling(np.array([[0.8, 0.2]]), 2.0), [[2 / 3, 1 / 3]])
    np.testing.assert_allclose(temperature_scaling(P, 1.0), P)
    assert np.ptp(temperature_scaling(P, 1e6), axis=1).max() < 1e-5  # towards uniform
    # zero probabilities stay zero and rows still sum to one
    np.testing.assert_allclose(temperature_scaling(np.array([[1.0, 0.0]]), 4.0), [[1.0, 0.0]])
    for name in ("top1", "top2", "label", "temperature:4", "t2", "none"):
        out = Defense.parse(name).apply(P)
        np.testing.assert_allclose(out.sum(axis=1), 1.0)
        assert np.all(np.argmax(out, axis=1) == np.argmax(P, axis=1))  # the label survives
    assert Defense.parse("top2") == Defense("top_k", k=2)
    assert Defense.parse("t4").name == "temperature:4"
    assert Defense.parse(None).name == "none"
    for bad in ("top0", "temperature:0", "blur", "topx"):
        with pytest.raises(ValueError):
            Defense.parse(bad)
    with pytest.raises(ValueError, match="k must be"):
        top_k(P, 0)


def test_defence_reaches_every_feature_including_the_baseline():
    # P_o alone separates the classes (0.95 vs 0.6 on class 0) and nothing flips:
    # after label-only publication no feature, the classical baseline included, carries signal
    rng = np.random.default_rng(0)

    def side(n):
        y = np.r_[np.ones(n), np.zeros(n)].astype(int)
        top = np.where(y == 1, 0.95, 0.6) + rng.uniform(-0.02, 0.02, 2 * n)
        p_o = np.column_stack([top, 1 - top])
        p_u = np.column_stack([top - 0.05 * y, 1 - top + 0.05 * y])
        return p_o, p_u, y

    so, su, sy = side(50)
    to, tu, ty = side(50)
    data = UnlearningAttackInput(so, su, sy, to, tu, ty)
    results = run_unlearning_attack(data, classifiers="dt", defenses=["none", "label"])
    for feature in (*FEATURES, BASELINE):
        assert results.get(feature, "dt", "none").auc > 0.9
        assert results.get(feature, "dt", "label").auc == pytest.approx(0.5)
    p_o, p_u, _ = data.side("target", Defense("label"))
    assert set(np.unique(p_o)) == {0.0, 1.0} and set(np.unique(p_u)) == {0.0, 1.0}


def test_deg_count_and_rate_golden():
    ours = np.array([0.9, 0.4, 0.6, 0.8])
    base = np.array([0.5, 0.5, 0.6, 0.7])
    assert deg_count(ours, base) == pytest.approx(2 / 4)  # ties do not count
    assert deg_rate(ours, base) == pytest.approx((0.4 - 0.1 + 0.0 + 0.1) / 4)
    with pytest.raises(ValueError):
        deg_count(ours, base[:2])


def test_attack_classifiers_have_reference_settings():
    assert make_attack_classifier("dt").max_leaf_nodes == 10
    forest = make_attack_classifier("rf", seed=3)
    assert (forest.n_estimators, forest.min_samples_leaf, forest.random_state) == (500, 30, 3)
    assert make_attack_classifier("rf", n_estimators=50).n_estimators == 50
    assert make_attack_classifier("lr")[-1].max_iter == 400
    mlp = make_attack_classifier("mlp")
    assert mlp.early_stopping and mlp.learning_rate_init == 0.01
    with pytest.raises(ValueError, match="unknown attack classifier"):
        make_attack_classifier("svm")


# -- end to end -------------------------------------------------------------------------------
def test_overfitting_model_leaks_and_null_case_does_not():
    data = synthetic()
    leak = unlearning_attack(data, overfit_model(), classifiers=["dt", "lr"], seed=0, **OVERFIT)
    null = unlearning_attack(
        data, overfit_model(), setting="null", classifiers=["dt", "lr"], seed=0, **OVERFIT
    )
    assert leak.metadata["n_target_rows"] == 2 * 5 * 40
    null_aucs = null.to_frame()["auc"]
    assert null_aucs.between(0.38, 0.62).all(), null.table()
    assert abs(null_aucs.mean() - 0.5) < 0.06
    # the deleted record's posterior moves, a fresh record's hardly does
    best = leak.to_frame().query("feature != @BASELINE")["auc"].max()
    assert best > 0.75, leak.table()
    assert leak.get("sorted_diff", "lr").auc > 0.7
    assert leak.get("sorted_diff", "lr").auc > null.get("sorted_diff", "lr").auc + 0.2
    assert leak.get("sorted_diff", "lr").deg_count > 0.5
    assert leak.get("sorted_diff", "lr").deg_rate > 0


def test_repeatable_with_a_seed_and_varies_without():
    data = synthetic(n=400)
    options = dict(set_size=20, n_original=2, n_unlearn=10)
    a = collect_posteriors(data, overfit_model(), seed=1, **options)
    b = collect_posteriors(data, overfit_model(), seed=1, **options)
    c = collect_posteriors(data, overfit_model(), seed=2, **options)
    np.testing.assert_array_equal(a.target_original, b.target_original)
    np.testing.assert_array_equal(a.shadow_unlearned, b.shadow_unlearned)
    assert not np.array_equal(a.target_original, c.target_original)
    ra = run_unlearning_attack(a, classifiers=["dt", "mlp"], seed=0)
    rb = run_unlearning_attack(b, classifiers=["dt", "mlp"], seed=0)
    assert ra.to_frame().equals(rb.to_frame())


def test_settings_produce_the_specified_rows():
    data = synthetic(n=400)
    base = dict(set_size=20, n_original=2, n_unlearn=5, seed=0)
    model = overfit_model()
    group = collect_posteriors(data, model, n_delete=3, **base)
    assert len(group.target_labels) == 2 * 5 * 6  # one row per deleted record + negatives
    assert group.target_labels.sum() == 2 * 5 * 3
    assert np.all(np.bincount(group.target_groups) == 6)
    multi = collect_posteriors(data, model, setting="multi_version", n_delete=3, **base)
    assert len(multi.target_labels) == 2 * 5 * 2
    remaining = collect_posteriors(data, model, setting="in_in", **base)
    assert len(remaining.target_labels) == 2 * 5 * 2
    online = collect_posteriors(data, model, setting="online", n_delete=2, **base)
    assert len(online.target_labels) == 2 * 5 * 4
    # M_u differs from M_o: positives (deleted records) move
    for rows in (group, multi, online):
        moved = np.abs(rows.target_original - rows.target_unlearned).max(axis=1)
        assert moved[rows.target_labels == 1].mean() > 1e-3
    assert group.metadata["n_delete"] == 3 and online.metadata["setting"] == "online"
    with pytest.raises(ValueError, match="setting"):
        collect_posteriors(data, model, setting="out_in", **base)
    with pytest.raises(ValueError, match="set_size"):
        collect_posteriors(data, model, set_size=1000, n_original=1, n_unlearn=1)
    with pytest.raises(ValueError, match="n_unlearn"):
        collect_posteriors(data, model, set_size=20, n_unlearn=0)


@pytest.mark.skipif(
    importlib.util.find_spec("oblivio.unlearners.sisa") is None, reason="SISA is not available"
)
def test_sisa_unlearner_by_name():
    if "sisa" not in ob.unlearners.available():
        pytest.skip("sisa is not registered")
    data = synthetic(n=600)
    rows = collect_posteriors(
        data,
        overfit_model(),
        unlearner="sisa",
        unlearner_options={"shards": 3, "seed": 0},
        set_size=60,
        n_original=2,
        n_unlearn=20,
        seed=0,
    )
    assert rows.metadata["distinct_deletions"] is True
    assert len(rows.target_labels) == 2 * 20 * 2
    moved = np.abs(rows.target_original - rows.target_unlearned).max(axis=1)
    positives, negatives = moved[rows.target_labels == 1], moved[rows.target_labels == 0]
    assert np.all(positives > 0)  # the deleted record's shard was retrained
    assert positives.mean() > 2 * negatives.mean()
    results = run_unlearning_attack(rows, features=["sorted_diff", "euclidean"], classifiers="lr")
    assert results.get("sorted_diff", "lr").auc > 0.6


@pytest.mark.skipif(not hasattr(ob.models, "TorchModel"), reason="TorchModel is not available")
def test_torch_mlp_with_training_time_temperature():
    import torch

    net = ob.models.MLP(10, hidden=(16,), n_classes=2)
    wrapped = TemperatureScaled(net, 4.0)
    x = torch.randn(5, 10)
    torch.testing.assert_close(wrapped(x), net(x) / 4.0)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaled(net, 0.0)
    data = synthetic(n=300, d=10)
    model = ob.models.TorchModel(wrapped, epochs=5, lr=1e-2, seed=0)
    options = dict(set_size=30, n_original=1, n_unlearn=5, seed=0)
    a = collect_posteriors(data, model, **options)
    b = collect_posteriors(data, model, **options)
    np.testing.assert_array_equal(a.target_unlearned, b.target_unlearned)  # seeded training
    assert a.target_original.shape == (10, 2)
    assert not np.allclose(a.target_original, a.target_unlearned)


def test_results_table_summary_save_load(tmp_path):
    data = synthetic(n=400)
    rows = collect_posteriors(data, overfit_model(), set_size=20, n_original=2, n_unlearn=10)
    results = run_unlearning_attack(rows, classifiers=["dt"], defenses=["none", "top1", "t4"])
    table = results.table()
    assert list(table.columns) == [*FEATURES, BASELINE]
    assert list(table.index) == [("none", "dt"), ("top1", "dt"), ("temperature:4", "dt")]
    assert "sorted_diff" in results.summary() and "DegCount" in results.summary()
    assert np.isnan(results.get(BASELINE, "dt").deg_count)
    path = results.save(tmp_path / "attack.json")
    loaded = UnlearningAttackResults.load(path)
    assert loaded.to_frame().equals(results.to_frame())
    assert loaded.metadata["setting"] == "in_out"
    rows_path = rows.save(tmp_path / "rows.json")
    again = UnlearningAttackInput.load(rows_path)
    np.testing.assert_array_equal(again.target_unlearned, rows.target_unlearned)
    assert (
        run_unlearning_attack(again, classifiers="dt")
        .to_frame()
        .equals(run_unlearning_attack(rows, classifiers="dt").to_frame())
    )
    with pytest.raises(ValueError, match="does not hold"):
        UnlearningAttackResults.load(rows_path)


def test_input_validation():
    P = np.array([[0.9, 0.1], [0.2, 0.8]])
    y = np.array([1, 0])
    UnlearningAttackInput(P, P, y, P, P, y).validate()
    with pytest.raises(ValueError, match="both 0"):
        UnlearningAttackInput(P, P, np.array([1, 1]), P, P, y).validate()
    with pytest.raises(ValueError, match="equal shape"):
        UnlearningAttackInput(P, P[:1], y, P, P, y).validate()
    with pytest.raises(ValueError, match="sum to 1"):
        UnlearningAttackInput(P, P, y, P * 2, P, y).validate()
    with pytest.raises(ValueError, match="unknown feature"):
        run_unlearning_attack(UnlearningAttackInput(P, P, y, P, P, y), features=["cosine"])


def test_plot_unlearning_auc(tmp_path):
    from oblivio.audit.plots import plot_roc, plot_unlearning_auc

    data = synthetic(n=400)
    results = unlearning_attack(
        data, overfit_model(), set_size=20, n_original=2, n_unlearn=10, classifiers=["dt", "lr"]
    )
    plot_unlearning_auc(results).savefig(tmp_path / "auc.png")
    plot_roc([r for r in results if r.classifier == "dt"]).savefig(tmp_path / "roc.png")
    assert (tmp_path / "auc.png").stat().st_size > 1000
    assert (tmp_path / "roc.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="defence"):
        plot_unlearning_auc(results, defense="label")


def test_cli_audit(tmp_path, capsys):
    from oblivio.cli import main

    code = main(
        [
            "audit",
            "--dataset",
            "breast-cancer",
            "--model",
            "dt",
            "--n-original",
            "2",
            "--set-size",
            "60",
            "--n-unlearn",
            "10",
            "--classifiers",
            "dt",
            "--defenses",
            "none,label",
            "--output",
            str(tmp_path / "out.json"),
            "--quiet",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "AUC on the target side" in captured.out and "label" in captured.out
    assert "protocol: custom (2 originals x 60 records" in captured.out
    assert captured.err == ""  # --quiet
    saved = UnlearningAttackResults.load(tmp_path / "out.json")
    assert len(saved) == 2 * 6


def test_cli_audit_protocols():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    name, sizes = command.protocol(parser.parse_args([]))
    assert name == "paper"
    assert sizes == {"n_original": 10, "set_size": 2000, "n_unlearn": 20, "attack_trees": 500}
    name, sizes = command.protocol(parser.parse_args(["--quick", "--trees", "7"]))
    assert name == "quick" and sizes["attack_trees"] == 100 and sizes["set_size"] == 200
    # the target forest's size does not change the attack forest's
    name, sizes = command.protocol(parser.parse_args(["--trees", "7"]))
    assert name == "paper" and sizes["attack_trees"] == 500
    name, sizes = command.protocol(parser.parse_args(["--attack-trees", "50"]))
    assert name == "custom" and sizes["attack_trees"] == 50


def test_cli_audit_paper_protocol_on_small_data_says_what_to_do(capsys):
    from oblivio.cli import main

    assert main(["audit", "--quiet", "--n-unlearn", "1", "--classifiers", "dt"]) == 2
    err = capsys.readouterr().err
    assert "set_size=2000" in err and "--quick" in err
