"""Small ledgers on digits 3 vs 8 (n = 268): every request takes milliseconds."""

import threading

import pytest

import oblivio as ob


@pytest.fixture
def retrain_unlearner(binary_data):
    return ob.unlearners.create("retrain", ob.models.LogisticRegression(l2=1e-3)).fit(binary_data)


@pytest.fixture
def certified_unlearner(binary_data):
    model = ob.models.LogisticRegression(l2=1e-3)
    return ob.unlearners.create("certified", model, epsilon=1.0, sigma=1.0, seed=0).fit(binary_data)


@pytest.fixture
def submit_concurrently():
    """Run 4 client threads over two ledger handles (two processes sharing a store): client
    ``k`` submits ids ``k, k + 4, ...`` one record per request (request id ``q<i>``),
    ``repeats`` times each; fails on any client's error or a thread still alive after 60 s."""

    def run(handles, ids, repeats=1):
        errors = []

        def client(k):
            try:
                for i in range(k, len(ids), 4):
                    for _ in range(repeats):
                        handles[k % 2].submit(ob.Remove(ids=ids[i : i + 1]), request_id=f"q{i}")
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors and not any(t.is_alive() for t in threads)

    return run
