"""L2UL's defaults (Cha et al., AAAI 2024): goal reached, test accuracy kept, importance helps.

The setting is the README's: scikit-learn digits with raw pixel values (0..16), an MLP with
64 hidden units trained 20 epochs, 8 training records to misclassify ("correction").
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import oblivio as ob
from oblivio.audit import accuracy
from oblivio.data import Dataset, Remove
from oblivio.models import MLP, TorchModel
from oblivio.unlearners import L2UL
from oblivio.unlearners._correction import _forget_term, _Goals
from oblivio.unlearners._neural import invert_importance, mas_importance, runner_up_loss
from oblivio.unlearners.l2ul import _Continuation, _shortfall

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def digits_raw():
    split = ob.datasets.load("digits")
    return split.train, split.test


#: The recipe of the previous defaults (the paper's labels for the adversarial examples, no
#: per-record stop, -log(1 - p_y)): the setting where the importance penalty's effect shows.
BEFORE = {"forget_loss": "complement", "stop_margin": None, "adv_labels": "target"}


def _weighted_share(module, original, omega) -> float:
    """Share of the squared parameter displacement that falls on anchored weights (Omega~)."""
    moved = anchored = 0.0
    for name, p in module.named_parameters():
        d2 = (p.detach() - original[name]) ** 2
        moved += float(d2.sum())
        anchored += float((omega[name] * d2).sum())
    return anchored / moved


@pytest.fixture(scope="module")
def runs(digits_raw):
    """Per seed and variant: (test drop in points, result, forget accuracy, retain drop,
    share of the displacement on anchored weights)."""
    train, test = digits_raw
    out = {}
    for seed in SEEDS:
        model = TorchModel(MLP(64, (64,), 10), epochs=20, lr=1e-2, batch_size=64, seed=seed)
        model.fit(train)
        before = accuracy(model, test)
        ids = np.random.default_rng(seed).choice(train.ids, 8, replace=False)
        forget, retain = train.select(ids), train.drop(ids)
        retain_before = accuracy(model, retain)
        assert accuracy(model, forget) == 1.0  # non-vacuous: all 8 start correctly classified
        original = {n: p.detach().clone() for n, p in model.module_.named_parameters()}
        X_f = torch.tensor(np.asarray(forget.X), dtype=torch.float32)
        omega = invert_importance(mas_importance(model.module_, X_f, batch_size=32))
        cell = {}
        for label, options in (
            ("ga", {"adversarial": False, "importance": False}),
            ("adv", {"importance": False}),
            ("full", {}),
            ("before-adv", {**BEFORE, "importance": False}),
            ("before-full", BEFORE),
        ):
            u = ob.unlearners.create("l2ul", model, seed=seed, **options).attach(train)
            result = u.forget(Remove(ids=ids))
            cell[label] = (
                100 * (before - accuracy(u, test)),
                result,
                accuracy(u, forget),
                100 * (retain_before - accuracy(u, retain)),
                _weighted_share(u.model_.module_, original, omega),
            )
        out[seed] = cell
    return out


def test_goal_reached_on_every_seed(runs):
    for seed, cell in runs.items():
        for label in ("full", "adv", "before-full"):
            drop, result, forget_acc, *_ = cell[label]
            assert result.diagnostics["goal_reached"] == 1.0, (seed, label)
            assert forget_acc == 0.0, (seed, label)


def test_ten_point_rule(runs):
    """Issue 13: every record misclassified at a cost of at most 10 test points.

    Measured (seeds 0, 1, 2): 2.2, 5.3, 7.3 points (8 seeds: mean 5.5, max 10.0); the
    previous defaults lost 13.8, 12.7, 12.7 and gradient ascent 40-64.
    """
    for seed, cell in runs.items():
        assert cell["full"][0] <= 10.0, (seed, cell["full"][0])


def test_defaults_keep_far_more_accuracy_than_gradient_ascent_and_the_old_recipe(runs):
    for seed, cell in runs.items():
        assert cell["full"][0] <= 0.2 * cell["ga"][0], seed
        assert cell["full"][3] <= 0.2 * cell["ga"][3], seed  # retained training records
    full = np.mean([cell["full"][0] for cell in runs.values()])
    old = np.mean([cell["before-full"][0] for cell in runs.values()])
    assert full <= old - 5.0, (full, old)


def test_importance_term_helps_where_the_update_does_damage(runs):
    """The paper's claim (+adv+imp keeps more than +adv), in the recipe of the old defaults.

    Same seed, same adversarial set: the penalty alone lowers the test-accuracy drop on
    every seed. Measured: 13.8 vs 16.9, 12.7 vs 18.7, 12.7 vs 14.7 points (retained records:
    13.4 vs 16.9, 12.0 vs 17.3, 9.9 vs 12.3).
    """
    gains = np.array([c["before-adv"][0] - c["before-full"][0] for c in runs.values()])
    retain_gains = np.array([c["before-adv"][3] - c["before-full"][3] for c in runs.values()])
    assert np.all(gains > 0) and gains.mean() >= 2.0, gains
    assert np.all(retain_gains > 0) and retain_gains.mean() >= 2.0, retain_gains


def test_importance_term_localises_the_change_under_the_defaults(runs):
    """With the defaults the damage is small and so is the penalty's gain (8 seeds: test drop
    5.5 vs 6.1 points, retained 4.7 vs 5.3; seeds 0-2: 2.2/5.3/7.3 vs 2.7/5.6/7.8), but it
    still does what it is for: less of the update falls on weights unimportant for the
    forget records (anchored, Omega~ near 1) than without it, on every seed.
    """
    for seed, cell in runs.items():
        assert cell["full"][4] < cell["adv"][4], (seed, cell["full"][4], cell["adv"][4])
        assert cell["full"][1].diagnostics["lam_final"] > 0
    full = np.mean([cell["full"][0] for cell in runs.values()])
    adv = np.mean([cell["adv"][0] for cell in runs.values()])
    assert full <= adv, (full, adv)


def test_automatic_eps_scales_with_the_inputs(digits_raw):
    train, _ = digits_raw
    scaled = Dataset(X=train.X / 16.0, y=train.y, ids=train.ids, classes=train.classes)
    eps = {}
    for name, data in (("raw", train), ("scaled", scaled)):
        model = TorchModel(MLP(64, (8,), 10), epochs=1, seed=0).fit(data)
        u = L2UL(model).attach(data)
        eps[name] = u.eps_
        norms = np.linalg.norm(np.asarray(data.X, dtype=float), axis=1)
        assert u.eps_ == pytest.approx(L2UL.EPS_SCALE * np.median(norms), rel=0.05)
        assert u.pgd_step_ == pytest.approx(u.eps_ / 4)
    assert eps["raw"] == pytest.approx(16 * eps["scaled"], rel=1e-6)
    assert L2UL(model, eps=3.0).attach(scaled).eps_ == 3.0


def test_continuation_weakens_only_the_anchors_of_a_stalled_record():
    schedule = _Continuation(1.0, 3, patience=3)
    # record 0 progresses (each shortfall >= 10 % below its best), record 1 is at its goal
    for value in (2.0, 1.7, 1.5, 1.3, 1.1):
        schedule.update(0, torch.tensor([value, 0.0, 0.5]))
    # record 2 has stalled: after `patience` steps without progress only its anchors halve,
    # and lam with them
    assert schedule.weights.tolist() == [1.0, 1.0, 0.5] and schedule.anchor_halvings == 1
    assert schedule.lam == 0.5 and schedule.halvings == 1
    # records 1 and 2 in a batch starting at record 1; a 5 % decrease is not progress
    for _ in range(3):
        schedule.update(1, torch.tensor([0.0, 0.475]))
    assert schedule.weights.tolist() == [1.0, 1.0, 0.25]
    assert schedule.lam == 0.25 and schedule.halvings == 2
    fixed = _Continuation(1.0, 2, patience=None)
    for _ in range(10):
        fixed.update(0, torch.tensor([1.0, 1.0]))
    assert fixed.lam == 1.0 and fixed.weights.tolist() == [1.0, 1.0]


def test_continuation_counts_a_record_flipping_back_and_forth_as_stalled():
    """Steps at the goal neither run nor restart a record's clock: a record that crosses its
    boundary and falls back, again and again, stalls (the run stops only when every record
    is past its goal at once); one that stays at its goal never does."""
    schedule = _Continuation(1.0, 2, patience=3)
    schedule.update(0, torch.tensor([0.2, 0.0]))
    for _ in range(3):
        schedule.update(0, torch.tensor([0.0, 0.0]))
        schedule.update(0, torch.tensor([0.2, 0.0]))
    assert schedule.weights.tolist() == [0.5, 1.0] and schedule.lam == 0.5


def test_shortfall_is_the_logit_distance_from_the_goal():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.5, 0.0], [0.0, 1.0, 4.0]])
    goals = _Goals(
        X=torch.zeros(3, 1),
        label=torch.tensor([0, 0, 0]),
        sign=torch.tensor([-1, -1, 1]),  # misclassify, misclassify, relabel to class 0
        ids=np.arange(3),
    )
    assert _shortfall(logits, goals).tolist() == [2.0, 0.0, 4.0]


def test_unreached_goal_warns_and_says_so(digits_raw):
    train, _ = digits_raw
    model = TorchModel(MLP(64, (16,), 10), epochs=10, lr=1e-2, seed=0).fit(train)
    correct = train.ids[model.predict(train.X) == train.y]
    u = L2UL(model, max_epochs=1, lr=1e-6, seed=0).attach(train)
    with pytest.warns(ob.UnlearningWarning, match="not every forget record reached its goal"):
        result = u.forget(Remove(ids=correct[:8]))
    assert result.diagnostics["goal_reached"] == 0.0
    assert result.diagnostics["stopped_by_cap"] == 1.0


def test_goal_is_declared():
    assert L2UL.goals == ("correction",)
    model = TorchModel(MLP(64, (8,), 10))
    assert L2UL(model).goal == "correction"


def test_bad_new_options_are_rejected(digits_raw):
    train, _ = digits_raw
    model = TorchModel(MLP(64, (8,), 10), epochs=1, seed=0).fit(train)
    for options in ({"lam_patience": 0}, {"lam_patience": 1.5}, {"eps": -1.0}, {"pgd_step": 0}):
        with pytest.raises(ValueError, match=next(iter(options))):
            L2UL(model, **options).attach(train)


def test_demo_row_reaches_the_goal_within_ten_points():
    """The demo's l2ul row (unit-norm digits, its MLP(32), 10 random records, seeds 0 and 1,
    built as ``oblivio demo`` builds them, on one thread as it runs): every record
    misclassified at a mean cost of at most 10 test points (issue 13). Measured: 5.6 and
    12.0 points (mean 8.8); with the previous continuation, which halved every record's
    anchors at once, 7.6 and 15.3 (mean 11.4). The paper's ``lam = 1`` no longer needs to
    be avoided: 5.3 and 13.6 points, against 24.4 and 30.9 with the previous continuation.
    """
    from importlib import resources

    from oblivio.bench.config import load_config
    from oblivio.bench.runner import build_model, load_dataset, make_scenario

    path = resources.files("oblivio.bench") / "configs" / "quick.toml"
    with resources.as_file(path) as file:
        config = load_config(file)
    (spec,) = [u for u in config.unlearners if u.name == "l2ul"]
    (mlp,) = [m for m in config.models if m.name in spec.models]
    (data,) = config.datasets
    (request,) = config.requests
    assert spec.options == {"lr": 0.1, "lam": 0.01}
    assert list(config.seeds) == [0, 1]
    split = load_dataset(data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        drops = {"demo": [], "lam1": []}
        for seed in config.seeds:
            scenario = make_scenario(request, split.train, seed)
            model = build_model(mlp, scenario.train, seed).fit(scenario.train)
            before = accuracy(model, split.test)
            (remove,) = scenario.requests
            for label, options in (("demo", spec.options), ("lam1", {**spec.options, "lam": 1})):
                u = L2UL(model, **options).attach(scenario.train)
                assert u.forget(remove).diagnostics["goal_reached"] == 1.0, (seed, label)
                drops[label].append(100 * (before - accuracy(u, split.test)))
    finally:
        torch.set_num_threads(threads)
    assert np.mean(drops["demo"]) <= 10.0, drops
    # the penalty at the paper's weight no longer wipes out the adversarial anchors
    assert np.mean(drops["lam1"]) <= np.mean(drops["demo"]) + 3.0, drops


# -- the building blocks of the defaults -------------------------------------------------------
def test_runner_up_loss_targets_the_closest_other_class():
    logits = torch.tensor([[3.0, 2.0, -1.0], [0.5, -2.0, 1.5]], requires_grad=True)
    labels = torch.tensor([0, 2])
    loss = runner_up_loss(logits, labels)
    # runner-ups: class 1 for the first record, class 0 for the second
    expected = torch.nn.functional.cross_entropy(
        logits.detach(), torch.tensor([1, 0]), reduction="none"
    )
    torch.testing.assert_close(loss.detach(), expected)
    loss.sum().backward()
    grad = logits.grad
    assert grad[0, 1] < 0 and grad[0, 0] > 0  # descent raises the runner-up, lowers y
    assert grad[1, 0] < 0 and grad[1, 2] > 0
    with pytest.raises(ValueError, match="logits of shape"):
        runner_up_loss(torch.zeros(3), labels)


def test_forget_term_stops_pushing_records_past_their_margin():
    # record 0 is still on its label, record 1 is misclassified by 0.5, record 2 (a relabel
    # towards class 2) already predicts it by 1.0
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.5, 0.0], [0.0, 1.0, 2.0]])
    goals = _Goals(
        logits.new_zeros(3, 1),
        torch.tensor([0, 0, 2]),
        torch.tensor([-1, -1, 1]),
        np.arange(3),
    )
    each = runner_up_loss(logits, goals.label)
    ce = torch.nn.functional.cross_entropy(logits, goals.label, reduction="none")
    free = _forget_term(logits, goals, "runner-up")
    torch.testing.assert_close(free, torch.stack([each[0], each[1], ce[2]]).mean())
    at_zero = _forget_term(logits, goals, "runner-up", stop_margin=0.0)
    torch.testing.assert_close(at_zero, each[0] / 3)  # only the record still on its label
    wide = _forget_term(logits, goals, "runner-up", stop_margin=0.8)
    torch.testing.assert_close(wide, (each[0] + each[1]) / 3)  # 1 is only 0.5 past


def test_soft_adversarial_labels_are_the_pretrained_predictions(digits_raw, monkeypatch):
    train, _ = digits_raw
    model = TorchModel(MLP(64, (16,), 10), epochs=5, lr=1e-2, seed=0).fit(train)
    seen = {}
    original = nn.functional.cross_entropy

    def spy(logits, target, *args, **kwargs):
        if target.is_floating_point() and "soft" not in seen:
            seen["soft"] = target.detach().clone()
            seen["logits"] = logits.detach().clone()
        return original(logits, target, *args, **kwargs)

    monkeypatch.setattr(nn.functional, "cross_entropy", spy)
    ids = train.ids[:4]
    quiet = {"max_epochs": 1, "on_failure": "ignore", "seed": 0}
    u = L2UL(model, n_adv=3, pgd_steps=5, **quiet).attach(train)
    u.forget(Remove(ids=ids))
    soft = seen["soft"]
    assert soft.shape == (12, 10)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(12))
    assert soft.max() < 1.0  # probabilities, not one-hot targets
    # the first step runs at the pre-trained weights: its own predictions are the labels
    torch.testing.assert_close(torch.softmax(seen["logits"], dim=1), soft)
    monkeypatch.undo()
    seen.clear()
    monkeypatch.setattr(nn.functional, "cross_entropy", spy)
    L2UL(model, n_adv=3, pgd_steps=5, adv_labels="target", **quiet).attach(train).forget(
        Remove(ids=ids)
    )
    assert "soft" not in seen  # the paper's labels: the attack targets


def test_paper_preset_turns_the_changes_off():
    assert L2UL.PAPER["stop_margin"] is None and L2UL.PAPER["adv_labels"] == "target"
    model = TorchModel(MLP(64, (8,), 10))
    defaults = L2UL(model).get_params()
    assert defaults["forget_loss"] == "runner-up" and defaults["stop_margin"] == 0.0
    assert defaults["adv_labels"] == "soft"


def test_bad_options_of_the_defaults_are_rejected(digits_raw):
    train, _ = digits_raw
    model = TorchModel(MLP(64, (8,), 10), epochs=1, seed=0).fit(train)
    for options in (
        {"stop_margin": -0.1},
        {"stop_margin": "0"},
        {"adv_labels": "hard"},
        {"forget_loss": "hinge"},
    ):
        with pytest.raises(ValueError, match=next(iter(options))):
            L2UL(model, **options).attach(train)
    # the runner-up term is L2UL's: gradient ascent keeps its own two
    with pytest.raises(ValueError, match="forget_loss"):
        ob.unlearners.create("gradient-ascent", model, forget_loss="runner-up").attach(train)


def test_many_records_are_warned_about_before_the_run(digits_raw):
    """Correction of more than 64 records costs test accuracy in proportion: l2ul says so
    (and points to the deletion methods) whatever the run then does; 64 or fewer are quiet."""
    train, _ = digits_raw
    model = TorchModel(MLP(64, (8,), 10), epochs=1, seed=0).fit(train)
    quick = {"n_adv": 1, "pgd_steps": 1, "max_epochs": 1}
    many = train.ids[:65]
    with pytest.warns(ob.UnlearningWarning, match="each of the 65 forget records.*margin-match"):
        L2UL(model, **quick).attach(train).forget(Remove(ids=many))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L2UL(model, on_failure="ignore", **quick).attach(train).forget(Remove(ids=many))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L2UL(model, **quick).attach(train).forget(Remove(ids=train.ids[:64]))
    assert not [w for w in caught if "forget records (correction)" in str(w.message)]
