"""``oblivio serve`` as a real process, killed (SIGKILL) and restarted mid-stream."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import oblivio as ob

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

TOKEN = "process-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _start(path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OBLIVIO_TOKEN=TOKEN, PYTHONPATH=str(Path(ob.__file__).parents[1]))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oblivio.cli",
            "serve",
            str(path),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not start: {process.stderr.read()!r}")
        time.sleep(0.1)


@pytest.mark.slow
def test_server_killed_mid_stream_then_restarted_loses_nothing(tmp_path, binary_data):
    model = ob.models.LogisticRegression(l2=1e-3)
    u = ob.unlearners.create("certified", model, epsilon=1.0, sigma=1.0, seed=0).fit(binary_data)
    path = tmp_path / "l.db"
    ob.Ledger.create(path, u).close()
    ids = [int(i) for i in binary_data.ids[:20]]
    acknowledged: set[int] = set()
    process, url = _start(path)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            for i in range(len(ids)):
                if i == 8:
                    process.send_signal(signal.SIGKILL)  # mid-stream, no warning
                    process.wait(timeout=30)
                    process, url = _start(path)
                    client.base_url = url
                for _ in range(3):  # bounded retries, as a client would
                    try:
                        response = client.post(
                            "/v1/requests", json={"request_id": f"p{i}", "remove": [ids[i]]}
                        )
                    except httpx.TransportError:
                        continue
                    assert response.status_code == 200, response.text
                    acknowledged.add(i)
                    break
            assert client.get("/healthz").json()["version"] == len(ids)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert acknowledged == set(range(len(ids)))
    ledger = ob.Ledger.open(path)
    applied = [e for e in ledger.history() if e.status == "applied"]
    assert sorted(e.version for e in applied) == list(range(1, len(ids) + 1))
    assert not np.isin(ids, ledger.unlearner().train_.ids).any()
    assert ledger.verify().ok
