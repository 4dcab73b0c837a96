"""Certified removal (Guo et al., ICML 2020) on Fashion-MNIST, two classes.

Prints, from one run on one machine:

* test accuracy with and without the loss perturbation b;
* removals supported before a retrain at epsilon in {0.1, 0.5, 1, 2} (delta = 1e-4);
* seconds per removal with ``hessian="amortized"`` and ``hessian="exact"``, seconds per
  retraining from scratch and warm-started, and their ratios;
* the true gradient residual against the accumulated bound after 100 / 500 / 1000 removals.

Usage::

    .venv/bin/python benchmarks/certified_removal.py [--classes 3 8] [--removals 1000]
        [--plot results/certified_budget.png]

The data comes from ``oblivio.datasets.load("fashion-mnist", ...)``; if that loader is not
available, the IDX files under ``/usr/share/datasets/fashion-mnist`` (or ``$OBLIVIO_DATA``)
are read directly (pixels / 255, rows scaled to unit norm).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gzip  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import oblivio as ob  # noqa: E402
from oblivio.audit.metrics import accuracy  # noqa: E402
from oblivio.data import Dataset, Remove, Split  # noqa: E402
from oblivio.models import LogisticRegression  # noqa: E402
from oblivio.unlearners import CertifiedRemoval  # noqa: E402
from oblivio.unlearners.certified import budget  # noqa: E402

torch.set_num_threads(1)
EPSILONS = (0.1, 0.5, 1.0, 2.0)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fallback(classes: list[int]) -> Split:
    root = Path(os.environ.get("OBLIVIO_DATA", "/usr/share/datasets")) / "fashion-mnist"
    parts = []
    for prefix, offset in (("train", 0), ("t10k", 60_000)):
        images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
        labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        keep = np.isin(labels, classes)
        X = images[keep]
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        y = np.searchsorted(np.asarray(classes), labels[keep])
        ids = offset + np.flatnonzero(keep)
        parts.append(Dataset(X=X, y=y, ids=ids, classes=tuple(classes), name="fashion-mnist"))
    return Split(*parts)


def load(classes: list[int]) -> tuple[Split, str]:
    try:
        return ob.datasets.load("fashion-mnist", classes=classes, normalize="l2"), "loader"
    except Exception as error:  # noqa: BLE001 - the loader may not exist yet
        return _fallback(classes), f"IDX fallback ({type(error).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs=2, default=[3, 8])
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--sigma", type=float, default=10.0)
    parser.add_argument("--removals", type=int, default=1000)
    parser.add_argument("--exact-removals", type=int, default=10)
    parser.add_argument("--retrains", type=int, default=6)
    parser.add_argument("--refine", type=int, default=1)
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="save the accumulated bound against the budgets (PNG) here",
    )
    args = parser.parse_args()

    split, source = load(args.classes)
    train, test = split.train, split.test
    print(
        f"Fashion-MNIST {args.classes}: n_train={len(train)}, n_test={len(test)}, "
        f"d={train.n_features} ({source}); l2={args.l2}, sigma={args.sigma}, delta=1e-4"
    )
    model = LogisticRegression(l2=args.l2)

    start = time.perf_counter()
    plain = CertifiedRemoval(model, sigma=0.0).fit(train)
    fit_plain = time.perf_counter() - start
    start = time.perf_counter()
    u = CertifiedRemoval(
        model,
        sigma=args.sigma,
        epsilon=max(EPSILONS),
        seed=args.seed,
        refine=args.refine,
        refresh=args.refresh,
    ).fit(train)
    fit_noisy = time.perf_counter() - start
    print("\n== accuracy ==")
    print(f"test accuracy, b = 0:           {accuracy(plain, test):.4f}  (fit {fit_plain:.2f} s)")
    print(
        f"test accuracy, sigma = {args.sigma:<5g}:   {accuracy(u, test):.4f}  "
        f"(fit + prepare {fit_noisy:.2f} s)"
    )

    # one long sequence of single removals at the largest epsilon (it must not retrain), so
    # that the per-step bounds can be replayed against the smaller budgets afterwards. (The
    # amortised mode's refresh policy depends on the budget only through a floor of 1e-5 of
    # it per step.) The machine is shared, so the baselines are timed *interleaved* with the
    # sequence (same load): the exact mode
    # for the first removals, retraining at evenly spaced points. Retraining is timed as
    # Retrain does it: a clone of the model (same b) fitted on the remaining data, from
    # scratch or warm-started from the current weights.
    order = np.random.default_rng(args.seed).permutation(train.ids)[: args.removals]
    start_model = _trained_copy(model, train, u)  # the model u started from (same b)
    exact = CertifiedRemoval(start_model, sigma=args.sigma, epsilon=1e9, hessian="exact")
    exact.attach(train)
    retrain_at = set(np.linspace(1, len(order), args.retrains).astype(int).tolist())
    beta0 = u.budget_used_
    bounds, seconds, walls, residuals, refreshes = [], [], [], {}, 0
    exact_seconds, exact_bounds, scratch, warm = [], [], [], []
    for t, record in enumerate(order, start=1):
        start = time.perf_counter()
        result = u.forget(Remove(ids=[int(record)]))
        walls.append(time.perf_counter() - start)
        if result.retrained:
            raise SystemExit(f"retrained after {t} removals: use fewer --removals")
        seconds.append(result.seconds)
        bounds.append(result.diagnostics["step_bound"])
        refreshes += int(result.diagnostics["full_refreshes"])
        if t in (1, 100, 500, 1000) or t == len(order):
            residuals[t] = (u.gradient_residual(), u.budget_used_)
        if t <= args.exact_removals:
            result = exact.forget(Remove(ids=[int(record)]))
            exact_seconds.append(result.seconds)
            exact_bounds.append(result.diagnostics["step_bound"])
        if t in retrain_at:
            fresh = LogisticRegression(l2=args.l2, noise=u.model_.noise)
            start = time.perf_counter()
            fresh.fit(u.train_)
            scratch.append(time.perf_counter() - start)
            fresh = LogisticRegression(l2=args.l2, noise=u.model_.noise)
            start = time.perf_counter()
            fresh.fit(u.train_, init=u.model_.theta)
            warm.append(time.perf_counter() - start)
    accumulated = beta0 + np.cumsum(bounds)

    print("\n== removals supported before retraining (single removals, delta = 1e-4) ==")
    for eps in EPSILONS:
        total = budget(eps, 1e-4, args.sigma)
        supported = int(np.searchsorted(accumulated, total, side="right"))
        more = "+" if supported == len(order) else ""
        extrapolated = ""
        if more:
            extrapolated = f" (about {int((total - beta0) / np.mean(bounds))} at the mean bound)"
        print(f"epsilon = {eps:<4g} budget {total:7.4f}: {supported}{more} removals{extrapolated}")
    print(
        f"per-removal bound (amortized): mean {np.mean(bounds):.3g}, "
        f"median {np.median(bounds):.3g}; full factor refreshes: {refreshes} in {len(order)}"
    )

    print("\n== true residual vs accumulated bound ==")
    for t, (true, bound) in residuals.items():
        print(
            f"after {t:5d} removals: true ||grad L_b|| = {true:.3g}   bound = {bound:.3g}"
            f"   ratio {bound / max(true, 1e-300):.0f}x"
        )
    k = len(exact_bounds)
    print(
        f"\nbudget spent by the first {k} removals: exact {sum(exact_bounds):.4g}, "
        f"amortized {sum(bounds[:k]):.4g}"
    )

    amortized = statistics.mean(seconds)
    print("\n== time per removal (seconds, this machine, one thread) ==")
    print(
        f"amortized (mean over {len(seconds)}, incl. refreshes): {amortized:.4g} s"
        f"   median {statistics.median(seconds):.4g} s"
        f"   forget() wall incl. request handling {statistics.mean(walls):.4g} s"
    )
    print(f"exact     (mean over {k}):                {statistics.mean(exact_seconds):.4g} s")
    print(f"retrain from scratch (mean over {len(scratch)}):      {statistics.mean(scratch):.4g} s")
    print(f"retrain warm-started (mean over {len(warm)}):      {statistics.mean(warm):.4g} s")
    print(
        f"ratios: scratch / amortized = {statistics.mean(scratch) / amortized:.1f}x, "
        f"warm / amortized = {statistics.mean(warm) / amortized:.1f}x, "
        f"exact / amortized = {statistics.mean(exact_seconds) / amortized:.1f}x, "
        f"scratch / exact = {statistics.mean(scratch) / statistics.mean(exact_seconds):.2f}x"
        f"; scratch / forget() wall = {statistics.mean(scratch) / statistics.mean(walls):.1f}x"
    )

    if args.plot is not None:
        from oblivio.audit.plots import plot_certificate_budget

        figure = plot_certificate_budget(
            u,
            epsilons=EPSILONS[:-1],
            true_residuals=[(t, true) for t, (true, _) in residuals.items()],
            title=f"Fashion-MNIST {args.classes[0]} vs {args.classes[1]}: certified removal",
        )
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        partial = args.plot.with_name(f".{args.plot.name}.partial.png")
        figure.savefig(partial, dpi=120)
        os.replace(partial, args.plot)
        print(f"\nbudget plot: {args.plot}")

    retrained = LogisticRegression(l2=args.l2, noise=u.model_.noise).fit(u.train_)
    print(
        f"\nafter {len(order)} removals: test accuracy {accuracy(u, test):.4f} "
        f"(retrained on the same data: {accuracy(retrained, test):.4f}); "
        f"||w_unlearned - w_retrained|| = "
        f"{float(torch.linalg.vector_norm(u.model_.theta - retrained.theta)):.3g}"
    )


def _trained_copy(model: LogisticRegression, train: Dataset, u: CertifiedRemoval):
    """The model ``u`` started from (same noise), trained on ``train``."""
    copy = model.clone()
    copy.noise = u.model_.noise
    return copy.fit(train)


if __name__ == "__main__":
    main()
