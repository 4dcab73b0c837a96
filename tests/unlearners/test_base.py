"""The unlearner base class: registry, forget template, atomicity, save/load, Retrain."""

import json

import numpy as np
import pytest
import torch

import oblivio as ob
from oblivio.data import Change
from oblivio.models import LogisticRegression, NotFittedError
from oblivio.testing import check_unlearner, retrain_oracle
from oblivio.unlearners import Outcome, Retrain, Unlearner, create, register


def test_registry_lists_and_creates():
    assert "retrain" in ob.unlearners.available()
    unlearner = create("retrain", LogisticRegression(), warm_start=True)
    assert isinstance(unlearner, Retrain) and unlearner.warm_start
    with pytest.raises(ValueError, match="unknown unlearner 'nope'; available: .*retrain"):
        create("nope", LogisticRegression())


def test_registry_refuses_duplicates():
    class Impostor(Retrain):
        name = "retrain"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)


@pytest.mark.parametrize("warm_start", [False, True])
def test_retrain_equals_fresh_fit(binary_data, warm_start):
    model = LogisticRegression(l2=1e-3)
    unlearner = Retrain(model, warm_start=warm_start).fit(binary_data)
    original = unlearner.model_.theta
    ids = binary_data.ids[:15]
    result = unlearner.forget(ob.Remove(ids=ids))
    oracle = retrain_oracle(model, binary_data.drop(ids))
    assert ob.audit.param_distance(unlearner, oracle) <= 1e-8
    assert ob.audit.param_distance(original, oracle) > 1e-4  # non-vacuous
    assert result.retrained and result.exact and result.n_affected == 15
    assert result.request == "Remove"


def test_retrain_passes_the_contract(binary_data):
    check_unlearner(lambda: Retrain(LogisticRegression(l2=1e-3)), binary_data)


def test_contract_catches_a_method_that_ignores_requests(binary_data):
    class DoNothing(Unlearner):
        name = "do-nothing-test"
        exact = True

        def _forget(self, change: Change) -> Outcome:
            return Outcome()

    with pytest.raises(AssertionError, match="differs by .* from a fit from scratch"):
        check_unlearner(lambda: DoNothing(LogisticRegression(l2=1e-3)), binary_data)


def test_failure_inside_forget_changes_nothing(binary_data):
    class Explodes(Unlearner):
        name = "explodes-test"

        def _forget(self, change: Change) -> Outcome:
            self.model_.theta = torch.zeros_like(self.model_.theta)
            self.model_ = LogisticRegression()
            raise RuntimeError("boom")

    unlearner = Explodes(LogisticRegression(l2=1e-3)).fit(binary_data)
    model, theta = unlearner.model_, unlearner.model_.theta
    with pytest.raises(RuntimeError, match="boom"):
        unlearner.forget(ob.Remove(ids=binary_data.ids[:2]))
    assert unlearner.model_ is model
    assert torch.equal(unlearner.model_.theta, theta)
    assert len(unlearner.train_) == len(binary_data) and unlearner.history_ == []


def test_bad_requests_change_nothing(binary_data):
    unlearner = Retrain(LogisticRegression(l2=1e-3)).fit(binary_data)
    theta = unlearner.model_.theta
    for request in [
        ob.Remove(ids=[10**9]),
        ob.Relabel(ids=binary_data.ids[:1], labels=[7]),
        ob.ReplaceFeatures(features=[64]),
        ob.Replace(ids=binary_data.ids[:1], X=np.zeros((1, 3))),
    ]:
        with pytest.raises(ob.RequestError):
            unlearner.forget(request)
    assert torch.equal(unlearner.model_.theta, theta)
    assert len(unlearner.train_) == len(binary_data) and not unlearner.history_
    with pytest.raises(TypeError, match="takes a request"):
        unlearner.forget([1, 2])


def test_use_before_fit_and_attach_of_untrained_model(binary_data):
    unlearner = Retrain(LogisticRegression())
    with pytest.raises(NotFittedError, match="fit\\(train\\) or attach\\(train\\)"):
        unlearner.forget(ob.Remove(ids=[1]))
    with pytest.raises(NotFittedError, match="needs a trained model"):
        unlearner.attach(binary_data)


def test_attach_copies_the_model(binary_data):
    model = LogisticRegression(l2=1e-3).fit(binary_data)
    theta = model.theta
    unlearner = Retrain(model).attach(binary_data)
    unlearner.forget(ob.Remove(ids=binary_data.ids[:20]))
    assert torch.equal(model.theta, theta)
    assert ob.audit.param_distance(unlearner, model) > 1e-4


def test_all_request_kinds_with_retrain(binary_data):
    unlearner = Retrain(LogisticRegression(l2=1e-3)).fit(binary_data)
    ids = binary_data.ids[:4]
    requests = [
        ob.Relabel(ids=ids, labels=1 - binary_data.select(ids).y),
        ob.ReplaceFeatures(features=[10, 20]),
        ob.Replace(ids=ids, X=np.zeros((4, 64)), y=[0, 1, 0, 1]),
        ob.Remove(ids=ids),
    ]
    for request in requests:
        expected = request.resolve(unlearner.train_).result
        unlearner.forget(request)
        oracle = retrain_oracle(unlearner.model, expected)
        assert ob.audit.param_distance(unlearner, oracle) <= 1e-8
    assert [r.request for r in unlearner.history_] == [
        "Relabel",
        "ReplaceFeatures",
        "Replace",
        "Remove",
    ]


def test_save_and_load_round_trip(tmp_path, binary_data):
    unlearner = Retrain(LogisticRegression(l2=1e-3, fit_intercept=True)).fit(binary_data)
    unlearner.forget(ob.Remove(ids=binary_data.ids[:3]))
    path = unlearner.save(tmp_path / "model")
    meta = json.loads((path / "unlearner.json").read_text())
    assert meta["unlearner"] == "retrain" and len(meta["history"]) == 1
    loaded = Unlearner.load(path)
    assert isinstance(loaded, Retrain)
    assert torch.equal(loaded.model_.theta, unlearner.model_.theta)
    np.testing.assert_array_equal(loaded.train_.ids, unlearner.train_.ids)
    assert loaded.history_ == unlearner.history_
    # The loaded unlearner keeps working and agrees with the original.
    request = ob.Remove(ids=loaded.train_.ids[:2])
    loaded.forget(request)
    unlearner.forget(request)
    assert ob.audit.param_distance(loaded, unlearner) <= 1e-10


def test_save_is_atomic(tmp_path, binary_data, monkeypatch):
    unlearner = Retrain(LogisticRegression(l2=1e-3)).fit(binary_data)
    path = unlearner.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    unlearner.forget(ob.Remove(ids=binary_data.ids[:3]))

    def failing_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        unlearner.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
