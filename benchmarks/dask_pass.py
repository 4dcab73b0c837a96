"""The certified-removal pass over X split by row blocks: Dask workers (processes) vs serial.

Starts a ``distributed.LocalCluster`` with 1 and then 2 single-threaded worker processes,
scatters the rows of a synthetic float32 ``X`` once (contiguous row ranges), and times the
pass (``A = X s^T``, ``G = X^T (w * A)``) against the serial in-process pass and against
2 threads. Prints the speed-up of 2 workers over 1. The rows stay on the workers between
passes, so each pass ships only ``s`` (K x d) and the weights (n x K).

Usage::

    .venv/bin/python benchmarks/dask_pass.py [--n 200000] [--d 784] [--k 10] [--repeats 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from oblivio.unlearners._passes import DaskRowPass, fused_pass, thread_pool  # noqa: E402

torch.set_num_threads(1)


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import distributed

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d), dtype=np.float32)
    s = rng.standard_normal((args.k, args.d))
    w = rng.random((args.n, args.k)).astype(np.float32)
    print(
        f"X: {args.n} x {args.d} float32 ({X.nbytes / 2**20:.0f} MiB), K = {args.k}; "
        f"median of {args.repeats} passes, os.cpu_count() = {os.cpu_count()}"
    )
    serial = best_of(args.repeats, lambda: fused_pass(X, s, w))
    threads = best_of(args.repeats, lambda: fused_pass(X, s, w, workers=thread_pool(2), parts=2))
    print(f"serial, in process:  {1e3 * serial:8.1f} ms")
    print(f"2 threads:           {1e3 * threads:8.1f} ms  ({serial / threads:.2f}x)")
    timings = {}
    for workers in (1, 2):
        with (
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            split = DaskRowPass(client, X)
            split(s, w)  # warm up (imports on the workers)
            timings[workers] = best_of(args.repeats, lambda split=split: split(s, w))
        print(f"dask, {workers} worker(s):    {1e3 * timings[workers]:8.1f} ms")
    print(
        f"speed-up 2 workers / 1 worker: {timings[1] / timings[2]:.2f}x; "
        f"2 workers vs serial: {serial / timings[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
