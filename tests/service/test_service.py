"""The HTTP service against a live uvicorn server on 127.0.0.1 (random port, bounded loops)."""

import socket
import threading
import time

import numpy as np
import pytest

import oblivio as ob

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from oblivio.service import create_app  # noqa: E402
from oblivio.service.app import MAX_BODY_BYTES  # noqa: E402
from oblivio.service.command import read_token  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class LiveServer:
    """uvicorn in a thread on a port the OS picked; started and stopped by the test."""

    def __init__(self, ledger, token=TOKEN):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(ledger, token=token), log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "server did not stop"


@pytest.fixture
def ledger(tmp_path, binary_data):
    model = ob.models.LogisticRegression(l2=1e-3)
    u = ob.unlearners.create("certified", model, epsilon=1.0, sigma=1.0, seed=0).fit(binary_data)
    return ob.Ledger.create(tmp_path / "l.db", u)


def _client(server):
    return httpx.Client(base_url=server.url, timeout=30.0)


def test_health_docs_and_auth_refusals(ledger, binary_data):
    record = int(binary_data.ids[0])
    with LiveServer(ledger) as server, _client(server) as client:
        health = client.get("/healthz").json()
        assert health == {"status": "ok", "method": "certified", "version": 0}
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {
            "/v1/requests",
            "/v1/requests/{request_id}",
            "/v1/records/{record_id}",
            "/v1/predict",
        } <= set(paths)

        body = {"request_id": "x1", "remove": [record]}
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ):
            response = client.post("/v1/requests", json=body, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
        # a bad body with no token is still 401 (auth first), and reads are protected too
        assert client.post("/v1/requests", json={"bad": 1}).status_code == 401
        assert client.get(f"/v1/records/{record}").status_code == 401
        assert client.get("/v1/requests/x1").status_code == 401
        assert client.post("/v1/predict", json={"rows": [[0.0] * 64]}).status_code == 401
    assert ledger.version == 0 and ledger.history() == []
    assert ledger.status(record).state == "present"


def test_bad_input_is_4xx_with_the_request_error_text(ledger, binary_data):
    ids = [int(i) for i in binary_data.ids[:2]]
    with LiveServer(ledger) as server, _client(server) as client:
        response = client.post(
            "/v1/requests", json={"request_id": "u", "remove": [999999]}, headers=AUTH
        )
        assert response.status_code == 400
        assert "unknown ids" in response.json()["detail"] and "999999" in response.json()["detail"]
        rejected = client.get("/v1/requests/u", headers=AUTH).json()
        assert rejected["status"] == "rejected" and "999999" in rejected["error"]

        response = client.post(
            "/v1/requests",
            headers=AUTH,
            json={"request_id": "l", "relabel": {"ids": ids[:1], "labels": [5]}},
        )
        assert response.status_code == 400 and "labels outside" in response.json()["detail"]
        response = client.post(
            "/v1/requests",
            headers=AUTH,
            json={
                "request_id": "two",
                "remove": ids[:1],
                "relabel": {"ids": ids[:1], "labels": [1]},
            },
        )
        assert response.status_code == 400 and "exactly one" in response.json()["detail"]
        for bad in (
            {"request_id": "s", "remove": ["abc"]},
            {"request_id": "a b", "remove": [1]},
            {"remove": [1]},
            {"request_id": "e", "remove": [1], "extra": 1},
        ):
            assert client.post("/v1/requests", json=bad, headers=AUTH).status_code == 422, bad
        assert client.get("/v1/requests/nothing", headers=AUTH).status_code == 404
        assert client.get("/v1/records/abc", headers=AUTH).status_code == 422

        ok = client.post("/v1/requests", json={"request_id": "ok", "remove": ids[:1]}, headers=AUTH)
        assert ok.status_code == 200 and ok.json()["version"] == 1
        conflict = client.post(
            "/v1/requests", json={"request_id": "ok", "remove": ids[1:]}, headers=AUTH
        )
        assert conflict.status_code == 409 and "already used" in conflict.json()["detail"]

        predict = client.post("/v1/predict", json={"rows": [[0.1] * 3]}, headers=AUTH)
        assert predict.status_code == 400 and "64 features" in predict.json()["detail"]
        big = client.post("/v1/predict", headers=AUTH, content=b" " * (MAX_BODY_BYTES + 1))
        assert big.status_code == 413
        unsized = client.post("/v1/predict", headers=AUTH, content=iter([b"{}"]))
        assert unsized.status_code == 411
    assert ledger.version == 1
    assert [e.status for e in ledger.history()] == ["rejected", "rejected", "applied"]


def test_concurrent_clients_each_request_applied_once_in_one_order(ledger, binary_data):
    ids = [int(i) for i in binary_data.ids[:16]]
    errors = []

    def client_loop(server, k):
        try:
            with _client(server) as client:
                for i in range(k, len(ids), 4):
                    for _ in range(2):  # a retry of the same request id applies nothing
                        response = client.post(
                            "/v1/requests",
                            headers=AUTH,
                            json={"request_id": f"c{i}", "remove": [ids[i]]},
                        )
                        assert response.status_code == 200, response.text
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    with LiveServer(ledger) as server:
        threads = [threading.Thread(target=client_loop, args=(server, k)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads) and not errors, errors
        with _client(server) as client:
            assert client.get("/healthz").json()["version"] == len(ids)
            statuses = [client.get(f"/v1/records/{i}", headers=AUTH).json() for i in ids]
    assert all(s["state"] == "forgotten" for s in statuses)
    history = ledger.history()
    assert len(history) == len(ids)
    assert [e.version for e in history] == list(range(1, len(ids) + 1))  # arrival = version
    assert sorted(int(e.request_id[1:]) for e in history) == list(range(len(ids)))
    assert not np.isin(ids, ledger.unlearner().train_.ids).any()
    assert ledger.verify().ok


def test_restart_mid_stream_loses_nothing(ledger, binary_data, tmp_path):
    ids = [int(i) for i in binary_data.ids[:10]]
    x = np.asarray(binary_data.X[:3]).reshape(3, -1).tolist()

    def send(client, i):
        response = client.post(
            "/v1/requests", headers=AUTH, json={"request_id": f"s{i}", "remove": [ids[i]]}
        )
        assert response.status_code == 200, response.text
        return response.json()

    with LiveServer(ledger) as server, _client(server) as client:
        before = client.post("/v1/predict", json={"rows": x}, headers=AUTH).json()
        for i in range(5):
            send(client, i)
    # a new process would open the ledger afresh: do the same, on a new port
    reopened = ob.Ledger.open(tmp_path / "l.db")
    with LiveServer(reopened) as server, _client(server) as client:
        assert client.get("/healthz").json()["version"] == 5
        assert send(client, 4)["version"] == 5  # a client retrying after the restart
        for i in range(5, 10):
            assert send(client, i)["version"] == i + 1
        after = client.post("/v1/predict", json={"rows": x}, headers=AUTH).json()
        entry = client.get("/v1/requests/s7", headers=AUTH).json()
    assert before["version"] == 0 and after["version"] == 10
    assert np.asarray(after["probabilities"]).shape == (3, 2)
    assert before["probabilities"] != after["probabilities"]
    assert entry["status"] == "applied" and entry["guarantee"].startswith("certified")
    history = reopened.history()
    assert [e.request_id for e in history] == [f"s{i}" for i in range(10)]
    assert [e.version for e in history] == list(range(1, 11))
    assert reopened.verify().ok


def test_serve_refuses_to_start_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("OBLIVIO_TOKEN", raising=False)
    with pytest.raises(ValueError, match="refusing to start without a bearer token"):
        read_token(None, insecure=False, host="127.0.0.1")
    with pytest.raises(ValueError, match="only allowed on 127.0.0.1"):
        read_token(None, insecure=True, host="0.0.0.0")
    assert read_token(None, insecure=True, host="127.0.0.1") is None
    monkeypatch.setenv("OBLIVIO_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16"):
        read_token(None, insecure=False, host="0.0.0.0")
    monkeypatch.setenv("OBLIVIO_TOKEN", TOKEN)
    assert read_token(None, insecure=False, host="0.0.0.0") == TOKEN
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789abcdef\n")
    token_file.chmod(0o600)
    assert read_token(str(token_file), insecure=False, host="0.0.0.0") == (
        "file-token-0123456789abcdef"
    )
