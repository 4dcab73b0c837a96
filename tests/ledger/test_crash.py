"""Kill a writer process (SIGKILL) in the middle of a stream of submits: nothing acknowledged
is lost, nothing is applied twice, and resubmitting the stream finishes it exactly once."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import oblivio as ob

WRITER = """
import sys
import oblivio as ob
ledger = ob.Ledger.open(sys.argv[1])
ids = [int(i) for i in sys.argv[2].split(",")]
for i, record in enumerate(ids):
    entry = ledger.submit(ob.Remove(ids=[record]), request_id=f"k{i}")
    print(f"ack {i} {entry.version}", flush=True)
"""


def _run_writer_and_kill(path: Path, ids: np.ndarray, acks_before_kill: int) -> list[int]:
    """Start a writer, SIGKILL it after ``acks_before_kill`` acknowledgements (bounded)."""
    env = dict(os.environ, PYTHONPATH=str(Path(ob.__file__).parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), ",".join(str(int(i)) for i in ids)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acked: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(acked) < acks_before_kill and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                line = process.stdout.readline()
                if not line:
                    break
                acked.append(int(line.split()[1]))
        # writers spend most of each request inside submit: the kill lands mid-request
        time.sleep(0.005 * acks_before_kill)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    # acknowledgements printed before the kill that we had not read yet
    acked += [int(line.split()[1]) for line in process.stdout.read().splitlines() if line]
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    return acked


@pytest.mark.parametrize("acks_before_kill", [3, pytest.param(7, marks=pytest.mark.slow)])
def test_sigkill_during_submits_loses_nothing_acknowledged(
    tmp_path, retrain_unlearner, binary_data, acks_before_kill
):
    path = tmp_path / "l.db"
    ob.Ledger.create(path, retrain_unlearner)
    ids = binary_data.ids[:12]
    acked = _run_writer_and_kill(path, ids, acks_before_kill)
    assert len(acked) >= acks_before_kill

    ledger = ob.Ledger.open(path)  # recovery
    history = ledger.history()
    applied = [int(e.request_id[1:]) for e in history if e.status == "applied"]
    assert set(acked) <= set(applied)
    assert applied == list(range(len(applied)))  # a prefix, in order, each once
    assert [e.status for e in history if e.status != "applied"] in ([], ["interrupted"])
    assert ledger.version == len(applied)
    current = ledger.unlearner()
    assert not np.isin(ids[: len(applied)], current.train_.ids).any()
    assert np.isin(ids[len(applied) :], current.train_.ids).all()
    assert ledger.verify().ok

    # the client resubmits the whole stream: each request ends up applied exactly once
    for i, record in enumerate(ids):
        ledger.submit(ob.Remove(ids=[record]), request_id=f"k{i}")
    assert ledger.version == len(ids)
    assert sorted(e.version for e in ledger.history() if e.status == "applied") == list(
        range(1, len(ids) + 1)
    )
    assert len(ledger.unlearner().train_) == len(binary_data) - len(ids)
