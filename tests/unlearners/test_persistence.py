"""Fault injection on saves: killed writes, corrupted files, tampered certificates.

The promises (``oblivio.unlearners._persist``): the path always holds one complete save,
nothing else is left beside it after a later save or load, no forgotten record survives in
any file, and ``ob.load`` refuses anything inconsistent with a ``LoadError`` naming the file
and the field.
"""

import hashlib
import json
import os
import random
import re
import signal
import time

import numpy as np
import pytest
import torch

import oblivio as ob
from oblivio.models import MLP, CharLSTM, LogisticRegression, SmallCNN, TorchModel
from oblivio.unlearners import SISA, CertifiedRemoval, FirstOrder, Retrain
from oblivio.unlearners._persist import META_FILE


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _arrays_name(path):
    return json.loads((path / META_FILE).read_text())["arrays"]["file"]


def _rewrite_arrays(path, change):
    """Edit the arrays of a save and re-record their hash (a consistent, deliberate edit)."""
    name = _arrays_name(path)
    with np.load(path / name) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    with open(path / name, "wb") as handle:
        np.savez(handle, **arrays)
    meta = json.loads((path / META_FILE).read_text())
    meta["arrays"]["sha256"] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / META_FILE).write_text(json.dumps(meta))


def _edit_meta(path, change):
    meta = json.loads((path / META_FILE).read_text())
    change(meta)
    (path / META_FILE).write_text(json.dumps(meta))


@pytest.fixture
def marked_data():
    """Random binary data whose record 7 has a row whose bytes occur nowhere else."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(np.int64)
    return ob.Dataset(X=X, y=y, ids=np.arange(400) * 3 + 1)


# -- killed saves ------------------------------------------------------------------------
def _saving_child(path, first, second) -> int:
    """Fork a process that saves ``first`` then ``second`` to ``path`` until it is killed;
    return its pid once it runs."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only saves until it is killed
        try:
            os.close(read)
            os.write(write, b"x")
            while True:
                first.save(path)
                second.save(path)
        finally:
            os._exit(1)  # never return into the test runner
    os.close(write)
    os.read(read, 1)  # the child runs
    os.close(read)
    return child


def test_a_save_killed_at_random_points_never_loses_the_model(tmp_path, marked_data):
    marker = int(marked_data.ids[7])
    row = np.ascontiguousarray(marked_data.X[7]).tobytes()
    full = Retrain(LogisticRegression(l2=1e-2)).fit(marked_data)
    forgotten = Retrain(LogisticRegression(l2=1e-2)).fit(marked_data)
    forgotten.forget(ob.Remove(ids=[marker]))
    path = tmp_path / "save"
    full.save(path)
    states = {len(full.train_): "full", len(forgotten.train_): "forgotten"}
    kill = random.Random(0)
    outcomes = set()
    debris = 0  # kills that left something for the load to clean (the test is not vacuous)
    deadline = time.monotonic() + 8.0
    for attempt in range(30):
        if time.monotonic() > deadline:
            break
        child = _saving_child(path, forgotten, full)
        time.sleep(kill.uniform(0.0, 0.03))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        debris += len(list(tmp_path.iterdir())) > 1 or len(_files(path)) != 2
        loaded = ob.load(path)  # never a LoadError: one complete save is always there
        state = states[len(loaded.train_)]
        outcomes.add(state)
        # the load cleaned up: nothing beside the save, one arrays file inside it
        assert [p.name for p in tmp_path.iterdir()] == ["save"], attempt
        assert _files(path) == sorted([META_FILE, _arrays_name(path)]), attempt
        if state == "forgotten":
            assert marker not in loaded.train_.ids
            for file in path.iterdir():
                assert row not in file.read_bytes(), (attempt, file.name)
    assert outcomes and debris > 0, (outcomes, debris)


def test_a_forgotten_record_is_in_no_file_after_the_next_save(tmp_path, marked_data):
    row = np.ascontiguousarray(marked_data.X[7]).tobytes()
    u = SISA(LogisticRegression(l2=1e-2), shards=3, seed=0).fit(marked_data)
    path = u.save(tmp_path / "sisa")
    assert any(row in f.read_bytes() for f in path.iterdir())
    u.forget(ob.Remove(ids=[int(marked_data.ids[7])]))
    u.save(path)
    assert _files(tmp_path) == ["sisa", *(f"sisa/{n}" for n in _files(path))]
    for file in path.iterdir():
        assert row not in file.read_bytes()
    with np.load(path / _arrays_name(path)) as archive:
        assert int(marked_data.ids[7]) not in archive["method__layout_ids"]
    # leftovers of a crash are removed by the next load (and never a user's file)
    (tmp_path / ".sisa.oblivio-staging-abc").mkdir()
    (tmp_path / ".sisa.oblivio-staging-abc" / "arrays-0.npz").write_bytes(row)
    (path / "arrays-deadbeef.npz").write_bytes(row)
    (tmp_path / ".sisa.notes").write_text("mine")
    ob.load(path)
    assert _files(tmp_path) == [".sisa.notes", "sisa", *(f"sisa/{n}" for n in _files(path))]


def test_saving_into_a_foreign_folder_is_refused(tmp_path, binary_data):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    u = Retrain(LogisticRegression(l2=1e-2)).fit(binary_data)
    with pytest.raises(ValueError, match="not empty and holds no oblivio save"):
        u.save(folder)
    assert _files(folder) == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        u.save(tmp_path / "file")


# -- corrupted files ---------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "flip"])
def test_each_corrupted_file_gives_a_load_error_naming_it(tmp_path, binary_data, damage):
    u = Retrain(LogisticRegression(l2=1e-2)).fit(binary_data)
    path = u.save(tmp_path / "save")
    for name in (META_FILE, _arrays_name(path)):
        u.save(path)
        name = _arrays_name(path) if name != META_FILE else name
        target = path / name
        content = target.read_bytes()
        if damage == "truncate":
            target.write_bytes(content[: len(content) // 2])
        elif damage == "garbage":
            target.write_bytes(b"\x00garbage" * 10)
        elif damage == "delete":
            target.unlink()
        else:
            middle = len(content) // 2
            target.write_bytes(
                content[:middle] + bytes([content[middle] ^ 1]) + content[middle + 1 :]
            )
        with pytest.raises(ob.LoadError, match=name) as error:
            ob.load(path)
        assert isinstance(error.value, ValueError)
        target.write_bytes(content)  # repair, so the next file is the only one at fault
    assert ob.load(path).history_ == u.history_


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("model__theta", np.nan, "model__theta"),
        ("train__X", np.inf, "train__X"),
        ("train__ids", None, "train"),
        ("train__y", None, "train"),
        ("model__theta", "short", "model"),
    ],
)
def test_inconsistent_arrays_are_refused(tmp_path, binary_data, key, value, field):
    path = Retrain(LogisticRegression(l2=1e-2)).fit(binary_data).save(tmp_path / "save")

    def change(arrays):
        if value == "short":
            arrays[key] = arrays[key][:-1]
        elif key == "train__ids":
            arrays[key] = arrays[key].copy()
            arrays[key][1] = arrays[key][0]  # duplicate id
        elif key == "train__y":
            arrays[key] = np.full_like(arrays[key], 9)  # label outside the classes
        else:
            arrays[key] = arrays[key].astype(np.float64)
            arrays[key].flat[3] = value

    _rewrite_arrays(path, change)
    with pytest.raises(ob.LoadError, match=rf"arrays-.*field '{field}'"):
        ob.load(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["options"].update(l2="abc"), "options"),
        (lambda m: m["options"].update(nonsense=1), "options"),
        (lambda m: m["model"]["params"].update(l2=-1.0), "model.params"),
        (lambda m: m.update(unlearner="no-such-method"), "unlearner"),
        (lambda m: m.update(history={"a": 1}), "history"),
        (lambda m: m["history"].append({"method": "x"}), "history[1]"),
        (lambda m: m.update(format_version=99), "format_version"),
    ],
)
def test_inconsistent_json_is_refused(tmp_path, binary_data, change, field):
    u = Retrain(LogisticRegression(l2=1e-2)).fit(binary_data)
    u.forget(ob.Remove(ids=binary_data.ids[:2]))
    path = u.save(tmp_path / "save")
    _edit_meta(path, change)
    with pytest.raises(ob.LoadError, match=re.escape(f"{META_FILE}: field '{field}'")):
        ob.load(path)


# -- certificates ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certified_save(tmp_path_factory, binary_data):
    u = CertifiedRemoval(LogisticRegression(l2=0.05), sigma=1.0, epsilon=1.0, seed=0)
    u.fit(binary_data)
    for i in range(3):
        u.forget(ob.Remove(ids=[int(binary_data.ids[i])]))
    return u, u.save(tmp_path_factory.mktemp("certified") / "save")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state.budget_used", -100.0),
        ("state.budget_used", 0.0),
        ("state.budget_used", 1e9),
        ("state.budget_used", "abc"),
        ("state.row_norm", -1.0),
        ("state.xnorm", [1.0, 2.0]),
        ("state.rng", {"bit_generator": "nope"}),
        ("options.epsilon", "abc"),
        ("options.sigma", -1.0),
        ("history.certificate.epsilon", 7.0),
        ("history.certificate.delta", 0.5),
        ("history.certificate.sigma", 3.0),
        ("history.certificate.budget_total", 99.0),
        ("history.certificate.budget_used", -1.0),
        ("history.certificate.residual_bound", 1e9),
    ],
)
def test_each_tampered_certificate_field_is_refused(certified_save, tmp_path, field, value):
    import shutil

    original, source = certified_save
    path = tmp_path / "save"
    shutil.copytree(source, path)
    section, _, name = field.partition(".")

    def change(meta):
        if section == "history":
            meta["history"][-1]["certificate"][name.split(".")[-1]] = value
        else:
            meta[section][name] = value

    _edit_meta(path, change)
    expected = field if section != "history" else "state.history"
    with pytest.raises(ob.LoadError, match=rf"{META_FILE}: field '{expected}"):
        ob.load(path)
    shutil.rmtree(path)
    shutil.copytree(source, path)
    loaded = ob.load(path)  # the untouched save loads, and keeps its spent budget
    assert loaded.budget_used_ == original.budget_used_


def test_certified_rows_of_norm_above_one_are_refused(certified_save, tmp_path):
    import shutil

    _, source = certified_save
    path = tmp_path / "save"
    shutil.copytree(source, path)
    _rewrite_arrays(path, lambda arrays: arrays["train__X"].__setitem__((0, 0), 5.0))
    with pytest.raises(ob.LoadError, match="field 'state.train'.*norm <= 1"):
        ob.load(path)


# -- SISA layouts ------------------------------------------------------------------------
@pytest.mark.parametrize("assignment", ["random", "custom"])
def test_a_record_moved_to_another_shard_is_refused(tmp_path, marked_data, assignment):
    def by_id(ids):
        return (ids // 3) % 3

    options = {"assignment": by_id} if assignment == "custom" else {}
    u = SISA(LogisticRegression(l2=1e-2), shards=3, seed=0, **options).fit(marked_data)
    path = u.save(tmp_path / "sisa")
    loaded = ob.load(path)
    assert loaded.assignment == ("custom" if assignment == "custom" else "random")

    def move(arrays):
        arrays["method__layout_shards"] = arrays["method__layout_shards"].copy()
        shard = arrays["method__layout_shards"][5]
        arrays["method__layout_shards"][5] = (shard + 1) % 3

    _rewrite_arrays(path, move)
    with pytest.raises(ob.LoadError, match="field 'state.layout_shards'"):
        ob.load(path)


def test_a_layout_with_unknown_ids_is_refused(tmp_path, marked_data):
    path = SISA(LogisticRegression(l2=1e-2), shards=3, seed=0).fit(marked_data).save(tmp_path / "s")

    def extra(arrays):
        arrays["method__layout_ids"] = np.append(arrays["method__layout_ids"], 10**9)
        arrays["method__layout_shards"] = np.append(arrays["method__layout_shards"], 0)

    _rewrite_arrays(path, extra)
    with pytest.raises(ob.LoadError, match="field 'state.layout_ids'"):
        ob.load(path)


# -- torch models ------------------------------------------------------------------------
def _net(hidden=8, epochs=1, **options):
    return TorchModel(MLP(64, hidden=(hidden,), n_classes=10), epochs=epochs, seed=0, **options)


def test_torch_hyper_parameters_come_from_the_save(tmp_path, digits_split):
    torch.set_num_threads(1)
    train = digits_split.train.take(np.arange(200))
    u = Retrain(_net(lr=3e-3, batch_size=32)).fit(train)
    path = u.save(tmp_path / "net")
    loaded = ob.load(path, model=_net(lr=0.5, batch_size=7, epochs=9))
    assert (loaded.model.lr, loaded.model.batch_size, loaded.model.epochs) == (3e-3, 32, 1)
    assert torch.equal(loaded.model_.theta, u.model_.theta)
    with pytest.raises(ob.LoadError, match="(?s)field 'model'.*size mismatch"):
        ob.load(path, model=_net(hidden=5))
    other = TorchModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    with pytest.raises(ob.LoadError, match="field 'model.module_class'"):
        ob.load(path, model=other)


@pytest.mark.parametrize(
    "network, rows",
    [
        (lambda: MLP(64, hidden=(8, 6), n_classes=10, dropout=0.25), None),
        (lambda: SmallCNN(1, image_size=8, n_classes=10, channels=(3, 4), hidden=9), None),
        (lambda: CharLSTM(17, embed=5, hidden=6, n_classes=10, layers=2, dropout=0.1), 17),
    ],
    ids=["mlp", "cnn", "lstm"],
)
def test_oblivios_networks_are_rebuilt_from_the_save_alone(tmp_path, digits_split, network, rows):
    torch.set_num_threads(1)
    train = digits_split.train.take(np.arange(120))
    if rows is not None:  # token windows for the LSTM: digits pixels (0..16) as token ids
        train = ob.data.Dataset(X=train.X[:, :6].astype(np.int64), y=train.y, ids=train.ids)
    u = Retrain(TorchModel(network(), epochs=1, lr=3e-3, batch_size=32, seed=0)).fit(train)
    loaded = ob.load(u.save(tmp_path / "net"))  # no template
    module = loaded.model_.module
    assert type(module) is type(u.model_.module)
    assert module.architecture == u.model_.module.architecture
    assert (loaded.model.lr, loaded.model.batch_size) == (3e-3, 32)
    assert torch.equal(loaded.model_.theta, u.model_.theta)
    np.testing.assert_array_equal(
        loaded.model_.predict_proba(train.X[:10]), u.model_.predict_proba(train.X[:10])
    )


def test_a_network_the_save_cannot_rebuild_needs_a_template(tmp_path, digits_split):
    train = digits_split.train.take(np.arange(120))
    own = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # a user's network
    path = Retrain(TorchModel(own, epochs=1, seed=0)).fit(train).save(tmp_path / "own")
    with pytest.raises(ob.LoadError, match="field 'model.class'.*load\\(path, model=...\\)"):
        ob.load(path)

    # a loss JSON cannot hold: the save alone cannot rebuild the model either
    def loss(logits, y):
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    path = Retrain(_net(loss=loss)).fit(train).save(tmp_path / "loss")
    with pytest.raises(ob.LoadError, match="field 'model.class'"):
        ob.load(path)
    # tampered constructor arguments are a load error naming the field
    path = Retrain(_net()).fit(train).save(tmp_path / "mlp")
    meta = json.loads((path / META_FILE).read_text())
    meta["model"]["module_args"]["hidden"] = [0]
    (path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ob.LoadError, match="field 'model.module_args'.*hidden width"):
        ob.load(path)


def test_loads_during_concurrent_saves_always_succeed(tmp_path, marked_data):
    """A reader never sees a half save, and its clean-up never breaks the writer's save."""
    full = Retrain(LogisticRegression(l2=1e-2)).fit(marked_data)
    smaller = Retrain(LogisticRegression(l2=1e-2)).fit(marked_data)
    smaller.forget(ob.Remove(ids=marked_data.ids[:5]))
    path = full.save(tmp_path / "save")
    child = _saving_child(path, smaller, full)
    try:
        sizes = {len(ob.load(path).train_) for _ in range(150)}
        assert os.waitpid(child, os.WNOHANG) == (0, 0), "the saving process failed"
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert sizes <= {len(full.train_), len(smaller.train_)}
    ob.load(path)
    assert _files(path) == sorted([META_FILE, _arrays_name(path)])


def test_saves_of_format_1_load_and_are_upgraded_in_place(tmp_path, binary_data):
    u = Retrain(LogisticRegression(l2=1e-2)).fit(binary_data)
    path = u.save(tmp_path / "old")
    (path / _arrays_name(path)).rename(path / "arrays.npz")  # the layout of format 1

    def downgrade(meta):
        meta["format_version"] = 1
        del meta["arrays"], meta["model"]["unsaved"]

    _edit_meta(path, downgrade)
    assert torch.equal(ob.load(path).model_.theta, u.model_.theta)
    u.save(path)
    assert _files(path) == sorted([META_FILE, _arrays_name(path)])


def test_a_tampered_curvature_estimate_is_refused(tmp_path, binary_data):
    model = LogisticRegression(l2=1e-2).fit(binary_data)
    path = FirstOrder(model).attach(binary_data).save(tmp_path / "fo")
    assert ob.load(path).lambda_max_ > 0
    _edit_meta(path, lambda meta: meta["state"].update(lambda_max=-3.0))
    with pytest.raises(ob.LoadError, match="field 'state.lambda_max'"):
        ob.load(path)
