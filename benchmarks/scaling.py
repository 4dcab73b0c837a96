"""How certified removal scales with n: dense (d = 784) and hashed sparse (d = 2^18) data.

For each kind and each n (default 1e4, 1e5, 1e6) a child process generates synthetic
logistic-regression data in blocks (dense: float32, written to a memory-mapped file in
``--workdir`` and read out of core; sparse: CSR with about 32 hashed features per row),
then measures, on one thread:

* fit: ``CertifiedRemoval.fit`` (exact optimum of the loss-perturbed objective, plus the
  cached Hessian for dense data; matrix-free CG mode for sparse data);
* time per single removal (median of ``--removals``);
* retraining from scratch and warm-started (``LogisticRegression.fit`` with the same noise);
* peak resident memory of the child (file-backed pages of the mapped data included).

It prints a table with the ratios retraining / removal, the fitted exponent of n for each
time (slope of log time on log n), and the physical limit of one pass over ``X`` (bytes of
``X`` the per-step pass reads, at the memory bandwidth measured here by streaming a 512 MB
array) with the fraction of it a removal reaches. ``--plot`` draws the times against n.

Usage::

    .venv/bin/python benchmarks/scaling.py [--sizes 10000 100000 1000000]
        [--kinds dense sparse] [--removals 5] [--workdir /tmp] [--plot scaling.png]
        [--out scaling.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

DENSE_D = 784
SPARSE_D = 2**18
PER_ROW = 32  # hashed features per sparse row (before duplicates merge)
BLOCK = 50_000


def _labels(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    return (rng.random(logits.size) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)


def dense_blocks(n: int, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(DENSE_D).astype(np.float32)
    for start in range(0, n, BLOCK):
        rows = min(BLOCK, n - start)
        X = rng.standard_normal((rows, DENSE_D), dtype=np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        yield X, _labels(rng, 3.0 * (X @ w))


def sparse_matrix(n: int, seed: int):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    w = rng.standard_normal(SPARSE_D)
    parts, labels = [], []
    for start in range(0, n, BLOCK):
        rows = min(BLOCK, n - start)
        # Zipf-distributed tokens hashed into 2^18 buckets, term counts as values
        cols = (rng.zipf(1.2, size=rows * PER_ROW) * 2654435761) % SPARSE_D
        indptr = np.arange(0, rows * PER_ROW + 1, PER_ROW)
        X = sp.csr_matrix((np.ones(rows * PER_ROW), cols, indptr), shape=(rows, SPARSE_D))
        X.sum_duplicates()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        X = sp.diags(1.0 / norms) @ X
        parts.append(X.tocsr())
        labels.append(_labels(rng, 3.0 * (X @ w)))
    return sp.vstack(parts, format="csr"), np.concatenate(labels)


def bandwidth() -> float:
    """Bytes per second streamed by a reduction over a 512 MB float32 array (best of 3)."""
    array = np.ones(2**27, dtype=np.float32)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        float(np.add.reduce(array))
        best = min(best, time.perf_counter() - start)
    return array.nbytes / best


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_one(kind: str, n: int, removals: int, workdir: Path, seed: int) -> dict:
    """One (kind, n) cell, in its own process (so that its peak memory is its own)."""
    import torch

    from oblivio.data import Dataset, Remove
    from oblivio.data.blocked import memmap_dataset
    from oblivio.models import LogisticRegression
    from oblivio.unlearners import CertifiedRemoval

    torch.set_num_threads(1)
    l2 = 1e-4
    path = None
    if kind == "dense":
        path = workdir / f"oblivio-scaling-{os.getpid()}-{n}.npy"
        train = memmap_dataset(path, dense_blocks(n, seed), n, DENSE_D, name="dense")
        pass_bytes = n * DENSE_D * 4  # the float32 rows the per-step pass reads
    else:
        X, y = sparse_matrix(n, seed)
        train = Dataset(X=X, y=y, name="sparse")
        pass_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    try:
        model = LogisticRegression(l2=l2)
        u = CertifiedRemoval(model, sigma=1.0, epsilon=1.0, seed=seed)
        _, fit_wall, fit_cpu = timed(lambda: u.fit(train))
        order = np.random.default_rng(seed + 1).permutation(train.ids)[:removals]
        walls, cpus, iterations, retrained = [], [], [], False
        for record in order:
            result, _, cpu = timed(lambda r=record: u.forget(Remove(ids=[int(r)])))
            walls.append(result.seconds)
            cpus.append(cpu)
            iterations.append(result.diagnostics["solver_iterations"])
            retrained |= result.retrained
        noise = u.model_.noise
        _, scratch_wall, scratch_cpu = timed(
            lambda: LogisticRegression(l2=l2, noise=noise).fit(u.train_)
        )
        _, warm_wall, warm_cpu = timed(
            lambda: LogisticRegression(l2=l2, noise=noise).fit(u.train_, init=u.model_.theta)
        )
        return {
            "kind": kind,
            "n": n,
            "d": int(train.n_features),
            "fit_wall": fit_wall,
            "fit_cpu": fit_cpu,
            "removal_wall": statistics.median(walls),
            "removal_cpu": statistics.median(cpus),
            "solver_iterations": float(np.mean(iterations)),
            "scratch_wall": scratch_wall,
            "scratch_cpu": scratch_cpu,
            "warm_wall": warm_wall,
            "warm_cpu": warm_cpu,
            "budget_used": float(u.budget_used_),
            "budget_total": float(u.budget_total),
            "retrained": retrained,
            "pass_bytes": int(pass_bytes),
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
    finally:
        if path is not None and path.exists():
            path.unlink()  # the file this process wrote


def exponent(ns: list[int], times: list[float]) -> float:
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(times), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument(
        "--kinds", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse"]
    )
    parser.add_argument("--removals", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = run_one(args.one[0], int(float(args.one[1])), args.removals, args.workdir, args.seed)
        print(json.dumps(row))
        return

    speed = bandwidth()
    print(f"memory bandwidth (streaming reduction, one thread): {speed / 1e9:.2f} GB/s")
    rows = []
    started = time.perf_counter()
    for kind in args.kinds:
        for size in args.sizes:
            command = [
                sys.executable,
                __file__,
                "--one",
                kind,
                str(int(size)),
                "--removals",
                str(args.removals),
                "--workdir",
                str(args.workdir),
                "--seed",
                str(args.seed),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{kind} n={int(size)} failed:\n{done.stderr[-2000:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["limit"] = row["pass_bytes"] / speed
            rows.append(row)
            print(
                f"  {kind:6s} n={row['n']:>8d} done ({time.perf_counter() - started:.0f} s so far)",
                flush=True,
            )

    print(
        "\n| kind | n | fit s | removal ms (CPU ms) | scratch s | warm s | scratch/removal |"
        " warm/removal | pass limit ms | fraction of limit | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['n']} | {r['fit_wall']:.1f} | {1e3 * r['removal_wall']:.1f} "
            f"({1e3 * r['removal_cpu']:.1f}) | {r['scratch_wall']:.1f} | {r['warm_wall']:.1f} "
            f"| {r['scratch_wall'] / r['removal_wall']:.0f}x "
            f"| {r['warm_wall'] / r['removal_wall']:.0f}x | {1e3 * r['limit']:.1f} "
            f"| {r['limit'] / r['removal_wall']:.2f} | {r['peak_gib']:.2f} |"
        )
    print("\nfitted exponent of n (time ~ n^k):")
    for kind in args.kinds:
        cell = [r for r in rows if r["kind"] == kind]
        ns = [r["n"] for r in cell]
        if len(ns) < 2:
            continue
        parts = ", ".join(
            f"{key} {exponent(ns, [r[key + '_wall'] for r in cell]):.2f}"
            for key in ("fit", "removal", "scratch", "warm")
        )
        print(f"  {kind}: {parts}")
    if args.out is not None:
        from oblivio._io import write_json

        write_json(args.out, {"bandwidth": speed, "rows": rows})
    if args.plot is not None and rows:
        plot(rows, args.kinds, args.plot)
        print(f"\nplot: {args.plot}")


def plot(rows: list[dict], kinds: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=False):
        cell = [r for r in rows if r["kind"] == kind]
        ns = [r["n"] for r in cell]
        for key, label in (
            ("fit_wall", "fit"),
            ("scratch_wall", "retrain (scratch)"),
            ("warm_wall", "retrain (warm)"),
            ("removal_wall", "removal"),
            ("limit", "one pass at bandwidth"),
        ):
            axis.loglog(ns, [r[key] for r in cell], marker="o", label=label)
        axis.set_title(f"{kind}, d = {cell[0]['d'] if cell else '?'}")
        axis.set_xlabel("n (records)")
        axis.set_ylabel("seconds")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial, dpi=120)
    os.replace(partial, path)


if __name__ == "__main__":
    main()
