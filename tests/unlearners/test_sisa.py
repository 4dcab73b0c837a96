"""SISA (Bourtoule et al., IEEE S&P 2021): exactness against SISA fitted from scratch."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio.models import LogisticRegression
from oblivio.testing import check_unlearner
from oblivio.unlearners import SISA, CheckpointError, SISAEnsemble, Unlearner, create

L2 = 1e-2


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Two-threaded OpenBLAS on a shared 2-core machine is ~10x slower than one thread."""
    with threadpool_limits(limits=1):
        yield


def make(**options) -> SISA:
    options.setdefault("seed", 0)
    return SISA(LogisticRegression(l2=L2), **options)


def assert_same_model(a: SISAEnsemble, b: SISAEnsemble, X) -> None:
    assert torch.equal(a.theta, b.theta)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.predict(X), b.predict(X))


@pytest.fixture(scope="module")
def digits(digits_split):
    """600 ten-class digits, where each shard model is a real classifier."""
    return digits_split.train.take(np.arange(600))


# -- construction and bad input ------------------------------------------------------------
def test_registered_with_its_options():
    unlearner = create("sisa", LogisticRegression(l2=L2), shards=3, slices=2, seed=1)
    assert isinstance(unlearner, SISA) and unlearner.exact
    assert unlearner.needs == frozenset({"retain"})
    assert unlearner.get_params()["shards"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shards": 0}, "shards must be an integer >= 1, got 0"),
        ({"slices": 0}, "slices must be an integer >= 1, got 0"),
        ({"slices": 1.5}, "slices must be an integer >= 1, got 1.5"),
        ({"aggregation": "median"}, "aggregation must be 'mean' or 'vote', got 'median'"),
        ({"backend": "spark"}, "backend must be 'loky' or 'dask', got 'spark'"),
        ({"scheduler": "tcp://x:1"}, "needs backend='dask'"),
        ({"n_jobs": 0}, "n_jobs must be a positive integer or -1, got 0"),
        ({"assignment": "by-user"}, "assignment must be 'random' or a callable"),
    ],
)
def test_bad_options_are_refused(binary_data, options, message):
    with pytest.raises(ValueError, match=message):
        make(**options).fit(binary_data)


def test_more_shards_than_records_is_refused_and_loses_nothing(binary_data):
    unlearner = make(shards=3).fit(binary_data)
    theta, model = unlearner.model_.theta, unlearner.model_
    small = binary_data.take(np.arange(4))
    unlearner.shards = 5
    with pytest.raises(ValueError, match="shards=5 is more than the 4 training records"):
        unlearner.fit(small)
    assert unlearner.model_ is model and torch.equal(unlearner.model_.theta, theta)
    assert len(unlearner.train_) == len(binary_data)


def test_non_writable_checkpoint_dir_is_refused(binary_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="checkpoint_dir .*a-file/sub.* is not a writable folder"):
        make(slices=2, checkpoint_dir=blocker / "sub").fit(binary_data)


def test_slices_need_a_model_that_warm_starts(binary_data):
    class NoWarmStart(LogisticRegression):
        def fit(self, data):  # noqa: D102 - a model without init=
            return super().fit(data)

    with pytest.raises(ValueError, match="slices=2 needs a model whose fit\\(\\) takes init="):
        SISA(NoWarmStart(l2=L2), slices=2, seed=0).fit(binary_data)
    unlearner = SISA(NoWarmStart(l2=L2), shards=2, seed=0).fit(binary_data)  # slices=1 works
    unlearner.forget(ob.Remove(ids=binary_data.ids[:2]))
    scratch = SISA(NoWarmStart(l2=L2), shards=2, seed=0).fit(binary_data.drop(binary_data.ids[:2]))
    assert torch.equal(unlearner.model_.theta, scratch.model_.theta)


def test_attach_is_refused(binary_data):
    trained = LogisticRegression(l2=L2).fit(binary_data)
    with pytest.raises(ValueError, match="use fit\\(train\\)"):
        SISA(trained, seed=0).attach(binary_data)


# -- layout ----------------------------------------------------------------------------------
def test_shards_depend_on_ids_and_seed_only(digits):
    unlearner = make(shards=5).fit(digits)
    shards = unlearner.shards_
    assert sorted(np.concatenate(shards).tolist()) == sorted(digits.ids.tolist())
    sizes = [len(s) for s in shards]
    assert min(sizes) > 0.7 * len(digits) / 5  # roughly balanced
    dropped = digits.ids[::7]
    smaller = make(shards=5).fit(digits.drop(dropped)).shards_
    for before, after in zip(shards, smaller, strict=True):
        assert np.array_equal(before[~np.isin(before, dropped)], after)
    other_seed = make(shards=5, seed=1).fit(digits).shards_
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other_seed, strict=True))


def test_callable_assignment_keeps_a_users_records_together(digits):
    def by_user(ids: np.ndarray) -> np.ndarray:
        return (ids // 10) % 4  # ten consecutive records per "user"

    unlearner = make(shards=4, assignment=by_user).fit(digits)
    for k, ids in enumerate(unlearner.shards_):
        assert np.all(by_user(ids) == k)
    user = digits.ids[(digits.ids // 10) == 3]
    result = unlearner.forget(ob.Remove(ids=user))
    assert result.diagnostics["shards_retrained"] == 1
    with pytest.raises(ValueError, match="assignment returned shards outside 0..3: \\[4\\]"):
        make(shards=4, assignment=lambda ids: np.full(ids.shape, 4)).fit(digits)
    with pytest.raises(ValueError, match="one integer shard per id"):
        make(shards=4, assignment=lambda ids: ids[:3] % 4).fit(digits)


# -- exactness -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shards", "slices", "aggregation"), [(1, 1, "mean"), (5, 1, "vote"), (4, 3, "mean")]
)
def test_removal_equals_sisa_fitted_from_scratch(digits, shards, slices, aggregation):
    options = {"shards": shards, "slices": slices, "aggregation": aggregation}
    unlearner = make(**options).fit(digits)
    original = unlearner.model_.theta
    ids = np.random.default_rng(1).choice(digits.ids, size=6, replace=False)
    result = unlearner.forget(ob.Remove(ids=ids))
    scratch = make(**options).fit(digits.drop(ids))
    assert_same_model(unlearner.model_, scratch.model_, digits.X)
    assert not torch.equal(original, unlearner.model_.theta)  # non-vacuous
    assert result.exact and not result.retrained and result.n_affected == 6
    # one shard (S = 1) is plain logistic regression: SISA then equals retraining
    if shards == 1:
        plain = LogisticRegression(l2=L2).fit(digits.drop(ids))
        assert ob.audit.param_distance(unlearner, plain) < 1e-6


def test_sliced_shard_reaches_the_unsliced_optimum(digits):
    """Warm-starting on growing prefixes ends at the unique optimum of the whole shard."""
    sliced = make(shards=3, slices=4).fit(digits)
    unsliced = make(shards=3, slices=1).fit(digits)
    assert ob.audit.param_distance(sliced.model_, unsliced.model_) < 1e-7
    assert torch.linalg.vector_norm(sliced.model_.theta) > 1.0  # a real model, not zeros


def test_only_affected_shards_and_slices_are_retrained(digits):
    unlearner = make(shards=5, slices=4).fit(digits)
    shard_of = {int(i): k for k, ids in enumerate(unlearner.shards_) for i in ids}
    slice_of = unlearner._slice_of(digits.ids)
    slices = dict(zip(digits.ids.tolist(), slice_of.tolist(), strict=True))
    # two records of shard 2 (slices a, b) and one of shard 4 (slice c)
    in_two = [i for i in digits.ids.tolist() if shard_of[i] == 2]
    in_four = [i for i in digits.ids.tolist() if shard_of[i] == 4 and slices[i] == 3]
    ids = [in_two[0], in_two[1], in_four[0]]
    models_before = list(unlearner.model_.models_)
    result = unlearner.forget(ob.Remove(ids=ids))
    expected_slices = (4 - min(slices[in_two[0]], slices[in_two[1]])) + (4 - 3)
    assert result.diagnostics["shards_retrained"] == 2
    assert result.diagnostics["slices_retrained"] == expected_slices
    for k in range(5):
        same = unlearner.model_.models_[k] is models_before[k]
        assert same == (k not in (2, 4))
    shard_sizes = [len(ids) for ids in unlearner.shards_]
    assert result.diagnostics["records_retrained"] == shard_sizes[2] + shard_sizes[4]
    assert 0 < result.diagnostics["cost_fraction"] < 1


def test_sequential_requests_equal_one_request(digits):
    first, second = digits.ids[10:14], digits.ids[300:305]
    one_by_one = make(shards=4, slices=3).fit(digits)
    one_by_one.forget(ob.Remove(ids=first))
    one_by_one.forget(ob.Remove(ids=second))
    at_once = make(shards=4, slices=3).fit(digits)
    at_once.forget(ob.Remove(ids=np.concatenate([first, second])))
    assert_same_model(one_by_one.model_, at_once.model_, digits.X)


def test_passes_the_unlearner_contract(binary_data):
    check_unlearner(lambda: make(shards=4, slices=2), binary_data)
    check_unlearner(lambda: make(shards=3, aggregation="vote"), binary_data)


@pytest.mark.parametrize("kind", ["relabel", "features", "replace"])
def test_edits_are_exact(digits, kind):
    rng = np.random.default_rng(2)
    ids = rng.choice(digits.ids, size=5, replace=False)
    if kind == "relabel":
        request = ob.Relabel(ids=ids, labels=(digits.select(ids).y + 1) % 10)
    elif kind == "features":
        request = ob.ReplaceFeatures(features=[20, 21], value=0.0, ids=ids)
    else:
        request = ob.Replace(ids=ids, X=rng.random((5, digits.n_features)) * 0.2)
    unlearner = make(shards=4, slices=2).fit(digits)
    original = unlearner.model_.theta
    result = unlearner.forget(request)
    edited = request.resolve(digits).result
    scratch = make(shards=4, slices=2).fit(edited)
    assert_same_model(unlearner.model_, scratch.model_, digits.X)
    assert not torch.equal(original, unlearner.model_.theta)
    assert result.exact and result.request == type(request).__name__


def test_vote_aggregation_is_the_majority_of_shard_predictions(digits, digits_split):
    unlearner = make(shards=5, aggregation="vote").fit(digits)
    X = digits_split.test.X
    votes = np.stack([m.predict(X) for m in unlearner.model_.models_])
    predictions = unlearner.model_.predict(X)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(10)], axis=1)
    assert np.all(counts[np.arange(len(X)), predictions] == counts.max(axis=1))
    mean = np.mean([m.predict_proba(X) for m in unlearner.model_.models_], axis=0)
    assert np.allclose(unlearner.model_.predict_proba(X), mean)
    assert ob.audit.accuracy(unlearner, digits_split.test) > 0.8


def test_a_removal_can_empty_a_shard(binary_data):
    cut = np.sort(binary_data.ids)[3]

    def assignment(ids):
        return np.where(ids < cut, 0, 1 + ids % 2)  # shard 0 holds three records

    unlearner = make(shards=3, assignment=assignment).fit(binary_data)
    lonely = binary_data.ids[binary_data.ids < cut]
    unlearner.forget(ob.Remove(ids=lonely))
    assert unlearner.model_.models_[0] is None
    with pytest.warns(UserWarning, match="shards \\[0\\] received no records"):
        scratch = make(shards=3, assignment=assignment).fit(binary_data.drop(lonely))
    assert_same_model(unlearner.model_, scratch.model_, binary_data.X)


# -- failure, checkpoints, persistence -------------------------------------------------------
def test_failure_during_forget_changes_nothing(digits, monkeypatch):
    unlearner = make(shards=4, slices=2).fit(digits)
    theta, model, memory = unlearner.model_.theta, unlearner.model_, dict(unlearner._memory)

    def explode(tasks):
        raise RuntimeError("worker died")

    monkeypatch.setattr(unlearner, "_run", explode)
    with pytest.raises(RuntimeError, match="worker died"):
        unlearner.forget(ob.Remove(ids=digits.ids[:3]))
    assert unlearner.model_ is model and torch.equal(unlearner.model_.theta, theta)
    assert unlearner._memory == memory and len(unlearner.train_) == len(digits)


def test_disk_checkpoints_give_the_same_result(digits, tmp_path):
    ids = digits.ids[100:104]
    on_disk = make(shards=3, slices=3, checkpoint_dir=tmp_path / "ck").fit(digits)
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == [f"shard{k:04d}_slice{r:04d}.npz" for k in range(3) for r in range(2)]
    in_memory = make(shards=3, slices=3).fit(digits)
    on_disk.forget(ob.Remove(ids=ids))
    in_memory.forget(ob.Remove(ids=ids))
    assert_same_model(on_disk.model_, in_memory.model_, digits.X)
    assert not any(p.suffix == ".tmp" for p in (tmp_path / "ck").iterdir())


def _first_id_in(unlearner: SISA, shard: int, min_slice: int) -> int:
    ids = unlearner.shards_[shard]
    return int(ids[unlearner._slice_of(ids) >= min_slice][0])


@pytest.mark.parametrize("damage", ["garbage", "missing", "stale"])
def test_a_bad_checkpoint_is_a_clear_error_and_loses_nothing(digits, tmp_path, damage):
    folder = tmp_path / "ck"
    unlearner = make(shards=2, slices=3, checkpoint_dir=folder).fit(digits)
    victim = _first_id_in(unlearner, 0, 2)  # needs the checkpoint after slice 1 of shard 0
    path = folder / "shard0000_slice0001.npz"
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    elif damage == "missing":
        path.unlink()
    else:  # a checkpoint of shard 0 trained on other data
        other = make(shards=2, slices=3, checkpoint_dir=tmp_path / "other")
        other.fit(digits.drop([_first_id_in(unlearner, 0, 0)]))  # shard 0, slice 0
        path.write_bytes((tmp_path / "other" / path.name).read_bytes())
    theta = unlearner.model_.theta
    message = {"garbage": "is corrupt", "missing": "is missing", "stale": "other training data"}
    with pytest.raises(CheckpointError, match=f"shard0000_slice0001.npz.* {message[damage]}"):
        unlearner.forget(ob.Remove(ids=[victim]))
    assert torch.equal(unlearner.model_.theta, theta) and len(unlearner.train_) == len(digits)
    # a record of the other shard does not need that checkpoint
    unlearner.forget(ob.Remove(ids=[_first_id_in(unlearner, 1, 0)]))


def test_a_failed_checkpoint_write_loses_nothing(digits, tmp_path, monkeypatch):
    import oblivio.unlearners._sisa_checkpoints as checkpoints_module

    folder = tmp_path / "ck"
    unlearner = make(shards=2, slices=3, checkpoint_dir=folder).fit(digits)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    theta = unlearner.model_.theta
    real_mkstemp, calls = checkpoints_module.tempfile.mkstemp, []

    def mkstemp_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(checkpoints_module.tempfile, "mkstemp", mkstemp_then_fail)
    victims = [_first_id_in(unlearner, 0, 0), _first_id_in(unlearner, 1, 0)]
    with pytest.raises(CheckpointError, match="cannot write checkpoints to .*Permission denied"):
        unlearner.forget(ob.Remove(ids=victims))
    assert torch.equal(unlearner.model_.theta, theta) and len(unlearner.train_) == len(digits)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files  # no temp files left


def test_save_and_load_round_trip(digits, tmp_path):
    unlearner = make(shards=3, slices=2, assignment=lambda ids: ids % 3).fit(digits)
    unlearner.forget(ob.Remove(ids=digits.ids[:2]))
    unlearner.save(tmp_path / "sisa")
    loaded = Unlearner.load(tmp_path / "sisa")
    assert isinstance(loaded, SISA) and loaded.assignment == "custom"
    assert_same_model(loaded.model_, unlearner.model_, digits.X)
    more = digits.ids[50:53]
    unlearner.forget(ob.Remove(ids=more))
    loaded.forget(ob.Remove(ids=more))
    assert_same_model(loaded.model_, unlearner.model_, digits.X)
    with pytest.raises(ValueError, match="'custom' marks a SISA loaded from disk"):
        loaded.fit(digits)


def test_ensemble_theta_round_trips(digits):
    unlearner = make(shards=3).fit(digits)
    ensemble = unlearner.model_
    theta = ensemble.theta
    assert theta.numel() == sum(int(m.theta.numel()) for m in ensemble.models_)
    ensemble.theta = torch.zeros_like(theta)
    assert torch.all(ensemble.models_[1].theta == 0)
    ensemble.theta = theta
    assert torch.equal(ensemble.theta, theta)
    with pytest.raises(ValueError, match=f"theta must have {theta.numel()} entries, got 3"):
        ensemble.theta = torch.zeros(3)


# -- parallel backends -----------------------------------------------------------------------
def test_joblib_workers_give_the_same_result(digits):
    ids = digits.ids[::97]
    local = make(shards=3, slices=2).fit(digits)
    parallel = make(shards=3, slices=2, n_jobs=2).fit(digits)
    assert torch.allclose(local.model_.theta, parallel.model_.theta, rtol=0, atol=1e-9)
    local.forget(ob.Remove(ids=ids))
    result = parallel.forget(ob.Remove(ids=ids))
    assert result.diagnostics["shards_retrained"] == 3
    assert torch.allclose(local.model_.theta, parallel.model_.theta, rtol=0, atol=1e-9)
    assert np.array_equal(local.model_.predict(digits.X), parallel.model_.predict(digits.X))


@pytest.mark.slow  # starting two worker processes takes 10-25 s on a shared machine
def test_dask_local_cluster_gives_the_same_result(binary_data):
    pytest.importorskip("dask.distributed")
    ids = binary_data.ids[::40]
    start = time.perf_counter()
    with make(shards=2, slices=2, backend="dask") as on_dask:
        on_dask.fit(binary_data)
        result = on_dask.forget(ob.Remove(ids=ids))
        client = on_dask._dask[0]
        assert len(client.scheduler_info()["workers"]) == 2
    assert on_dask._dask is None and client.status in ("closed", "closing")
    local = make(shards=2, slices=2).fit(binary_data)
    local.forget(ob.Remove(ids=ids))
    assert torch.allclose(local.model_.theta, on_dask.model_.theta, rtol=0, atol=1e-9)
    assert result.diagnostics["shards_retrained"] == 2
    assert time.perf_counter() - start < 60


# -- neural shard models ---------------------------------------------------------------------
TorchModel = getattr(ob.models, "TorchModel", None)
needs_torch_model = pytest.mark.skipif(TorchModel is None, reason="TorchModel not available")


def _mlp(seed: int = 0):
    from oblivio.models import MLP

    return TorchModel(
        MLP(64, hidden=(16,), n_classes=10), epochs=10, batch_size=64, lr=3e-2, seed=seed
    )


@needs_torch_model
def test_torch_shards_are_exact_and_deterministic(digits):
    torch.set_num_threads(1)
    options = {"shards": 3, "slices": 2, "seed": 0}
    unlearner = SISA(_mlp(), **options).fit(digits)
    again = SISA(_mlp(), **options).fit(digits)
    assert torch.equal(unlearner.model_.theta, again.model_.theta)  # deterministic
    original = unlearner.model_.theta
    victim = _first_id_in(unlearner, 1, 1)  # slice 1: resumes from the slice-0 checkpoint
    ids = [victim, int(unlearner.shards_[2][0])]
    result = unlearner.forget(ob.Remove(ids=ids))
    scratch = SISA(_mlp(), **options).fit(digits.drop(ids))
    assert torch.equal(unlearner.model_.theta, scratch.model_.theta)
    assert np.array_equal(unlearner.model_.predict(digits.X), scratch.model_.predict(digits.X))
    assert not torch.equal(original, unlearner.model_.theta)
    assert result.diagnostics["shards_retrained"] == 2
    assert unlearner.model_.models_[0] is not None
    assert ob.audit.accuracy(unlearner, digits) > 0.7


@needs_torch_model
def test_torch_sisa_survives_save_and_load(digits, tmp_path):
    torch.set_num_threads(1)
    options = {"shards": 3, "slices": 2, "seed": 0}
    unlearner = SISA(_mlp(), **options).fit(digits)
    unlearner.save(tmp_path / "sisa")
    loaded = Unlearner.load(tmp_path / "sisa", model=_mlp())
    assert torch.equal(loaded.model_.theta, unlearner.model_.theta)
    ids = [_first_id_in(unlearner, k, 1) for k in range(3)]  # resume from checkpoints
    for each in (unlearner, loaded):
        each.forget(ob.Remove(ids=ids))
    assert torch.equal(loaded.model_.theta, unlearner.model_.theta)


@pytest.mark.slow
@needs_torch_model
def test_torch_shards_in_worker_processes_match_local_training(digits):
    torch.set_num_threads(1)
    options = {"shards": 3, "slices": 2, "seed": 0}
    local = SISA(_mlp(), **options).fit(digits)
    parallel = SISA(_mlp(), n_jobs=2, **options).fit(digits)
    assert torch.equal(local.model_.theta, parallel.model_.theta)
    ids = digits.ids[::50]  # hits every shard: retrained in parallel
    for unlearner in (local, parallel):
        result = unlearner.forget(ob.Remove(ids=ids))
        assert result.diagnostics["shards_retrained"] == 3
    assert torch.equal(local.model_.theta, parallel.model_.theta)


@needs_torch_model
def test_torch_slices_split_the_epochs(digits):
    unlearner = SISA(_mlp(), shards=2, slices=3, seed=0)
    assert unlearner._epochs() == [5, 5, 5]  # 2 * 10 / (3 + 1)
    assert SISA(_mlp(), shards=2, slices=1)._epochs() is None


# -- a path-dependent model: what slicing's exactness is really about ------------------------
class SGDSoftmax:
    """Plain per-record SGD on softmax regression: the result depends on the start and epochs.

    Follows the TorchModel contract SISA uses (``fit(data, *, init=None, epochs=None)``,
    ``epochs`` attribute, ``theta``, ``get_state``/``set_state``, ``clone``).
    """

    def __init__(self, n_features: int, n_classes: int, epochs: int = 4, lr: float = 0.5):
        self.n_features, self.n_classes, self.epochs, self.lr = n_features, n_classes, epochs, lr

    def clone(self):
        return SGDSoftmax(self.n_features, self.n_classes, self.epochs, self.lr)

    def get_params(self):
        return {
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "epochs": self.epochs,
            "lr": self.lr,
        }

    def fit(self, data, *, init=None, epochs=None):
        W = (
            np.zeros((self.n_classes, self.n_features))
            if init is None
            else (
                np.asarray(init, dtype=np.float64).reshape(self.n_classes, self.n_features).copy()
            )
        )
        epochs = self.epochs if epochs is None else epochs
        X = np.asarray(data.X, dtype=np.float64)
        for _ in range(epochs):
            for x, y in zip(X, data.y, strict=True):
                z = W @ x
                p = np.exp(z - z.max())
                p /= p.sum()
                p[y] -= 1.0
                W -= self.lr * np.outer(p, x)
        self.W_ = W
        return self

    def predict_proba(self, X):
        Z = np.asarray(X, dtype=np.float64) @ self.W_.T
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, X):
        return np.argmax(self.predict_proba(X), axis=1)

    @property
    def theta(self):
        return torch.from_numpy(self.W_.ravel().copy())

    @theta.setter
    def theta(self, value):
        self.W_ = np.asarray(value, dtype=np.float64).reshape(self.n_classes, self.n_features)

    def get_state(self):
        return {"W": self.W_.copy(), "__meta__": {}}

    def set_state(self, state):
        self.W_ = np.asarray(state["W"], dtype=np.float64).copy()


def test_path_dependent_model_resumes_exactly_from_checkpoints(digits):
    sgd = SGDSoftmax(64, 10, epochs=4)
    unlearner = SISA(sgd, shards=3, slices=3, seed=0).fit(digits)
    assert unlearner._epochs() == [2, 2, 2]  # e' = 2e / (R + 1)
    unsliced = SISA(SGDSoftmax(64, 10, epochs=4), shards=3, seed=0).fit(digits)
    assert not torch.allclose(unlearner.model_.theta, unsliced.model_.theta)  # path matters
    victim = _first_id_in(unlearner, 0, 2)  # last slice: resumes from the slice-1 checkpoint
    result = unlearner.forget(ob.Remove(ids=[victim]))
    assert result.diagnostics["slices_retrained"] == 1
    scratch = SISA(SGDSoftmax(64, 10, epochs=4), shards=3, slices=3, seed=0)
    scratch.fit(digits.drop([victim]))
    assert_same_model(unlearner.model_, scratch.model_, digits.X)
    shard_size = len(unlearner.shards_[0])
    assert result.diagnostics["cost_fraction"] == pytest.approx(
        shard_size * 2 / (4 * (len(digits) - 1))
    )
    assert ob.audit.accuracy(unlearner, digits) > 0.8
