"""The ledger on PostgreSQL (SQLAlchemy), against a real server this module starts and stops.

Skipped when SQLAlchemy/psycopg or the PostgreSQL server binaries are not installed
(Debian: ``apt-get install postgresql``).
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import oblivio as ob
from oblivio.ledger import snapshots
from oblivio.ledger.payload import fingerprint

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")


def _bin(name):
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    folder = tempfile.mkdtemp(prefix="oblivio-pg-")
    run_as = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser")
        shutil.chown(folder, user="postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = f"{folder}/data"
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run(
            [*run_as, initdb, "-D", data, "-A", "trust", "-U", "oblivio", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                data,
                "-o",
                options,
                "-l",
                f"{folder}/log",
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {error}")
    try:
        yield f"postgresql+psycopg://oblivio@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def url(postgres_url):
    """A fresh database per test."""
    name = f"t{os.urandom(6).hex()}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def test_postgres_ledger_end_to_end(url, tmp_path, retrain_unlearner, binary_data):
    store = tmp_path / "models"
    with pytest.raises(ValueError, match="needs store="):
        ob.Ledger.create(url, retrain_unlearner)
    with pytest.warns(UserWarning, match="older versions retain"):
        ledger = ob.Ledger.create(url, retrain_unlearner, store=store, prune=False)
    with pytest.raises(FileExistsError, match="already exists"):
        ob.Ledger.create(url, retrain_unlearner, store=store)
    ids = binary_data.ids
    first = ledger.submit(ob.Remove(ids=ids[:2]), request_id="a")
    assert ledger.submit(ob.Remove(ids=ids[:2]), request_id="a") == first
    with pytest.raises(ob.RequestError, match="999999"):
        ledger.submit(ob.Remove(ids=[999999]), request_id="bad")
    ledger.submit(ob.Relabel(ids=ids[5:6], labels=1 - binary_data.y[5:6]), request_id="b")
    assert [(e.request_id, e.status, e.version) for e in ledger.history()] == [
        ("a", "applied", 1),
        ("bad", "rejected", None),
        ("b", "applied", 2),
    ]
    status = ledger.status(int(ids[0]))
    assert status.forgotten and status.request_id == "a" and status.version == 1
    assert ledger.status(int(ids[5])).state == "edited"

    oracle = ob.models.LogisticRegression(l2=1e-3).fit(
        binary_data.drop(ids[:2]).update(ids[5:6], y=1 - binary_data.y[5:6])
    )
    reopened = ob.Ledger.open(url, store=store)
    assert reopened.version == 2
    np.testing.assert_allclose(
        reopened.unlearner().model_.theta.numpy(), oracle.theta.numpy(), atol=1e-6
    )
    assert reopened.verify().ok
    assert reopened.prune() == [0, 1]
    assert len(list(store.iterdir())) == 1


def test_postgres_recovery_and_concurrent_writers(
    url, tmp_path, retrain_unlearner, binary_data, submit_concurrently
):
    store = tmp_path / "models"
    ob.Ledger.create(url, retrain_unlearner, store=store).close()
    # a writer that died after writing its pending row
    from oblivio.ledger.sql import SQLAlchemyStorage

    payload = {"kind": "remove", "ids": [int(binary_data.ids[0])]}
    SQLAlchemyStorage(url).begin(
        {
            "request_id": "lost",
            "kind": "remove",
            "request": payload,
            "fingerprint": fingerprint(payload),
            "submitted_at": "t",
        }
    )
    handles = [ob.Ledger.open(url, store=store) for _ in range(2)]
    assert handles[0].entry("lost").status == "interrupted"
    ids = binary_data.ids[:8]
    submit_concurrently(handles, ids)
    final = ob.Ledger.open(url, store=store)
    applied = [e for e in final.history() if e.status == "applied"]
    assert [e.version for e in applied] == list(range(1, 9))
    assert not np.isin(ids, final.unlearner().train_.ids).any()
    assert Path(store).is_dir() and final.verify().ok
    # pruned by default: the one stored version holds none of the removed records
    (name,) = (p.name for p in Path(store).iterdir())
    assert not np.isin(ids, snapshots.load(Path(store), name).train_.ids).any()
