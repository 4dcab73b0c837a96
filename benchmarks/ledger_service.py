"""Deletion ledger and service: sustained requests per second and overhead over ``forget()``.

Certified removal (Guo et al., ICML 2020) of single records from logistic regression on
Fashion-MNIST 3 vs 8 (n = 12,000, d = 784). From one run on one machine it prints seconds
per request for

* a bare ``forget()`` on an in-memory unlearner (the baseline);
* ``Ledger.submit`` with a snapshot of every version (the default ``prune=True``: the
  previous version is deleted, so no stored version keeps forgotten data);
* ``Ledger.submit`` with a snapshot every ``--checkpoint-every`` versions (``prune=False``:
  older versions keep forgotten data);
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
            print(
                f"Fashion-MNIST is not installed ({error}); install the Debian package "
                "dataset-fashion-mnist. Measuring on digits 3 vs 8 instead."
            )
    split = ob.datasets.load("digits", classes=[3, 8], normalize="l2")
    return split.train, "digits 3 vs 8"


def _fit(train: ob.Dataset) -> ob.unlearners.Unlearner:
    model = ob.models.LogisticRegression(l2=1e-3)
    return ob.unlearners.create("certified", model, epsilon=1.0, sigma=10.0, seed=0).fit(train)


def _ledger(unlearner, ids, folder: Path, **options) -> dict[str, float]:
    """Paired timings: each request is applied by a bare ``forget()`` on a copy of the
    ledger's unlearner, then by ``Ledger.submit``, so both run under the same load."""
    start = time.perf_counter()
    ledger = ob.Ledger.create(folder / "l.db", unlearner, **options)
    created = time.perf_counter() - start
    bare_copy = ledger.unlearner()
    bare, submit, retrains = [], [], 0
    for k, i in enumerate(ids):
        start = time.perf_counter()
        retrains += bare_copy.forget(ob.Remove(ids=[i])).retrained
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        ledger.submit(ob.Remove(ids=[i]), request_id=f"r{k}")
        submit.append(time.perf_counter() - start)
    assert ledger.version == len(ids)
    store = folder / "l.db.models"
    version = next(p for p in store.iterdir() if not p.name.startswith("."))
    return {
        "bare": statistics.median(bare),
        "submit": statistics.median(submit),
        "overhead": statistics.median(s - b for s, b in zip(submit, bare, strict=True)),
        "mean_submit": statistics.mean(submit),
        "created": created,
        "size": sum(f.stat().st_size for f in version.iterdir()),
        "retrains": retrains,
    }


def _snapshot_seconds(unlearner, folder: Path, repeats: int = 3) -> float:
    """Median seconds of one snapshot (``Unlearner.save`` + fsync + hash + rename)."""
    from oblivio.ledger import snapshots

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        name = snapshots.save(unlearner, folder)
        times.append(time.perf_counter() - start)
        snapshots.delete(folder, [name])
    return statistics.median(times)


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
        [
            sys.executable,
            "-m",
            "oblivio.cli",
            "serve",
            str(folder / "l.db"),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
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
        return len(ids) / wall, statistics.median(latencies)
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
    print(
        f"{name}: n = {len(train)}, d = {train.n_features}; certified removal "
        f"(epsilon=1, sigma=10), fit {time.perf_counter() - start:.1f} s; "
        f"{len(ids)} single-record removals per row, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    root = Path(tempfile.mkdtemp(prefix="oblivio-ledger-bench-", dir=args.dir))
    variants = [
        ("snapshot every version, prune", {"prune": True}),
        (
            f"snapshot every {args.checkpoint_every}",
            {"checkpoint_every": args.checkpoint_every, "prune": False},
        ),
    ]
    print(
        f"\nIn process, paired (medians over {len(ids)} requests; overhead = median of "
        "submit - forget per request):"
    )
    print(f"{'':34s} {'forget s':>9s} {'submit s':>9s} {'overhead s':>10s} {'x forget':>8s}")
    try:
        print(f"{'one snapshot alone':34s} {'':9s} {_snapshot_seconds(unlearner, root):9.4f}")
        for label, options in variants:
            folder = root / f"ledger-{label.split()[2]}"
            r = _ledger(unlearner, ids, folder, **options)
            print(
                f"{label:34s} {r['bare']:9.4f} {r['submit']:9.4f} {r['overhead']:10.4f} "
                f"{r['submit'] / r['bare']:8.1f}  (mean submit {r['mean_submit']:.4f} s, "
                f"create {r['created']:.1f} s, one version {r['size'] / 1e6:.1f} MB, "
                f"{r['retrains']} budget retrains)"
            )
            shutil.rmtree(folder)
        if args.no_service:
            return
        print(
            f"\nHTTP service ('oblivio serve' in its own process, {args.clients} clients, "
            f"{len(ids)} requests):"
        )
        for label, options in variants:
            folder = root / f"service-{label.split()[2]}"
            rate, latency = _service(unlearner, ids, folder, args.clients, **options)
            print(
                f"{label:34s} {rate:6.1f} requests/s sustained ({1 / rate:.4f} s/request), "
                f"median latency {latency:.3f} s"
            )
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
