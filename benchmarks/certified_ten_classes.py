"""Certified removal on all ten classes of Fashion-MNIST (one-vs-rest), and batch modes.

Prints, from one run on one machine (wall-clock and CPU seconds; the machine may be
shared, CPU seconds are the fairer comparison then):

* fit: ``CertifiedRemoval.fit`` (training to the exact optimum plus the cached Hessians)
  against scikit-learn's one-vs-rest ``LogisticRegression`` (lbfgs, same objective,
  ``C = 1 / (l2 n)``, no intercept) at its default tolerance and a tight one, each with the
  gradient norm it reached in the sum convention (ours stops at ``||grad L_b|| <= 1e-8``);
* time per single removal, retraining from scratch and warm-started (``LogisticRegression.
  fit``) and the certified fit (the retraining the unlearner itself runs), and the ratios;
* the true gradient residual against the accumulated bound (the certificate is rigorous);
* batch modes: for batches of ``m`` records, ``batch="sequential"``, ``"joint"`` and
  ``"auto"``: seconds and budget spent per batch;
* peak resident memory.

Usage::

    .venv/bin/python benchmarks/certified_ten_classes.py [--removals 30] [--n 60000]
        [--batches 10 50] [--threads 1] [--sk-tol 1e-4 1e-8]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import oblivio as ob  # noqa: E402
from oblivio.audit.metrics import accuracy  # noqa: E402
from oblivio.data import Remove  # noqa: E402
from oblivio.models import LogisticRegression  # noqa: E402
from oblivio.unlearners import CertifiedRemoval  # noqa: E402

torch.set_num_threads(1)


def timed(function):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000, help="training rows (all: 60000)")
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--sigma", type=float, default=10.0)
    parser.add_argument("--removals", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="*", default=[10, 50])
    parser.add_argument("--threads", type=int, default=1, help="n_jobs of the per-step pass")
    parser.add_argument("--root", default=None, help="Fashion-MNIST folder (else the default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sk-tol",
        type=float,
        nargs="*",
        default=[1e-4, 1e-8],
        help="scikit-learn tolerances to compare with (its default is 1e-4)",
    )
    args = parser.parse_args()

    split = ob.datasets.load("fashion-mnist", root=args.root, normalize="l2")
    train, test = split.train, split.test
    if args.n < len(train):
        train = train.take(np.random.default_rng(args.seed).permutation(len(train))[: args.n])
    n, d = len(train), train.n_features
    print(
        f"Fashion-MNIST, {train.n_classes} classes one-vs-rest: n={n}, d={d}, l2={args.l2}, "
        f"sigma={args.sigma}, delta=1e-4, threads={args.threads}"
    )

    model = LogisticRegression(l2=args.l2, multi_class="ovr")
    u = CertifiedRemoval(model, sigma=args.sigma, epsilon=1.0, seed=args.seed, n_jobs=args.threads)
    _, fit_wall, fit_cpu = timed(lambda: u.fit(train))

    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.multiclass import OneVsRestClassifier

    flat = train.X.reshape(n, -1)
    signs = np.where(train.y[:, None] == np.arange(train.n_classes)[None, :], 1.0, -1.0)

    def grad_norm(W: np.ndarray, noise: np.ndarray | None) -> float:
        """||grad L(W)|| of the sum-convention objective (with ``b`` when given)."""
        margins = flat @ W.T
        grad = (flat.T @ (-signs / (1.0 + np.exp(signs * margins)))).T + args.l2 * n * W
        return float(np.linalg.norm(grad if noise is None else grad + noise.reshape(W.shape)))

    ours_grad = grad_norm(u.model_.coef_, u.model_.noise)
    print("\n== fit (one-vs-rest, no intercept, the same objective up to b; CPU s) ==")
    print(
        f"oblivio certified fit (to ||grad L_b|| <= tol = {u.model_.tol:g}, + K cached "
        f"Hessians): {fit_wall:7.2f} s wall, {fit_cpu:7.2f} s CPU; ||grad|| {ours_grad:.2g}; "
        f"test accuracy {accuracy(u, test):.4f}"
    )
    for tol in args.sk_tol:
        sk = OneVsRestClassifier(
            SkLogistic(C=1.0 / (args.l2 * n), max_iter=10_000, tol=tol, fit_intercept=False)
        )
        _, sk_wall, sk_cpu = timed(lambda sk=sk: sk.fit(flat, train.y))
        W = np.vstack([estimator.coef_ for estimator in sk.estimators_])
        sk_acc = float(np.mean(sk.predict(test.X.reshape(len(test), -1)) == test.y))
        print(
            f"scikit-learn OvR lbfgs, tol {tol:g} (its max |grad| of the mean objective): "
            f"{sk_wall:7.2f} s wall, {sk_cpu:7.2f} s CPU; ||grad L|| (sum convention) "
            f"{grad_norm(W, None):.2g}; test accuracy {sk_acc:.4f}; ratio sklearn / oblivio "
            f"{sk_wall / fit_wall:.2f}x wall, {sk_cpu / fit_cpu:.2f}x CPU"
        )

    order = np.random.default_rng(args.seed + 1).permutation(train.ids)
    walls, cpus, bounds = [], [], []
    for record in order[: args.removals]:
        result, wall, cpu = timed(lambda r=record: u.forget(Remove(ids=[int(r)])))
        if result.retrained:
            raise SystemExit("retrained: use fewer --removals")
        walls.append(result.seconds)
        cpus.append(cpu)
        bounds.append(result.diagnostics["step_bound"])
    true = u.gradient_residual()
    noise = u.model_.noise
    _, scratch_wall, scratch_cpu = timed(
        lambda: LogisticRegression(l2=args.l2, multi_class="ovr", noise=noise).fit(u.train_)
    )
    _, warm_wall, warm_cpu = timed(
        lambda: LogisticRegression(l2=args.l2, multi_class="ovr", noise=noise).fit(
            u.train_, init=u.model_.theta
        )
    )
    per_wall, per_cpu = statistics.median(walls), statistics.median(cpus)
    print(f"\n== single removals ({len(walls)}) ==")
    print(
        f"per removal: median {1e3 * per_wall:.1f} ms wall (mean {1e3 * np.mean(walls):.1f}), "
        f"median {1e3 * per_cpu:.1f} ms CPU (mean {1e3 * np.mean(cpus):.1f})"
    )
    print(
        f"retrain from scratch: {scratch_wall:.2f} s wall, {scratch_cpu:.2f} s CPU; "
        f"warm-started: {warm_wall:.2f} s wall, {warm_cpu:.2f} s CPU"
    )
    print(
        f"ratios (median removal): scratch {scratch_wall / per_wall:.0f}x wall, "
        f"{scratch_cpu / per_cpu:.0f}x CPU; warm {warm_wall / per_wall:.0f}x wall, "
        f"{warm_cpu / per_cpu:.0f}x CPU; against the certified fit (the retraining "
        f"CertifiedRemoval runs when its budget is spent) {fit_wall / per_wall:.0f}x wall, "
        f"{fit_cpu / per_cpu:.0f}x CPU"
    )
    print(
        f"bound per removal: mean {np.mean(bounds):.3g}; after {len(walls)} removals true "
        f"residual {true:.3g} <= accumulated bound {u.budget_used_:.3g} "
        f"(budget {u.budget_total:.3g})"
    )

    if args.batches:
        print("\n== batch modes (one request of m records, from the same state) ==")
        print(
            f"{'m':>4} {'mode':>10} {'steps':>5} {'wall s':>8} {'CPU s':>8} {'budget':>10}"
            f" {'budget/record':>13}"
        )
    offset = args.removals
    for m in args.batches:
        ids = order[offset : offset + m]
        offset += m
        for mode in ("sequential", "joint", "auto"):
            trial = copy.deepcopy(u)
            trial.batch = mode
            result, wall, cpu = timed(lambda t=trial, i=ids: t.forget(Remove(ids=i.tolist())))
            spent = result.diagnostics["step_bound"]
            print(
                f"{m:>4} {mode:>10} {int(result.diagnostics['steps']):>5} {wall:>8.3f} "
                f"{cpu:>8.3f} {spent:>10.4g} {spent / m:>13.4g}"
                + ("  (retrained)" if result.retrained else "")
            )
            del trial
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak resident memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
