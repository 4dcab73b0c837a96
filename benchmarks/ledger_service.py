"""Deletion ledger and service: sustained requests per second and overhead over ``forget()``.

Certified removal (Guo et al., ICML 2020) of single records from logistic regression on
Fashion-MNIST 3 vs 8 (n = 12,000, d = 784). From one run on one machine it prints seconds
per request for

* a bare ``forget()`` on an in-memory unlearner (the baseline);
* ``Ledger.submit`` with a snapshot of every version (``prune=True``: the previous version
  is deleted, so no stored version keeps forgotten data);
* ``Ledger.submit`` with a snapshot every ``--checkpoint-every`` versions;
* the HTTP service (``oblivio serve`` in its own process) with ``--clients`` concurrent
  clients, over a ledger of either kind: requests per second sustained;

and the overhead per request of each over the bare ``forget()``, plus the size of one
stored version. Needs the extra ``serve`` for the service rows.

Usage::

    .venv/bin/python benchmarks/ledger_service.py [--requests 100] [--clients 4]
        [--checkpoint-every 50] [--dir /tmp] [--dataset digits]

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, or ``$OBLIVIO_DATA``); without it the script says so
and measures on scikit-learn's digits 3 vs 8 instead.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import oblivio as ob  # noqa: E402

torch.set_num_threads(1)


def _data(name: str) -> tuple[ob.Dataset, str]:
    if name == "fashion-mnist":
        try:
            split = ob.datasets.load("fashion-mnist", classes=[3, 8], normalize="l2", flatten=True)
            return split.train, "Fashion-MNIST 3 vs 8"
        except ob.datasets.DataNotFoundError as error:
            print(f"Fashion-MNIST is not installed ({error}); install the Debian package "
                  "dataset-fashion-mnist. Measuring on digits 3 vs 8 instead.")
    split = ob.datasets.load("digits", classes=[3, 8], normalize="l2")
    return split.train, "digits 3 vs 8"


def _fit(train: ob.Dataset) -> ob.unlearners.Unlearner:
    model = ob.models.LogisticRegression(l2=1e-3)
    return ob.unlearners.create("certified", model, epsilon=1.0, sigma=10.0, seed=0).fit(train)


def _bare(unlearner, ids) -> tuple[float, int]:
    u = copy.deepcopy(unlearner)
    start = time.perf_counter()
    retrains = sum(u.forget(ob.Remove(ids=[i])).retrained for i in ids)
    return (time.perf_counter() - start) / len(ids), retrains


def _ledger(unlearner, ids, folder: Path, **options) -> tuple[float, float, int]:
    """(seconds per submit, seconds to create, bytes of one stored version)."""
    start = time.perf_counter()
    ledger = ob.Ledger.create(folder / "l.db", unlearner, **options)
    created = time.perf_counter() - start
    start = time.perf_counter()
    for k, i in enumerate(ids):
        ledger.submit(ob.Remove(ids=[i]), request_id=f"r{k}")
    per = (time.perf_counter() - start) / len(ids)
    store = folder / "l.db.models"
    version = next(p for p in store.iterdir() if not p.name.startswith("."))
    size = sum(f.stat().st_size for f in version.iterdir())
    assert ledger.version == len(ids)
    return per, created, size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service(unlearner, ids, folder: Path, clients: int, **options) -> tuple[float, float]:
    """(requests per second sustained, mean latency) of ``oblivio serve`` in a subprocess."""
    import httpx

    ob.Ledger.create(folder / "l.db", unlearner, **options)
    token, port = secrets.token_urlsafe(32), _free_port()
    env = dict(os.environ, OBLIVIO_TOKEN=token, PYTHONPATH=str(Path(ob.__file__).parents[1]))
    server = subprocess.Popen(
        [sys.executable, "-m", "oblivio.cli", "serve", str(folder / "l.db"), "--port",
         str(port), "--log-level", "warning"], env=env,
    )
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        latencies: list[float] = []
        errors: list[str] = []

        def client(k: int) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as session:
                for n in range(k, len(ids), clients):
                    sent = time.perf_counter()
                    response = session.post(
                        "/v1/requests", json={"request_id": f"s{n}", "remove": [int(ids[n])]}
                    )
                    latencies.append(time.perf_counter() - sent)
                    if response.status_code != 200:
                        errors.append(response.text)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=3600)
        wall = time.perf_counter() - start
        if errors:
            raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
        final = httpx.get(f"{url}/healthz", timeout=30).json()["version"]
        assert final == len(ids), final
        return len(ids) / wall, statistics.mean(latencies)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "digits"))
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--dir", default=None, help="folder for the ledgers (default: temp)")
    parser.add_argument("--no-service", action="store_true", help="skip the HTTP rows")
    args = parser.parse_args()

    train, name = _data(args.dataset)
    ids = [int(i) for i in train.ids[: args.requests]]
    start = time.perf_counter()
    unlearner = _fit(train)
    print(f"{name}: n = {len(train)}, d = {train.n_features}; certified removal "
          f"(epsilon=1, sigma=10), fit {time.perf_counter() - start:.1f} s; "
          f"{len(ids)} single-record removals per row, {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="oblivio-ledger-bench-", dir=args.dir))
    rows: list[tuple[str, float, str]] = []
    try:
        bare, retrains = _bare(unlearner, ids)
        rows.append(("bare forget()", bare, f"{retrains} budget retrains"))
        variants = [("snapshot every version, prune", {"prune": True}),
                    (f"snapshot every {args.checkpoint_every}",
                     {"checkpoint_every": args.checkpoint_every})]
        for label, options in variants:
            folder = root / f"ledger-{len(rows)}"
            per, created, size = _ledger(unlearner, ids, folder, **options)
            rows.append((f"Ledger.submit, {label}", per,
                         f"create {created:.1f} s, one version {size / 1e6:.1f} MB"))
            shutil.rmtree(folder)
        if not args.no_service:
            for label, options in variants:
                folder = root / f"service-{len(rows)}"
                rate, latency = _service(unlearner, ids, folder, args.clients, **options)
                rows.append((f"HTTP service, {label}", 1.0 / rate,
                             f"{rate:.1f} requests/s sustained, {args.clients} clients, "
                             f"mean latency {latency * 1e3:.0f} ms"))
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'':44s} {'s/request':>10s} {'overhead':>10s} {'x forget':>9s}")
    for label, per, note in rows:
        print(f"{label:44s} {per:10.4f} {per - bare:+10.4f} {per / bare:9.1f}  {note}")


if __name__ == "__main__":
    main()
