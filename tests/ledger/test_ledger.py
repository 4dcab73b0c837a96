"""The ledger: idempotent, rejects cleanly, traceable, verifiable, recoverable, prunable."""

import json
import sqlite3
import warnings

import numpy as np
import pytest

import oblivio as ob
from oblivio.ledger import RequestIdConflictError, SnapshotError, snapshots
from oblivio.ledger.storage import SQLiteStorage


def _theta(ledger):
    return ledger.unlearner().model_.theta.detach().numpy().copy()


def _snapshot_dirs(path):
    return sorted(p.name for p in (path.parent / (path.name + ".models")).iterdir())


def _stored_ids(path):
    """Training-set ids of every snapshot folder in the ledger's store (each one loaded)."""
    store = path.parent / (path.name + ".models")
    return [snapshots.load(store, name).train_.ids for name in _snapshot_dirs(path)]


def _keeping_history(path, unlearner, **options):
    """A ledger created with the opt-in ``prune=False``, which must warn."""
    with pytest.warns(UserWarning, match="older versions retain"):
        return ob.Ledger.create(path, unlearner, prune=False, **options)


def test_exact_ledger_matches_retraining_and_records_everything(
    tmp_path, retrain_unlearner, binary_data
):
    path = tmp_path / "ledger.db"
    ledger = _keeping_history(path, retrain_unlearner)  # verify replays every request
    original = _theta(ledger)
    ids = binary_data.ids
    ledger.submit(ob.Remove(ids=ids[:3]), request_id="a")
    ledger.submit(ob.Relabel(ids=ids[10:12], labels=1 - binary_data.y[10:12]), request_id="b")
    assert ledger.version == 2

    oracle = ob.models.LogisticRegression(l2=1e-3).fit(
        binary_data.drop(ids[:3]).update(ids[10:12], y=1 - binary_data.y[10:12])
    )
    theta = _theta(ledger)
    assert not np.allclose(original, oracle.theta.numpy(), atol=1e-4)  # non-vacuous
    np.testing.assert_allclose(theta, oracle.theta.numpy(), atol=1e-6)

    history = ledger.history()
    assert [(e.request_id, e.status, e.version, e.kind) for e in history] == [
        ("a", "applied", 1, "remove"),
        ("b", "applied", 2, "relabel"),
    ]
    assert history[0].affected_ids == tuple(int(i) for i in ids[:3])
    assert history[0].exact and history[0].guarantee == "exact"
    assert history[0].request == {"kind": "remove", "ids": [int(i) for i in ids[:3]]}

    removed = ledger.status(int(ids[0]))
    assert removed.forgotten and removed.request_id == "a" and removed.version == 1
    assert removed.method == "retrain" and removed.time == history[0].finished_at
    assert ledger.status(int(ids[10])).state == "edited"
    assert ledger.status(int(ids[50])).state == "present"
    assert ledger.status(10**9).state == "unknown"

    report = ledger.verify()
    assert report.ok, report.summary()
    assert (report.base_version, report.head_version, report.replayed) == (0, 2, 2)
    assert all(c["max_difference"] == 0.0 for c in report.checks)

    reopened = ob.Ledger.open(path)
    assert reopened.version == 2
    np.testing.assert_array_equal(_theta(reopened), theta)


def test_same_request_id_applies_once(tmp_path, retrain_unlearner, binary_data):
    ledger = ob.Ledger.create(tmp_path / "l.db", retrain_unlearner)
    first = ledger.submit(ob.Remove(ids=binary_data.ids[:2]), request_id="ticket-1")
    theta = _theta(ledger)
    again = ledger.submit(ob.Remove(ids=binary_data.ids[:2]), request_id="ticket-1")
    assert again == first and ledger.version == 1
    np.testing.assert_array_equal(_theta(ledger), theta)
    with pytest.raises(RequestIdConflictError, match="ticket-1"):
        ledger.submit(ob.Remove(ids=binary_data.ids[5:6]), request_id="ticket-1")
    assert ledger.version == 1 and len(ledger.history()) == 1


def test_rejected_request_is_recorded_and_changes_nothing(tmp_path, retrain_unlearner, binary_data):
    path = tmp_path / "l.db"
    ledger = ob.Ledger.create(path, retrain_unlearner)
    ledger.submit(ob.Remove(ids=binary_data.ids[:1]), request_id="ok")
    theta, snaps = _theta(ledger), _snapshot_dirs(path)
    with pytest.raises(ob.RequestError, match=r"unknown ids.*\[999999\]"):
        ledger.submit(ob.Remove(ids=[999999]), request_id="bad")
    with pytest.raises(ob.RequestError, match="labels outside"):
        ledger.submit(ob.Relabel(ids=binary_data.ids[3:4], labels=[7]), request_id="bad2")
    with pytest.raises(ob.RequestError, match="never record features"):
        ledger.submit(ob.Replace(ids=binary_data.ids[3:4], X=binary_data.X[:1]), request_id="r")
    assert ledger.version == 1 and _snapshot_dirs(path) == snaps
    np.testing.assert_array_equal(_theta(ledger), theta)
    entries = {e.request_id: e for e in ledger.history()}
    assert entries["bad"].status == "rejected" and "999999" in entries["bad"].error
    assert entries["bad"].version is None and entries["r"].status == "rejected"
    assert ledger.status(999999).state == "unknown"
    # resubmitting a rejected id raises the same error again, nothing changes
    with pytest.raises(ob.RequestError, match="999999"):
        ledger.submit(ob.Remove(ids=[999999]), request_id="bad")
    assert ledger.version == 1 and ledger.verify().ok


def test_certified_entries_verify_and_tampering_is_caught(
    tmp_path, certified_unlearner, binary_data
):
    path = tmp_path / "l.db"
    ledger = _keeping_history(path, certified_unlearner)  # verify replays every request
    for i in range(4):
        entry = ledger.submit(ob.Remove(ids=binary_data.ids[i : i + 1]), request_id=f"r{i}")
    assert entry.certificate is not None and entry.guarantee.startswith("certified")
    assert ledger.status(int(binary_data.ids[0])).certificate is not None
    report = ledger.verify()
    assert report.ok, report.summary()
    for check in report.checks:
        assert 0 < check["residual"] <= check["bound"] <= check["budget"]

    # a recorded bound below the real residual must fail verification
    with sqlite3.connect(path) as connection:
        row = connection.execute("SELECT certificate FROM entries WHERE version = 2").fetchone()
        tampered = json.loads(row[0])
        tampered["residual_bound"] = 1e-30
        tampered = json.dumps(tampered)
        connection.execute("UPDATE entries SET certificate = ? WHERE version = 2", (tampered,))
    report = ob.Ledger.open(path).verify()
    assert not report.ok and any("exceeds the certified bound" in p for p in report.problems)

    # an edited snapshot is refused (its hash no longer matches)
    version, name = SQLiteStorage(path).snapshots()[1]
    with open(path.parent / "l.db.models" / name / "unlearner.json", "a") as handle:
        handle.write(" ")
    report = ledger.verify()
    assert not report.ok and any(f"version {version}" in p and "hash" in p for p in report.problems)


def test_crashed_submit_is_rolled_back_on_open_and_can_be_resubmitted(
    tmp_path, retrain_unlearner, binary_data
):
    path = tmp_path / "l.db"
    ledger = ob.Ledger.create(path, retrain_unlearner)
    ledger.submit(ob.Remove(ids=binary_data.ids[:1]), request_id="done")
    theta = _theta(ledger)
    # what a writer killed between steps (1) and (3) leaves: a pending row, an orphan
    # snapshot of the version it was building and a half-written temporary folder
    storage = SQLiteStorage(path)
    payload = {"kind": "remove", "ids": [int(binary_data.ids[5])]}
    from oblivio.ledger.payload import fingerprint

    storage.begin(
        {
            "request_id": "lost",
            "kind": "remove",
            "request": payload,
            "fingerprint": fingerprint(payload),
            "submitted_at": "t",
        }
    )
    newer = ledger.unlearner()
    newer.forget(ob.Remove(ids=binary_data.ids[5:6]))
    orphan = snapshots.save(newer, path.parent / "l.db.models")
    (path.parent / "l.db.models" / ".tmp-deadbeef").mkdir()
    (path.parent / "l.db.models" / "not-ours").mkdir()

    reopened = ob.Ledger.open(path)
    lost = reopened.entry("lost")
    assert lost.status == "interrupted" and lost.version is None
    assert reopened.version == 1
    np.testing.assert_array_equal(_theta(reopened), theta)
    names = _snapshot_dirs(path)
    assert orphan not in names and ".tmp-deadbeef" not in names and "not-ours" in names
    assert reopened.status(int(binary_data.ids[5])).state == "present"

    entry = reopened.submit(ob.Remove(ids=binary_data.ids[5:6]), request_id="lost")
    assert entry.status == "applied" and entry.version == 2
    assert reopened.status(int(binary_data.ids[5])).forgotten
    assert reopened.verify().ok


def test_checkpoints_rebuild_the_head_by_replay(tmp_path, retrain_unlearner, binary_data):
    path = tmp_path / "l.db"
    ledger = _keeping_history(path, retrain_unlearner, checkpoint_every=3)
    for i in range(4):
        ledger.submit(ob.Remove(ids=binary_data.ids[i : i + 1]))
    assert [v for v, _ in SQLiteStorage(path).snapshots()] == [0, 3]
    reopened = ob.Ledger.open(path)
    assert reopened.version == 4
    np.testing.assert_array_equal(_theta(reopened), _theta(ledger))
    assert reopened.verify().ok


def test_prune_keeps_no_forgotten_record(tmp_path, retrain_unlearner, binary_data):
    path = tmp_path / "l.db"
    ledger = _keeping_history(path, retrain_unlearner, checkpoint_every=2)
    removed = binary_data.ids[:3]
    for i in range(3):
        ledger.submit(ob.Remove(ids=removed[i : i + 1]))
    assert len(_snapshot_dirs(path)) == 2  # versions 0 and 2 both hold removed records
    assert ledger.prune() == [0, 2]
    (name,) = _snapshot_dirs(path)
    kept = snapshots.load(path.parent / "l.db.models", name)
    assert not np.isin(removed, kept.train_.ids).any()
    assert SQLiteStorage(path).snapshots() == [(3, name)]
    assert ledger.status(int(removed[0])).forgotten  # the trail stays
    report = ob.Ledger.open(path).verify()
    assert report.ok and report.base_version == 3 and report.replayed == 0


def test_by_default_no_stored_version_holds_a_removed_record(
    tmp_path, retrain_unlearner, binary_data
):
    path = tmp_path / "l.db"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default is the safe one: no warning
        ledger = ob.Ledger.create(path, retrain_unlearner)
    ids = binary_data.ids
    assert all(np.isin(ids[:3], stored).all() for stored in _stored_ids(path))  # non-vacuous
    removed = []
    for request in (
        ob.Remove(ids=ids[:1]),
        ob.Relabel(ids=ids[10:11], labels=1 - binary_data.y[10:11]),
        ob.Remove(ids=ids[1:3]),
    ):
        ledger.submit(request)
        if isinstance(request, ob.Remove):
            removed += [int(i) for i in request.ids]
        stored = _stored_ids(path)  # every folder in the store, loaded
        assert stored and not any(np.isin(removed, s).any() for s in stored)
    assert [v for v, _ in SQLiteStorage(path).snapshots()] == [ledger.version] == [3]
    reopened = ob.Ledger.open(path)
    assert reopened.auto_prune and reopened.version == 3
    report = reopened.verify()  # nothing left to replay: the current version is checked
    assert report.ok and (report.base_version, report.replayed) == (3, 0), report.summary()
    assert reopened.status(int(ids[0])).forgotten  # the trail (ids, metadata) stays


def test_opt_in_history_warns_keeps_every_version_and_survives_reopening(
    tmp_path, retrain_unlearner, binary_data
):
    path = tmp_path / "l.db"
    ledger = _keeping_history(path, retrain_unlearner)
    removed = binary_data.ids[:2]
    ledger.submit(ob.Remove(ids=removed[:1]))
    assert not ledger.auto_prune and SQLiteStorage(path).meta()["prune"] == "0"
    # a ledger opened again keeps its stored setting, rewrites nothing, and warns of the
    # older version it stores (version 0 holds the removed record)
    with pytest.warns(UserWarning, match=r"stores 1 model version\(s\) older .* \(1\)"):
        reopened = ob.Ledger.open(path)
    reopened.submit(ob.Remove(ids=removed[1:]))
    assert [v for v, _ in SQLiteStorage(path).snapshots()] == [0, 1, 2]
    assert SQLiteStorage(path).meta()["prune"] == "0"
    holding = [np.isin(removed, s).any() for s in _stored_ids(path)]
    assert sorted(holding) == [False, True, True]  # versions 0 and 1 hold a removed id
    report = reopened.verify()
    assert report.ok and (report.base_version, report.replayed) == (0, 2), report.summary()
    with pytest.warns(UserWarning, match="stores 2 model version"):
        ob.Ledger.open(path)
    assert reopened.prune() == [0, 1]
    with warnings.catch_warnings():  # nothing older is stored: opening is silent
        warnings.simplefilter("error")
        assert ob.Ledger.open(path).version == 2


def test_verify_catches_a_current_version_that_holds_removed_records(
    tmp_path, retrain_unlearner, binary_data
):
    path = tmp_path / "l.db"
    ledger = ob.Ledger.create(path, retrain_unlearner)
    ledger.submit(ob.Remove(ids=binary_data.ids[:2]), request_id="a")
    assert ledger.verify().ok
    # point the current version at a stored model that still holds the removed records
    stale = snapshots.save(retrain_unlearner, path.parent / "l.db.models")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE snapshots SET hash = ? WHERE version = 1", (stale,))
    report = ob.Ledger.open(path).verify()
    assert not report.ok
    assert any("still holds 2 removed records" in p for p in report.problems), report.problems


def test_concurrent_submits_apply_each_once_in_one_order(
    tmp_path, retrain_unlearner, binary_data, submit_concurrently
):
    path = tmp_path / "l.db"
    ob.Ledger.create(path, retrain_unlearner)
    # two handles on one file behave like two processes sharing it
    handles = [ob.Ledger.open(path), ob.Ledger.open(path)]
    ids = binary_data.ids[:12]
    submit_concurrently(handles, ids, repeats=2)  # each request twice: applied once
    history = handles[0].history()
    assert len(history) == 12 and sorted(e.version for e in history) == list(range(1, 13))
    assert [e.version for e in history] == sorted(e.version for e in history)  # arrival order
    final = ob.Ledger.open(path).unlearner()
    assert not np.isin(ids, final.train_.ids).any() and len(final.train_) == len(binary_data) - 12
    assert ob.Ledger.open(path).verify().ok


def test_bad_arguments_change_nothing(tmp_path, retrain_unlearner):
    path = tmp_path / "l.db"
    ob.Ledger.create(path, retrain_unlearner)
    with pytest.raises(FileExistsError, match="l.db"):
        ob.Ledger.create(path, retrain_unlearner)
    with pytest.raises(FileNotFoundError, match="nope.db"):
        ob.Ledger.open(tmp_path / "nope.db")
    with pytest.raises(ValueError, match="checkpoint_every"):
        ob.Ledger.create(tmp_path / "m.db", retrain_unlearner, checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_every=3 .* pass prune=False"):
        ob.Ledger.create(tmp_path / "m.db", retrain_unlearner, checkpoint_every=3)
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "m.db.models").exists()
    fresh = ob.unlearners.create("retrain", ob.models.LogisticRegression())
    with pytest.raises(ob.models.NotFittedError):
        ob.Ledger.create(tmp_path / "n.db", fresh)
    (tmp_path / "junk.db").write_text("not a database")
    with pytest.raises(ValueError, match="not an oblivio ledger"):
        ob.Ledger.open(tmp_path / "junk.db")


def test_missing_snapshot_is_an_error(tmp_path, retrain_unlearner):
    path = tmp_path / "l.db"
    ob.Ledger.create(path, retrain_unlearner)
    (name,) = _snapshot_dirs(path)
    (arrays,) = (path.parent / "l.db.models" / name).glob("arrays*.npz")
    arrays.unlink()
    with pytest.raises(SnapshotError, match="does not match its hash"):
        ob.Ledger.open(path)


def test_feature_requests_record_the_rows_they_edited(tmp_path, retrain_unlearner, binary_data):
    ledger = ob.Ledger.create(tmp_path / "l.db", retrain_unlearner)
    column = np.asarray(binary_data.X)[:, 20]
    edited = binary_data.ids[column != 0]
    assert 0 < edited.size < len(binary_data)  # the request touches some rows, not all
    entry = ledger.submit(ob.ReplaceFeatures(features=[20]), request_id="f")
    assert entry.affected_ids == tuple(int(i) for i in edited)
    assert entry.request == {
        "kind": "replace-features",
        "features": [20],
        "value": 0.0,
        "ids": None,
    }
    assert ledger.status(int(edited[0])).state == "edited"
    assert ledger.status(int(binary_data.ids[column == 0][0])).state == "present"
    assert not np.asarray(ledger.unlearner().train_.X)[:, 20].any()
    assert ledger.verify().ok
