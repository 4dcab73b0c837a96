"""Property test over random request sequences, for every method in the registry.

A rejected request (``RequestError``, or a method refusing a kind it does not support)
changes nothing: parameters, training set, history. An accepted one changes exactly the
records it names: a removal drops them and nothing else; an edit rewrites their rows
(labels, features) and leaves every other record as it was.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oblivio as ob
from oblivio.data import RequestError
from oblivio.models import MLP, LogisticRegression, TorchModel
from oblivio.unlearners import UnlearningError, available, create

N, D, K = 24, 4, 3
UNKNOWN = 10**6


def _data() -> ob.Dataset:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # certified removal needs norms <= 1
    y = np.arange(N) % K
    return ob.Dataset(X=X, y=y, ids=np.arange(N) * 5 + 2)


def _net() -> TorchModel:
    return TorchModel(MLP(D, hidden=(6,), n_classes=K), epochs=1, batch_size=8, seed=0)


def _unlearner(name: str):
    options = {
        "sisa": {"shards": 2, "seed": 0},
        "certified": {"sigma": 0.1, "epsilon": 100.0, "seed": 0},
        "first-order": {"on_failure": "ignore", "residual_records": 0},
        "second-order": {"on_failure": "ignore", "residual_records": 0},
        "finetune": {"epochs": 1},
        "gradient-ascent": {"max_epochs": 1},
        "random-labels": {"max_epochs": 1},
        "l2ul": {"max_epochs": 1},
    }.get(name, {})
    neural = bool(getattr(ob.unlearners.get(name), "goals", ()))  # neural methods name a goal
    if name == "certified":
        model = LogisticRegression(l2=0.1, multi_class="ovr")
    else:
        model = _net() if neural else LogisticRegression(l2=0.1)
    return create(name, model, **options)


def _snapshot(u):
    train = u.train_
    rows = {int(i): (np.array(train.X[p]), int(train.y[p])) for p, i in enumerate(train.ids)}
    return u.model_.theta.detach().clone(), rows, len(u.history_)


@st.composite
def _requests(draw, live: list[int], gone: list[int]):
    pool = st.sampled_from(live + gone[:2] + [UNKNOWN])
    ids = draw(st.lists(pool, min_size=1, max_size=4))
    kind = draw(st.sampled_from(["remove", "relabel", "features", "replace"]))
    if kind == "remove":
        return ob.Remove(ids=ids)
    if kind == "relabel":
        labels = draw(st.lists(st.integers(-1, K), min_size=len(ids), max_size=len(ids)))
        return ob.Relabel(ids=ids, labels=labels)
    if kind == "features":
        features = draw(st.lists(st.integers(0, D), min_size=1, max_size=2))
        return ob.ReplaceFeatures(features=features, value=0.0, ids=ids)
    X = np.asarray([draw(st.lists(st.floats(-0.4, 0.4), min_size=D, max_size=D)) for _ in ids])
    if draw(st.integers(0, 3)) == 0:
        X[0, 0] = np.nan  # refused: non-finite values
    return ob.Replace(ids=ids, X=X, y=None)


def _check_accepted(request, before_rows, after_rows):
    named = {int(i) for i in np.atleast_1d(request.ids)}
    if isinstance(request, ob.Remove):
        assert set(after_rows) == set(before_rows) - named
    else:
        assert set(after_rows) == set(before_rows)
    for record, (x, label) in after_rows.items():
        if record not in named:  # every record not named is exactly as it was
            assert np.array_equal(x, before_rows[record][0]) and label == before_rows[record][1]
    for record in named & set(after_rows):
        x, label = after_rows[record]
        if isinstance(request, ob.Relabel):
            assert np.array_equal(x, before_rows[record][0])
        if isinstance(request, ob.ReplaceFeatures):
            assert label == before_rows[record][1]
            columns = [int(f) for f in request.features]
            assert np.all(x[columns] == 0.0)
            others = np.setdiff1d(np.arange(D), columns)
            assert np.array_equal(x[others], before_rows[record][0][others])


@pytest.mark.parametrize("name", available())
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_request_sequences(name, data):
    torch.set_num_threads(1)
    unlearner = _unlearner(name).fit(_data())
    gone: list[int] = []
    for _ in range(3):
        live = [int(i) for i in unlearner.train_.ids]
        before = _snapshot(unlearner)
        try:
            request = data.draw(_requests(live, gone))
        except RequestError:
            continue  # refused at construction: nothing to apply
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # neural methods may miss on one epoch
                unlearner.forget(request)
        except (RequestError, UnlearningError):
            theta, rows, n_history = _snapshot(unlearner)
            assert torch.equal(theta, before[0]) and n_history == before[2]
            assert rows.keys() == before[1].keys()
            assert all(np.array_equal(rows[i][0], before[1][i][0]) for i in rows)
            assert all(rows[i][1] == before[1][i][1] for i in rows)
            continue
        _, rows, n_history = _snapshot(unlearner)
        assert n_history == before[2] + 1
        _check_accepted(request, before[1], rows)
        if isinstance(request, ob.Remove):
            gone += [int(i) for i in request.ids]
