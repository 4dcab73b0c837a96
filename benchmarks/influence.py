"""Influence unlearning of features and labels (Warnecke et al., NDSS 2023): quality and speed.

Two protocols of the paper, each against exact retraining measured in the same run:

* **feature unlearning** -- zero ``k`` feature columns (k = 10 / 50 / 100 by default) chosen
  as the most frequent of the data set's sensitive columns (Drebin: the URL features of
  ``relevant_features.txt``; Adult: its sensitive one-hot columns, so ``k`` is capped at 15;
  Fashion-MNIST: the most frequently non-zero pixels), in training and test data;
* **label repair** -- train on data with 1 % / 5 % / 10 % of the labels flipped, then
  ``Relabel`` them back (the oracle is the model trained on the clean labels).

Methods: ``none`` (keep the model), ``finetune`` (one epoch over the edited data: SGD with
step ``1 / lambda_max`` for logistic regression, the model's own optimiser for the MLP),
``first`` (``FirstOrder``, ``tau="auto"``), ``second`` (``SecondOrder``: Cholesky for logistic
regression; for the MLP conjugate gradients with damping on the whole network, and a dense
solve restricted to the last layer, ``second-head``), ``retrain`` (from scratch) and
``warm`` (retraining warm-started from the current parameters). Columns: test accuracy, the
gradient residual ``||grad L(theta; D~)||`` on the edited training set, the distance to the
retrained parameters (for the MLP also the test-prediction agreement with the retrained
network, since retraining a network lands in a different basin), seconds of the ``forget``
call, and the speed-up over retraining and warm-started retraining.

Usage::

    .venv/bin/python benchmarks/influence.py                       # drebin, adult, fmnist
    .venv/bin/python benchmarks/influence.py --datasets drebin --features 10 50 100

Data: ``/work/shared/data/{drebin,adult}`` (or ``--root``), Fashion-MNIST through
``oblivio.datasets.load("fashion-mnist")``. Times are wall-clock on this machine with one
thread; ``lambda_max`` estimation at ``attach`` is reported separately (``prepare``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import oblivio as ob  # noqa: E402
from oblivio.audit.metrics import accuracy, agreement, gradient_residual  # noqa: E402
from oblivio.data import Dataset, Relabel, ReplaceFeatures  # noqa: E402
from oblivio.models import MLP, LogisticRegression, TorchModel  # noqa: E402
from oblivio.unlearners import FirstOrder, Retrain, SecondOrder  # noqa: E402

torch.set_num_threads(1)

SHARED = Path("/work/shared/data")


# -- data ------------------------------------------------------------------------------------
def load_linear(name: str, root: Path):
    if name == "drebin":
        split = ob.datasets.load("drebin", root=root / "drebin", normalize="l2")
        sensitive = (root / "drebin" / "relevant_features.txt").read_text().split()
        return split, sensitive, 1.0 / len(split.train)  # lambda = 1 in Warnecke's convention
    split = ob.datasets.load("adult", root=root / "adult", standardize_numeric=True, normalize="l2")
    sensitive = (root / "adult" / "relevant_features.txt").read_text().split()
    return split, sensitive, 1e-4


def most_frequent(train: Dataset, candidates: list[int], k: int) -> list[int]:
    counts = np.asarray((train.X[:, candidates] != 0).sum(axis=0)).ravel()
    order = np.argsort(-counts, kind="stable")
    return [candidates[i] for i in order[:k]]


def zero_columns(data: Dataset, columns: list[int]) -> Dataset:
    request = ReplaceFeatures(features=columns, ids=data.ids)
    return request.resolve(data).result


def flip_labels(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(train.ids, size=max(1, int(fraction * len(train))), replace=False))
    k = train.n_classes
    wrong = (k - 1) - train.select(ids).y  # binary: 1 - y; ten classes: the pairs s <-> 9 - s
    return train.update(ids, y=wrong), ids


# -- methods -----------------------------------------------------------------------------------
def finetune_lr(model: LogisticRegression, data: Dataset, step: float, seed: int = 0):
    """One epoch of mini-batch SGD on the mean objective, step ``1 / lambda_max``."""
    theta = model.theta.numpy().copy()
    n = len(data)
    order = np.random.default_rng(seed).permutation(n)
    for start in range(0, n, 256):
        batch = data.take(np.sort(order[start : start + 256]))
        gradient = model.grad(batch, theta).numpy() / len(batch) + model.l2 * theta
        theta = theta - step * gradient
    tuned = copy.deepcopy(model)
    tuned.theta = theta
    return tuned


def flat(model) -> torch.Tensor:
    module = getattr(model, "module_", None)
    if module is None:
        return model.theta.double()
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).double()


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


# -- one scenario ----------------------------------------------------------------------------
def run_scenario(label, kind, model, train, change, request, test, extra_methods, rows):
    """Run every method on one request; append printable rows."""
    results = {}
    retrain = Retrain(model).attach(train)
    retrain_result = retrain.forget(request)
    results["retrain"] = (retrain.model_, retrain_result.seconds)
    warm = Retrain(model, warm_start=True).attach(train)
    warm_seconds = warm.forget(request).seconds  # before reading model_: forget replaces it
    results["warm"] = (warm.model_, warm_seconds)
    results["none"] = (model, 0.0)
    for name, method in extra_methods.items():
        results[name] = method(model, train, change, request)
    reference = results["retrain"][0]
    base_seconds = results["retrain"][1]
    for name in ("none", *extra_methods, "warm", "retrain"):
        fitted, seconds = results[name]
        row = {
            "scenario": label,
            "m": len(change),
            "method": name,
            "test_acc": accuracy(fitted, test),
            "residual": gradient_residual(fitted, change.result),
            "dist": float(torch.linalg.vector_norm(flat(fitted) - flat(reference))),
            "agree": agreement(fitted, reference, test.X),
            "seconds": seconds,
            "speedup": base_seconds / seconds if seconds > 0 else np.inf,
            "speedup_warm": warm_seconds / seconds if seconds > 0 else np.inf,
        }
        if name in ("none",):
            row["speedup"] = row["speedup_warm"] = np.nan
        rows.append(row)


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n== {title}")
    header = (
        f"{'scenario':<14}{'m':>7} {'method':<12}{'test acc':>9}{'residual':>11}"
        f"{'dist':>10}{'agree':>7}{'seconds':>9}{'x retrain':>10}{'x warm':>8}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for row in rows:
        if last is not None and row["scenario"] != last:
            print()
        last = row["scenario"]
        print(
            f"{row['scenario']:<14}{row['m']:>7} {row['method']:<12}{row['test_acc']:>9.4f}"
            f"{row['residual']:>11.4g}{row['dist']:>10.4g}{row['agree']:>7.3f}"
            f"{row['seconds']:>9.3f}{row['speedup']:>10.1f}{row['speedup_warm']:>8.1f}"
        )


# -- logistic regression -----------------------------------------------------------------
def linear_benchmark(name: str, args) -> None:
    (split, sensitive, l2), load_s = timed(lambda: load_linear(name, Path(args.root)))
    train, test = split.train, split.test
    names = list(train.feature_names)
    candidates = [names.index(f) for f in sensitive if f in names]
    template = LogisticRegression(l2=l2)
    model, fit_s = timed(lambda: template.clone().fit(train))
    majority = max(np.mean(test.y), 1 - np.mean(test.y))
    print(
        f"\n#### {name}: {len(train)} x {train.n_features} "
        f"({'sparse' if train.is_sparse else 'dense'}), l2={l2:.3g}, fit {fit_s:.2f} s, "
        f"test accuracy {accuracy(model, test):.4f} (majority {majority:.4f})"
    )

    prepared = {}

    def first(model, train, change, request):
        unlearner = FirstOrder(model, residual_records=0).attach(train)
        prepared["first"] = unlearner.prepare_seconds_
        prepared["lambda_max"] = unlearner.lambda_max_
        result = unlearner.forget(request)
        return unlearner.model_, result.seconds

    def second(model, train, change, request):
        unlearner = SecondOrder(model, residual_records=0).attach(train)
        result = unlearner.forget(request)
        return unlearner.model_, result.seconds

    def finetune(model, train, change, request):
        step = 1.0 / prepared["lambda_max"]
        return timed(lambda: finetune_lr(model, change.result, step))

    methods = {"first": first, "finetune": finetune, "second": second}
    rows: list[dict] = []
    for k in sorted({min(k, len(candidates)) for k in args.features}):
        columns = most_frequent(train, candidates, k)
        request = ReplaceFeatures(features=columns)
        change = request.resolve(train)
        run_scenario(
            f"features k={len(columns)}",
            "linear",
            model,
            train,
            change,
            request,
            zero_columns(test, columns),
            methods,
            rows,
        )
    print_rows(f"{name}: feature unlearning (prepare lambda_max {prepared['first']:.3f} s)", rows)
    rows = []
    for fraction in args.flips:
        poisoned, ids = flip_labels(train, fraction, args.seed)
        poisoned_model = template.clone().fit(poisoned)
        request = Relabel(ids, train.select(ids).y)
        change = request.resolve(poisoned)
        run_scenario(
            f"flip {fraction:.0%}",
            "linear",
            poisoned_model,
            poisoned,
            change,
            request,
            test,
            methods,
            rows,
        )
    print_rows(f"{name}: label repair", rows)


# -- MLP on Fashion-MNIST ------------------------------------------------------------------
def mlp_benchmark(args) -> None:
    split = ob.datasets.load("fashion-mnist", flatten=True)
    rng = np.random.default_rng(args.seed)
    train = split.train.take(np.sort(rng.choice(len(split.train), args.mlp_train, replace=False)))
    test = split.test.take(np.arange(args.mlp_test))
    template = TorchModel(
        MLP(784, hidden=(args.hidden,), n_classes=10),
        l2=1e-4,
        epochs=args.epochs,
        lr=1e-3,
        batch_size=128,
        seed=args.seed,
    )
    model, fit_s = timed(lambda: template.clone().fit(train))
    print(
        f"\n#### fashion-mnist MLP 784-{args.hidden}-10 ({model.n_params} parameters) on "
        f"{len(train)} images, {args.epochs} epochs: fit {fit_s:.2f} s, test accuracy "
        f"{accuracy(model, test):.4f}"
    )
    prepared = {}

    def first(model, train, change, request):
        unlearner = FirstOrder(model, residual_records=0).attach(train)
        prepared["first"] = unlearner.prepare_seconds_
        prepared["lambda_max"] = unlearner.lambda_max_ * len(train)
        result = unlearner.forget(request)
        return unlearner.model_, result.seconds

    def finetune(model, train, change, request):
        tuned = copy.deepcopy(model)
        return timed(lambda: tuned.fit(change.result, init=model, epochs=1))

    def second(model, train, change, request):
        # damping 1 % of lambda_max: above |lambda_min| for this network (about 0.6 %)
        damping = 0.01 * prepared["lambda_max"]
        unlearner = SecondOrder(
            model,
            solver="cg",
            damping=damping,
            max_iter=args.cg_iterations,
            rtol=1e-2,
            on_failure="skip",
            residual_records=0,
        ).attach(train)
        result = unlearner.forget(request)
        prepared["cg"] = result.diagnostics.get("cg_iterations", 0.0)
        return unlearner.model_, result.seconds

    def second_head(model, train, change, request):
        head = TorchModel(model.module_, l2=model.l2, params=["fc2"], epochs=0, reinit=False).fit(
            train
        )
        unlearner = SecondOrder(head, residual_records=0).attach(train)
        result = unlearner.forget(request)
        whole = copy.deepcopy(model)  # the whole network, with the updated head
        whole.module_.load_state_dict(unlearner.model_.module_.state_dict())
        return whole, result.seconds

    methods = {"first": first, "finetune": finetune, "second": second, "second-head": second_head}
    rows: list[dict] = []
    pixels = list(range(train.n_features))
    for k in args.features:
        columns = most_frequent(train, pixels, k)
        request = ReplaceFeatures(features=columns)
        change = request.resolve(train)
        run_scenario(
            f"features k={k}",
            "mlp",
            model,
            train,
            change,
            request,
            zero_columns(test, columns),
            methods,
            rows,
        )
    print_rows(
        f"fashion-mnist MLP: feature unlearning (prepare lambda_max {prepared['first']:.2f} s; "
        f"CG capped at {args.cg_iterations} iterations)",
        rows,
    )
    rows = []
    for fraction in args.flips:
        poisoned, ids = flip_labels(train, fraction, args.seed)
        poisoned_model = template.clone().fit(poisoned)
        request = Relabel(ids, train.select(ids).y)
        change = request.resolve(poisoned)
        run_scenario(
            f"flip {fraction:.0%}",
            "mlp",
            poisoned_model,
            poisoned,
            change,
            request,
            test,
            methods,
            rows,
        )
    print_rows("fashion-mnist MLP: label repair (pairs s <-> 9 - s)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["drebin", "adult", "fmnist"],
        choices=["drebin", "adult", "fmnist"],
    )
    parser.add_argument("--features", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--flips", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--root", default=str(SHARED))
    parser.add_argument("--mlp-train", type=int, default=4000)
    parser.add_argument("--mlp-test", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cg-iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    for name in args.datasets:
        if name == "fmnist":
            mlp_benchmark(args)
        else:
            linear_benchmark(name, args)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
