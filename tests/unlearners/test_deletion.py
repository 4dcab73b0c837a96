"""Tests of the neural deletion methods (SalUn, SCRUB, NegGrad+, l1-sparse) and the deletion
modes of gradient ascent and random labels, judged against exact retraining.

The set-up memorises: an MLP with 128 hidden units trained for 60 epochs on 600 digits is
100 % accurate on its training records and ~95 % on held-out ones, so a model retrained
without 10 % random records is measurably different (its forget accuracy is ~97 %), and a
model retrained without a whole class never predicts it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import oblivio as ob
from oblivio.data import Dataset, Relabel, Remove, RequestError
from oblivio.models import MLP, TorchModel
from oblivio.testing import check_unlearner
from oblivio.unlearners import (
    L2UL,
    SCRUB,
    FineTune,
    GradientAscent,
    L1Sparse,
    MarginMatch,
    NegGradPlus,
    RandomLabels,
    SalUn,
    Unlearner,
)

DELETION = ["salun", "scrub", "neggrad-plus", "gradient-ascent", "random-labels"]


def _model(epochs: int = 60) -> TorchModel:
    return TorchModel(MLP(64, (128,), 10), epochs=epochs, lr=1e-2, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def data():
    """600 digits in [0, 1] for training; the test split halved into holdout / evaluation."""
    split = ob.datasets.load("digits")

    def scaled(d: Dataset) -> Dataset:
        return Dataset(X=(d.X / 16.0).astype(np.float32), y=d.y, ids=d.ids, classes=d.classes)

    train = scaled(split.train).take(np.arange(600))
    test = scaled(split.test)
    holdout, evaluation = (
        test.take(np.arange(0, len(test), 2)),
        test.take(np.arange(1, len(test), 2)),
    )
    return train, holdout, evaluation


@pytest.fixture(scope="module")
def trained(data):
    train, _, _ = data
    return _model().fit(train)


def _retrained(trained: TorchModel, train: Dataset, ids: np.ndarray, _cache={}) -> TorchModel:  # noqa: B006
    key = tuple(sorted(ids.tolist()))
    if key not in _cache:
        _cache[key] = trained.clone().fit(train.drop(ids))
    return _cache[key]


def _avg_gap(model, train: Dataset, ids: np.ndarray, evaluation: Dataset, reference) -> float:
    """The field's average gap to retraining, in points (module docstring of audit.evaluate)."""
    result = ob.audit.evaluate(
        model,
        forget=train.select(ids),
        retain=train.drop(ids),
        test=evaluation,
        reference=reference,
    )
    return result.avg_gap, result


def _random_ids(train: Dataset, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(train.ids, size=len(train) // 10, replace=False)


# -- class-wise deletion: forget accuracy 0, as retraining -----------------------------------
@pytest.mark.parametrize("name", DELETION)
@pytest.mark.parametrize("with_holdout", [False, True], ids=["no-holdout", "holdout"])
def test_classwise_deletion_lands_on_retraining(name, with_holdout, data, trained):
    train, holdout, evaluation = data
    ids = train.ids[train.y == 1]
    retrained = _retrained(trained, train, ids)
    forget = train.select(ids)
    # non-vacuity: the original predicts the class, the retrained model never does
    assert ob.audit.accuracy(trained, forget) == 1.0
    assert ob.audit.accuracy(retrained, forget) == 0.0
    none_gap, _ = _avg_gap(trained, train, ids, evaluation, retrained)
    assert none_gap > 40

    # the deleted class's held-out records must neither set the target nor count as damage
    unlearner = ob.unlearners.create(name, trained)
    unlearner.attach(train, holdout=holdout if with_holdout else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run that reaches its target does not warn
        result = unlearner.forget(Remove(ids=ids))
    d = result.diagnostics
    assert d["target_forget_accuracy"] == 0.0 and d["target_from_absent_class"] == 1.0
    assert d["target_reached"] == 1.0 and d["target_missed"] == 0.0 and d["diverged"] == 0.0
    gap, evaluation_result = _avg_gap(unlearner, train, ids, evaluation, retrained)
    assert evaluation_result.metrics["accuracy_forget"] <= 0.01
    assert gap <= 1.0, gap
    # the budget is respected and stated (5 % of the original training's work)
    assert 0 < d["work_fraction"] <= 0.05 + 1e-9
    assert result.seconds > 0 and not result.exact
    assert not torch.equal(unlearner.model_.theta, trained.theta)
    # two phases: the method's own steps reached the class, repair spent the rest
    assert 0 < d["repair_steps"] < d["steps"]


def test_repair_holds_a_deleted_class_down_and_only_a_deleted_one(data, trained):
    """The repair phase's absent-class guard: ``-log(1 - p(absent classes))`` on the
    deleted classes' records; none for random records, whose classes stay."""
    train, _, _ = data
    unlearner = ob.unlearners.create("random-labels", trained).attach(train)
    random_change = Remove(ids=_random_ids(train, 0)).resolve(train)
    assert unlearner._absent_class_guard(random_change) is None

    change = Remove(ids=train.ids[np.isin(train.y, [1, 7])]).resolve(train)
    guard = unlearner._absent_class_guard(change)
    module = unlearner._module
    with torch.no_grad():
        value = float(guard(0))  # one batch of the deleted classes' records
        p = torch.softmax(module(torch.tensor(change.before.X)), dim=1)
        per_record = -torch.log1p(-(p[:, 1] + p[:, 7]))
        # large: the original predicts both classes with confidence
        assert value > 1.0
        assert float(per_record.min()) - 1e-4 <= value <= float(per_record.max()) + 1e-4
        # and near 0 once a model gives those classes no probability
        head = getattr(module, module.head_name)
        head.bias[[1, 7]] -= 1e3
        assert 0.0 <= float(guard(1)) < 1e-6
        head.bias[[1, 7]] += 1e3


# -- random deletion: the 3-point rule and "never further than no update" --------------------
@pytest.mark.parametrize("name", DELETION + ["l1-sparse", "margin-match"])
@pytest.mark.parametrize("with_holdout", [True, False], ids=["holdout", "no-holdout"])
def test_random_deletion_never_wrecks_the_model(name, with_holdout, data, trained):
    train, holdout, evaluation = data
    ids = _random_ids(train, seed=0)
    retrained = _retrained(trained, train, ids)
    forget = train.select(ids)
    # non-vacuity: the original memorised the forget records, retraining does not
    assert ob.audit.accuracy(trained, forget) == 1.0
    assert ob.audit.accuracy(retrained, forget) < 0.99
    none_gap, _ = _avg_gap(trained, train, ids, evaluation, retrained)
    unlearner = ob.unlearners.create(name, trained)
    unlearner.attach(train, holdout=holdout if with_holdout else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = unlearner.forget(Remove(ids=ids))
    gap, evaluation_result = _avg_gap(unlearner, train, ids, evaluation, retrained)
    assert abs(evaluation_result.gaps["accuracy_test"]) <= 0.03
    assert gap <= none_gap + 1e-9, (gap, none_gap)
    assert result.diagnostics["target_known"] == float(with_holdout)


def test_a_reference_set_moves_the_model_toward_retraining(data, trained):
    """With a held-out reference set, SalUn lands closer to retraining than no update."""
    train, holdout, evaluation = data
    ids = _random_ids(train, seed=0)
    retrained = _retrained(trained, train, ids)
    none_gap, _ = _avg_gap(trained, train, ids, evaluation, retrained)
    # 10 % of the original training's work: at the default 5 % (23 steps on this small
    # set) SalUn's random labels have not yet moved a memorised forget record
    unlearner = SalUn(trained, sparsity=0.2, budget=0.1).attach(train, holdout=holdout)
    result = unlearner.forget(Remove(ids=ids))
    gap, _ = _avg_gap(unlearner, train, ids, evaluation, retrained)
    assert gap < none_gap - 0.5, (gap, none_gap)
    d = result.diagnostics
    assert d["holdout_accuracy"] == pytest.approx(ob.audit.accuracy(trained, holdout))
    assert d["forget_accuracy"] < d["forget_accuracy_before"] == 1.0


def test_the_target_is_the_most_likely_number_of_records_retraining_gets_wrong(data, trained):
    """K ~ Binomial(n, 1 - reference accuracy) wrong records: the target is K's median, so
    a handful of typical records keeps all of them right (aiming at the mean flipped one
    that retraining kept) while a large request aims at the reference accuracy."""
    from scipy.stats import binom

    train, holdout, _ = data
    reference = ob.audit.accuracy(trained, holdout)
    assert 0.9 < reference < 1  # non-vacuous: the mean would ask for some wrong records
    few = SalUn(trained).attach(train, holdout=holdout).forget(Remove(ids=train.ids[:3]))
    d = few.diagnostics
    assert d["target_forget_accuracy"] == 1.0 and d["steps"] == 0.0 and d["landed"] == 1.0
    ids = _random_ids(train, seed=0)
    unlearner = SalUn(trained, budget=1e-4).attach(train, holdout=holdout)
    with pytest.warns(ob.UnlearningWarning):  # one step cannot reach it
        d = unlearner.forget(Remove(ids=ids)).diagnostics
    wrong = binom(len(ids), 1 - d["holdout_accuracy"]).median()
    assert d["target_forget_accuracy"] == pytest.approx((len(ids) - wrong) / len(ids))
    assert abs(d["target_forget_accuracy"] - d["holdout_accuracy"]) < 1 / len(ids)


def test_kept_damage_grows_with_the_checked_samples_within_the_3_point_rule():
    from oblivio.unlearners._landing import _kept_damage

    assert _kept_damage([1000, 1000]) == 0.02
    assert _kept_damage([938]) == 0.02  # no reference set: the retained sample alone
    assert _kept_damage([1000, 225]) == 0.015  # digits' small reference set: the smallest
    assert 0.015 < _kept_damage([600, 1000]) < 0.02
    for m in (50, 225, 600, 938, 5000):  # the loss allowed plus two standard errors <= 3
        kept = _kept_damage([m])
        assert kept + 2 * (kept / m) ** 0.5 <= 0.03 + 1e-12 or kept == 0.015


def test_a_checkpoint_must_beat_the_start_by_more_than_the_proxy_resolves(
    data, trained, monkeypatch
):
    """The start stays unless a checkpoint beats its landing score by ``_LEAVE_START``: a
    run whose best checkpoint improves the proxy by less leaves the model exactly as it was
    (and says so), while the same run with a zero margin moves it."""
    from oblivio.unlearners import _landing

    train, holdout, _ = data
    ids = _random_ids(train, seed=0)

    def run(margin: float):
        monkeypatch.setattr(_landing, "_LEAVE_START", margin)
        unlearner = SalUn(trained, sparsity=0.2, budget=0.1, on_failure="ignore")
        return unlearner.attach(train, holdout=holdout), unlearner.forget(Remove(ids=ids))

    moved, result = run(0.0)
    d = result.diagnostics
    assert d["landed_at_step"] > 0 and not torch.equal(moved.model_.theta, trained.theta)
    assert d["lr_halvings"] == 0.0  # so both runs take the same steps
    # the score it beat the start by, as forget accuracy toward its target (x 2)
    gain = 2 * (d["forget_accuracy_before"] - d["forget_accuracy"])
    kept, result = run(gain + 0.01)
    assert result.diagnostics["landed_at_step"] == 0.0
    assert result.diagnostics["landed"] == 0.0
    assert torch.equal(kept.model_.theta, trained.theta)


@pytest.mark.parametrize("name", ["salun", "gradient-ascent", "finetune"])
def test_few_records_without_a_reference_set_leave_the_model(name, data, trained):
    """Without a reference set, 10 random records (one record = 10 points, over the
    fallback's 2-point step) leave the model as it was: any move would overshoot a guess
    (retraining keeps all of them right here), and nothing is spent on repair."""
    train, _, _ = data
    ids = _random_ids(train, seed=1)[:10]
    retrained = _retrained(trained, train, ids)
    # non-vacuity: the original fits them all; so does retraining (moving would be wrong)
    assert ob.audit.accuracy(trained, train.select(ids)) == 1.0
    assert ob.audit.accuracy(retrained, train.select(ids)) == 1.0
    unlearner = ob.unlearners.create(name, trained).attach(train)
    d = unlearner.forget(Remove(ids=ids)).diagnostics
    assert d["target_known"] == 0.0 and d["target_forget_accuracy"] == 1.0
    assert d["steps"] == 0.0 and d["repair_steps"] == 0.0
    assert torch.equal(unlearner.model_.theta, trained.theta)


# -- the contract -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DELETION + ["l1-sparse", "margin-match"])
def test_generic_contract(name, data):
    train, _, _ = data
    small = train.take(np.arange(300))

    def factory() -> Unlearner:
        return ob.unlearners.create(name, _model(epochs=5))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 3 records: targets may be missed
        check_unlearner(factory, small, atol=0.0)


def test_goals_are_declared_and_validated(trained, data):
    train, _, _ = data
    for cls in (SalUn, SCRUB, NegGradPlus, L1Sparse, FineTune, MarginMatch):
        assert cls.goals == ("deletion",) and cls(trained).goal == "deletion"
    assert L2UL.goals == ("correction",) and L2UL(trained).goal == "correction"
    for cls in (GradientAscent, RandomLabels):
        assert cls.goals == ("deletion", "correction")
        assert cls(trained).goal == "deletion"
        assert cls(trained, goal="correction").goal == "correction"
        with pytest.raises(ValueError, match="'forgetting'"):
            cls(trained, goal="forgetting").attach(train)
    assert GradientAscent(trained).get_params()["goal"] == "deletion"


def test_bad_options_are_rejected(trained, data):
    train, _, _ = data
    for cls, options, word in [
        (SalUn, dict(sparsity=0.0), "sparsity"),
        (SalUn, dict(budget=0.0), "budget"),
        (SalUn, dict(forget_batch_size=0), "forget_batch_size"),
        (SalUn, dict(relabel="random"), "relabel"),
        (SalUn, dict(hard_share=1.5), "hard_share"),
        (SalUn, dict(lr=-1.0), "lr"),
        (SCRUB, dict(temperature=0.0), "temperature"),
        (SCRUB, dict(alpha=-1.0), "alpha"),
        (SCRUB, dict(max_fraction=2.0), "max_fraction"),
        (NegGradPlus, dict(alpha=1.0), "alpha"),
        (NegGradPlus, dict(forget_loss="ce"), "forget_loss"),
        (L1Sparse, dict(alpha=-1.0), "alpha"),
        (L1Sparse, dict(final_fraction=1.5), "final_fraction"),
        (GradientAscent, dict(budget=-1.0), "budget"),
        (RandomLabels, dict(forget_batch_size=0), "forget_batch_size"),
        (RandomLabels, dict(forget_batch_size=2.5), "forget_batch_size"),
        (MarginMatch, dict(weight=0.0), "weight"),
        (MarginMatch, dict(hard_share=1.5), "hard_share"),
        (MarginMatch, dict(draws_per_record=0.5), "draws_per_record"),
        (MarginMatch, dict(draws_per_record=float("inf")), "draws_per_record"),
        (MarginMatch, dict(lr=-1.0), "lr"),
    ]:
        with pytest.raises(ValueError, match=word):
            cls(trained, **options).attach(train)
    with pytest.raises(TypeError, match="holdout"):
        SalUn(trained).attach(train, holdout=train.X)


@pytest.mark.parametrize("name", ["salun", "scrub", "neggrad-plus", "l1-sparse", "margin-match"])
def test_only_removals_are_accepted(name, data, trained):
    train, _, _ = data
    unlearner = ob.unlearners.create(name, trained).attach(train)
    theta = unlearner.model_.theta.clone()
    with pytest.raises(RequestError, match=name):
        unlearner.forget(Relabel(ids=train.ids[:2], labels=(train.y[:2] + 1) % 10))
    assert torch.equal(unlearner.model_.theta, theta) and len(unlearner.history_) == 0


# -- method specifics ---------------------------------------------------------------------------
def test_salun_moves_only_the_salient_weights(data, trained):
    train, _, _ = data
    ids = train.ids[train.y == 3]
    unlearner = SalUn(trained, sparsity=0.3).attach(train)
    result = unlearner.forget(Remove(ids=ids))
    assert result.diagnostics["mask_fraction"] == pytest.approx(0.3, abs=0.01)
    moved = (unlearner.model_.theta != trained.theta).float().mean()
    assert 0.1 < float(moved) <= 0.3 + 0.01  # most masked weights move, no other weight does
    assert "mask_seconds" in result.diagnostics


def test_salun_never_counts_a_weight_without_forget_gradient_as_salient(data, trained):
    train, holdout, _ = data
    few = train.take(np.arange(1))  # one deletion request of one record
    module = trained.module_
    X, y = torch.as_tensor(few.X, dtype=torch.float32), torch.as_tensor(few.y)
    loss = torch.nn.functional.cross_entropy(module(X), y, reduction="sum")
    grads = torch.autograd.grad(loss, list(module.parameters()))
    silent = float(sum(int((g == 0).sum()) for g in grads)) / trained.theta.numel()
    assert silent > 0.5  # non-vacuous: the median saliency is 0 (it selected every weight)
    result = SalUn(trained).attach(train, holdout=holdout).forget(Remove(ids=few.ids))
    assert 0 < result.diagnostics["mask_fraction"] <= 1 - silent + 1e-9


def test_scrub_leaves_the_teacher_and_the_users_model_alone(data, trained):
    train, _, _ = data
    theta = trained.theta.clone()
    unlearner = SCRUB(trained).attach(train)
    unlearner.forget(Remove(ids=train.ids[train.y == 2]))
    assert torch.equal(trained.theta, theta)
    assert not torch.equal(unlearner.model_.theta, theta)


def test_scrub_clips_each_step_and_the_others_do_not(data, trained):
    train, _, _ = data
    batch = train.take(np.arange(32))

    def step_norm(cls) -> float:
        u = cls(trained, momentum=0.0, weight_decay=0.0).attach(train)
        optimizer = u._optimizer()
        params = list(u._module.parameters())
        before = [p.detach().clone() for p in params]
        logits = u._module(u._inputs(batch))
        wrong = u._labels((batch.y + 1) % 10)  # a large gradient on a memorised net
        loss = 1000 * torch.nn.functional.cross_entropy(logits, wrong)
        assert u._step(optimizer, loss)
        moved = torch.cat(
            [(b - p.detach()).reshape(-1) for b, p in zip(before, params, strict=True)]
        )
        return float(moved.norm()) / u.lr  # plain SGD: the step is lr x the gradient

    assert step_norm(SCRUB) == pytest.approx(5.0, rel=1e-4)
    assert step_norm(NegGradPlus) > 50.0  # the same loss, unclipped


def test_l1_sparse_penalty_decays_linearly_to_zero(data, trained):
    """``CE + alpha (1 - t / T') ||theta||_1`` for ``t < T'``, plain CE afterwards."""
    from oblivio.unlearners._neural import _Stream

    train, _, _ = data
    ids = _random_ids(train, seed=3)
    u = L1Sparse(trained, alpha=1e-3, final_fraction=0.5, budget=0.2, bn_mode="eval")
    u.attach(train)
    change = Remove(ids=ids).resolve(train)
    X, y = u._inputs(change.result), u._labels(change.result.y)
    steps = u._budget_steps(0.2, u._records_per_step(len(ids), len(change.result)))
    decay = int(0.5 * steps)
    l1 = float(sum(p.abs().sum() for p in u.model_.module_.parameters()))
    for step, weight in [(0, 1.0), (decay // 2, 1 - (decay // 2) / decay), (decay, 0.0)]:
        # a stream that always yields the whole retained set: the CE part is known
        stream = _Stream(X, y, len(y), torch.Generator().manual_seed(0))
        loss_of_step, _, repair = u._losses(change, stream, stream, None, {})
        assert repair is False  # fine-tuning on retained records needs no repair
        ce = float(torch.nn.functional.cross_entropy(u.model_.module_(X), y))
        value = float(loss_of_step(step))
        assert value == pytest.approx(ce + 1e-3 * weight * l1, rel=1e-5)


def test_a_missed_target_warns_and_says_so(data, trained):
    train, _, _ = data
    ids = train.ids[train.y == 4]
    unlearner = NegGradPlus(trained, budget=1e-4).attach(train)  # one step: cannot get there
    with pytest.warns(ob.UnlearningWarning, match="neggrad-plus: stopped with forget accuracy"):
        result = unlearner.forget(Remove(ids=ids))
    d = result.diagnostics
    assert d["target_missed"] == 1.0 and d["target_reached"] == 0.0 and d["steps"] == 1.0
    # the landing rule never ends further from the target than the start
    assert d["forget_accuracy"] <= d["forget_accuracy_before"]


def test_progress_reports_records_and_the_target_only_when_asked(data, trained, capsys):
    from oblivio._progress import VERBOSE, verbosity_set

    train, holdout, _ = data
    ids = train.ids[train.y == 4]
    NegGradPlus(trained).attach(train, holdout=holdout).forget(Remove(ids=ids))
    assert capsys.readouterr().err == ""  # library use: silent
    unlearner = NegGradPlus(trained).attach(train, holdout=holdout)
    with verbosity_set(VERBOSE):  # what ``oblivio --verbose`` sets: a line per update
        result = unlearner.forget(Remove(ids=ids))
    lines = [x for x in capsys.readouterr().err.splitlines() if "neggrad-plus: unlearning" in x]
    budget = int(unlearner.budget * trained.epochs * len(train))
    assert lines[0].startswith(f"[oblivio] neggrad-plus: unlearning (records): 0/{budget} ")
    assert lines[-1].endswith("(finished)")
    assert any("forget accuracy" in x and "target 0.000" in x for x in lines)
    # records processed, as the diagnostics count them
    done = int(lines[-1].split(": ")[2].split("/")[0])
    assert done > 0
    assert done == pytest.approx(result.diagnostics["work_fraction"] * trained.epochs * len(train))


def test_a_missed_random_target_points_to_the_targeting_methods_and_only_there(data, trained):
    train, holdout, _ = data
    ids = _random_ids(train, seed=0)
    missed = []
    for unlearner, request in [
        (NegGradPlus(trained, budget=1e-4), ids),  # random records: the hint
        (SalUn(trained, budget=1e-4), ids),  # (its uniform rule here: 3 wrong records)
        (NegGradPlus(trained, budget=1e-4), train.ids[train.y == 4]),  # a class: none
        (MarginMatch(trained, budget=1e-4), ids),  # margin-match itself: none
    ]:
        unlearner.attach(train, holdout=holdout)
        with pytest.warns(ob.UnlearningWarning, match="stopped with forget accuracy") as caught:
            unlearner.forget(Remove(ids=request))
        missed.append(" ".join(str(w.message) for w in caught))
    assert "for random records try 'salun' or 'margin-match'" in missed[0]
    assert "for random records try 'margin-match'," in missed[1]  # not itself
    assert "margin-match" not in missed[2] and "try 'margin-match'" not in missed[3]


def test_on_failure_raise_changes_nothing_and_bad_values_are_refused(data, trained):
    train, _, _ = data
    ids = train.ids[train.y == 4]
    unlearner = NegGradPlus(trained, budget=1e-4, on_failure="raise").attach(train)
    before = unlearner.model_.theta.detach().clone()
    with pytest.raises(ob.UnlearningError, match="neggrad-plus: stopped"):
        unlearner.forget(Remove(ids=ids))
    assert torch.equal(unlearner.model_.theta, before)
    assert len(unlearner.train_) == len(train) and not unlearner.history_
    quiet = NegGradPlus(trained, budget=1e-4, on_failure="ignore").attach(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet.forget(Remove(ids=ids)).diagnostics["landed"] == 0.0
    with pytest.raises(ValueError, match="on_failure must be one of .*'sometimes'"):
        SalUn(trained, on_failure="sometimes").attach(train)


def test_holdout_survives_save_and_load(tmp_path, data, trained):
    train, holdout, _ = data
    ids = _random_ids(train, seed=4)
    unlearner = SalUn(trained).attach(train, holdout=holdout)
    unlearner.forget(Remove(ids=ids[:30]))
    unlearner.save(tmp_path / "u")
    loaded = Unlearner.load(tmp_path / "u", model=_model())
    assert isinstance(loaded, SalUn) and len(loaded.holdout_) == len(holdout)
    np.testing.assert_array_equal(loaded.holdout_.ids, holdout.ids)
    a, b = unlearner.forget(Remove(ids=ids[30:])), loaded.forget(Remove(ids=ids[30:]))
    assert a.diagnostics["holdout_accuracy"] == b.diagnostics["holdout_accuracy"]
    assert torch.allclose(loaded.model_.theta, unlearner.model_.theta)
    # gradient ascent keeps it too (its continual state is saved beside it)
    ga = GradientAscent(trained).attach(train, holdout=holdout)
    ga.save(tmp_path / "ga")
    assert len(Unlearner.load(tmp_path / "ga", model=_model()).holdout_) == len(holdout)


# -- margin matching ----------------------------------------------------------------------------
def test_matched_targets_keep_ranks_and_mirror_deleted_classes():
    from oblivio.unlearners.margin_match import matched_targets

    margins = torch.tensor([5.0, 1.0, 3.0, 7.0])
    reference = torch.tensor([-2.0, 0.0, 2.0, 4.0, 6.0, 8.0])
    absent = torch.tensor([False, False, False, True])
    targets = matched_targets(margins, reference, absent)
    # three present records: reference quantiles 1/6, 1/2 and 5/6, given by rank
    expected = torch.quantile(reference, torch.tensor([1 / 6, 1 / 2, 5 / 6]))
    assert torch.allclose(targets[[1, 2, 0]], expected)
    assert targets[3] == -7.0  # a deleted class's record: its own margin, mirrored
    only_absent = matched_targets(margins, torch.zeros(0), torch.ones(4, dtype=torch.bool))
    assert torch.equal(only_absent, -margins)


def test_margin_match_moves_random_deletion_toward_retraining(data, trained):
    train, holdout, evaluation = data
    ids = _random_ids(train, seed=0)
    retrained = _retrained(trained, train, ids)
    none_gap, _ = _avg_gap(trained, train, ids, evaluation, retrained)
    assert none_gap > 2.0  # non-vacuity: doing nothing is measurably off
    # 10 % of the training's work: the default 5 % is 15 steps on this small set
    unlearner = MarginMatch(trained, budget=0.1).attach(train, holdout=holdout)
    assert unlearner._lr() == pytest.approx(0.75 * trained.lr)  # the original's Adam scale
    result = unlearner.forget(Remove(ids=ids))
    gap, evaluation_result = _avg_gap(unlearner, train, ids, evaluation, retrained)
    assert gap < none_gap - 1.0, (gap, none_gap)
    assert abs(evaluation_result.gaps["accuracy_test"]) <= 0.03
    d = result.diagnostics
    assert d["pushed_forget_records"] > 0
    # self-balancing: one phase over the whole budget, not stopped at the target
    assert d["steps"] == d["budget_steps"] and d["repair_steps"] == 0.0
    assert d["forget_accuracy"] < d["forget_accuracy_before"] == 1.0


def test_self_balancing_run_holds_its_learning_rate_then_decays_it(data, trained, monkeypatch):
    """margin-match's one phase runs the first half of its budget at the full learning rate,
    then decays it linearly to 0 (``_landing._BALANCING_HOLD``)."""
    from oblivio.unlearners import _landing

    assert _landing._decay_factor(0, 10, 0.0) == 1.0
    assert _landing._decay_factor(5, 10, 0.0) == pytest.approx(0.5)
    assert _landing._decay_factor(4, 10, 0.5) == 1.0
    assert _landing._decay_factor(5, 10, 0.5) == 1.0
    assert _landing._decay_factor(8, 10, 0.5) == pytest.approx(0.4)
    assert _landing._decay_factor(10, 10, 0.5) == 0.0

    train, holdout, _ = data
    unlearner = MarginMatch(trained, budget=0.1).attach(train, holdout=holdout)
    rates = []
    step = type(unlearner)._step

    def recording_step(self, optimizer, loss):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(self, optimizer, loss)

    monkeypatch.setattr(type(unlearner), "_step", recording_step)
    d = unlearner.forget(Remove(ids=_random_ids(train, seed=0))).diagnostics
    steps, base = int(d["budget_steps"]), unlearner._lr()
    assert len(rates) == steps > 4 and d["lr_halvings"] == 0
    half = steps // 2
    assert rates[:half] == [pytest.approx(base)] * half
    assert all(a > b for a, b in zip(rates[half:-1], rates[half + 1 :], strict=True))
    assert rates[-1] == pytest.approx(base / (0.5 * steps))  # the last step: 1 of steps/2


def test_margin_match_pushes_the_lowest_targets_the_budget_can_draw_often(
    data, trained, monkeypatch
):
    """With too small a budget to draw every forget record ``draws_per_record`` times, the
    forget term pushes only the records with the lowest targets (those a retrained model
    gets wrong or unsure: what forget accuracy and MIA-efficacy read), and still lands
    closer to retraining than no update; ``draws_per_record=1`` pushes every record that
    starts above its target. (Below ``_MIN_PUSHED`` records every one is pushed; the
    floor is lowered here to see the rule on 60 records.)"""
    from oblivio.unlearners import margin_match

    monkeypatch.setattr(margin_match, "_MIN_PUSHED", 1)
    train, holdout, evaluation = data
    ids = _random_ids(train, seed=0)
    retrained = _retrained(trained, train, ids)
    none_gap, _ = _avg_gap(trained, train, ids, evaluation, retrained)
    focused = MarginMatch(trained, budget=0.1, draws_per_record=40).attach(train, holdout=holdout)
    d = focused.forget(Remove(ids=ids)).diagnostics
    draws = d["budget_steps"] * focused.forget_batch_size
    assert d["pushed_forget_records"] == draws // 40 < len(ids)
    gap, _ = _avg_gap(focused, train, ids, evaluation, retrained)
    assert gap < none_gap - 0.5, (gap, none_gap)
    every = MarginMatch(trained, budget=0.1, draws_per_record=1).attach(train, holdout=holdout)
    d_every = every.forget(Remove(ids=ids)).diagnostics
    # every record that starts above its target
    assert d["pushed_forget_records"] < d_every["pushed_forget_records"] <= len(ids)
    monkeypatch.undo()  # the floor: 60 records are fewer than it, so all are pushed
    floored = MarginMatch(trained, budget=0.1, draws_per_record=40).attach(train, holdout=holdout)
    d_floored = floored.forget(Remove(ids=ids)).diagnostics
    assert d_floored["pushed_forget_records"] == d_every["pushed_forget_records"]


def test_margin_match_deletes_a_class_without_a_reference_set(data, trained):
    train, _, evaluation = data
    ids = train.ids[train.y == 1]
    retrained = _retrained(trained, train, ids)
    unlearner = MarginMatch(trained).attach(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = unlearner.forget(Remove(ids=ids))
    gap, evaluation_result = _avg_gap(unlearner, train, ids, evaluation, retrained)
    assert evaluation_result.metrics["accuracy_forget"] <= 0.01 and gap <= 1.0, gap
    d = result.diagnostics
    assert d["target_from_absent_class"] == 1.0
    assert 0 < d["repair_steps"] < d["steps"]  # a whole class: push, then repair


def test_margin_match_without_a_reference_set_leaves_random_records_and_warns(data, trained):
    train, _, _ = data
    ids = _random_ids(train, seed=2)
    unlearner = MarginMatch(trained).attach(train)
    with pytest.warns(ob.UnlearningWarning, match="held-out reference set for the 60 forget"):
        result = unlearner.forget(Remove(ids=ids))
    d = result.diagnostics
    assert d["landed"] == 0.0 and d["target_known"] == 0.0 and d["steps"] == 0.0
    assert torch.equal(unlearner.model_.theta, trained.theta)
