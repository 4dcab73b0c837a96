"""Instance-wise unlearning of a pre-trained CNN (Cha et al., L2UL, AAAI 2024) on CPU.

A small CNN (``SmallCNN``: two 3x3 convolutions, 16 and 32 channels, a 128-unit layer) is
trained on a Fashion-MNIST subset (and on CIFAR-10 when its batches are installed; with
``--datasets digits``, an MLP with 64 hidden units on scikit-learn's digits, raw pixels, the
setting of ``tests/unlearners/test_l2ul.py``). Then
``k`` random training records (k in {8, 32, 128}; the first k of a seeded permutation, as in
the paper) are forgotten by

* ``GA``: gradient ascent on the forget records (``gradient-ascent``);
* ``+adv``: L2UL with the adversarial regulariser only (``l2ul``, ``importance=False``);
* ``+adv+imp``: full L2UL (``l2ul``);
* ``fine-tune``: ``--ft-epochs`` epochs of SGD on the retained records (``finetune``);
* ``random labels``: the forget records with random wrong labels plus retained records
  with their true labels (``random-labels``, ``use_retain=True``);
* ``retrain``: the same training recipe from scratch on the retained records (the oracle);

all with the library defaults (``--forget-loss neg-ce`` runs the first three with the
paper's ``-CE``, ``complement`` with ``-log(1 - p_y)``, instead of their defaults: L2UL's
is the cross-entropy towards each record's runner-up class, GA's ``-log(1 - p_y)``). For
each (k, method) the table gives, as means over ``--seeds`` seeds (each seed: its own
pre-trained model, forget set and method seed):

* accuracy on the forget records, on retained training records (a seeded sample of
  ``--retain-eval`` of them) and on the test set (``±`` its standard deviation);
* MIA-efficacy on the forget set (``oblivio.audit.mia_efficacy``: the share of forget
  records an SVM on the confidence ``p_y``, trained to tell retained from test records,
  calls non-members; compare with the retrained model's value);
* ``stop``: how many runs reached the stopping target (every forget record misclassified)
  / hit the epoch cap / diverged (fine-tune has no target: it runs its epochs), and the
  mean number of optimiser steps;
* seconds of the unlearning call (adversarial examples and importance included) and the
  speed-up ``retrain seconds / seconds``, both measured in this run.

Run ``python benchmarks/instance_unlearning.py`` (6.5 minutes on 2 shared cores with the
defaults: 10,000 training and 2,000 test images, 5 epochs, 3 seeds; one thread); ``--quick``
runs a smaller version in about a minute; ``--help`` for the sizes. ``--out FILE`` writes
every row as JSON. Results are printed, not committed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio._io import OutputError, claim_output_file, write_json
from oblivio.audit import accuracy, mia_efficacy
from oblivio.data import Dataset, Remove
from oblivio.data.loaders import DataNotFoundError
from oblivio.models import MLP, SmallCNN, TorchModel

METHODS = ("GA", "+adv", "+adv+imp", "fine-tune", "random labels", "retrain")


def _unlearner(method: str, model: TorchModel, seed: int, args: argparse.Namespace) -> Any:
    """The unlearner behind a table row (library defaults unless an option says otherwise)."""
    loss = {} if args.forget_loss is None else {"forget_loss": args.forget_loss}
    if method == "GA":
        return ob.unlearners.create("gradient-ascent", model, goal="correction", seed=seed, **loss)
    l2ul = {**loss, **dict(args.l2ul)}
    if method == "+adv":
        return ob.unlearners.create("l2ul", model, importance=False, seed=seed, **l2ul)
    if method == "+adv+imp":
        return ob.unlearners.create("l2ul", model, seed=seed, **l2ul)
    if method == "fine-tune":
        return ob.unlearners.create("finetune", model, epochs=args.ft_epochs, seed=seed)
    if method == "random labels":
        return ob.unlearners.create(
            "random-labels", model, goal="correction", use_retain=True, seed=seed
        )
    raise ValueError(method)


def _settings(args: argparse.Namespace) -> list[tuple[str, Dataset, Dataset, Callable, str]]:
    settings = []
    for name in args.datasets:
        if name == "digits":  # bundled: the MLP of tests/unlearners/test_l2ul.py, raw pixels
            split = ob.datasets.load("digits")

            def make_mlp(seed: int) -> TorchModel:
                module = MLP(64, (64,), 10)
                return TorchModel(module, epochs=20, lr=1e-2, batch_size=64, seed=seed)

            settings.append((name, split.train, split.test, make_mlp, "MLP(64), 20 epochs"))
            continue
        try:
            split = ob.datasets.load(name, seed=0)
        except DataNotFoundError as error:
            first = str(error).splitlines()[0].split(". Looked in")[0].rstrip(" :")
            print(f"{name} skipped (data not installed): {first}")
            continue
        train = split.train.take(np.arange(min(args.n_train, len(split.train))))
        test = split.test.take(np.arange(min(args.n_test, len(split.test))))
        channels, size = train.X.shape[1], train.X.shape[2]

        def make_model(seed: int, channels: int = channels, size: int = size) -> TorchModel:
            module = SmallCNN(in_channels=channels, image_size=size, n_classes=10)
            return TorchModel(module, epochs=args.epochs, lr=2e-3, batch_size=64, seed=seed)

        settings.append((name, train, test, make_model, f"SmallCNN, {args.epochs} epochs"))
    return settings


def _scores(model: Any, forget: Dataset, retain: Dataset, test: Dataset, seed: int) -> dict:
    try:
        mia = mia_efficacy(
            model, retain=retain, test=test, forget=forget, seed=seed, max_shadow=1000
        ).efficacy
    except ValueError:  # overflowed outputs (a diverged -CE ascent): no probabilities
        mia = float("nan")
    return {
        "forget": accuracy(model, forget),
        "retain": accuracy(model, retain),
        "test": accuracy(model, test),
        "mia": mia,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, train, test, make_model, net in _settings(args):
        print(
            f"\n{name}: {len(train)} train, {len(test)} test images; {net} "
            f"(Adam); k in {args.k}; {args.seeds} seeds; forget loss "
            f"{args.forget_loss or 'defaults'}",
            flush=True,
        )
        for seed in range(args.seeds):
            start = time.perf_counter()
            original = make_model(seed).fit(train)
            fit_seconds = time.perf_counter() - start
            order = np.random.default_rng(seed).permutation(train.ids)
            print(
                f"  seed {seed}: pre-trained in {fit_seconds:.1f}s, test accuracy "
                f"{accuracy(original, test):.3f}",
                flush=True,
            )
            for k in args.k:
                forget_ids = order[:k]
                forget = train.select(forget_ids)
                remaining = train.drop(forget_ids)
                pick = np.random.default_rng(seed).choice(
                    len(remaining), min(args.retain_eval, len(remaining)), replace=False
                )
                retain = remaining.take(np.sort(pick))
                base = {"dataset": name, "seed": seed, "k": k}
                rows.append(
                    {**base, "method": "original", **_scores(original, forget, retain, test, seed)}
                )
                start = time.perf_counter()
                retrained = make_model(seed).fit(remaining)
                retrain_seconds = time.perf_counter() - start
                rows.append(
                    {
                        **base,
                        "method": "retrain",
                        "seconds": retrain_seconds,
                        "speedup": 1.0,
                        **_scores(retrained, forget, retain, test, seed),
                    }
                )
                for method in METHODS[:-1]:
                    unlearner = _unlearner(method, original, seed, args).attach(train)
                    result = unlearner.forget(Remove(ids=forget_ids))
                    seconds = unlearner.prepare_seconds_ + result.seconds
                    d = result.diagnostics
                    rows.append(
                        {
                            **base,
                            "method": method,
                            "seconds": seconds,
                            "speedup": retrain_seconds / seconds,
                            "steps": d.get("steps", float("nan")),
                            "goal": d.get("goal_reached", float("nan")),
                            "capped": d.get("stopped_by_cap", float("nan")),
                            "diverged": d.get("diverged", float("nan")),
                            **_scores(unlearner.model_, forget, retain, test, seed),
                        }
                    )
                print(f"    k={k}: done (retrain {retrain_seconds:.1f}s)", flush=True)
        _print_table(name, [r for r in rows if r["dataset"] == name], args)
    return rows


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values)) if values else float("nan")


def _print_table(name: str, rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{name}: means over {args.seeds} seeds (forget loss {args.forget_loss or 'defaults'})")
    header = (
        f"{'k':>4} {'method':<14} {'forget':>6} {'retain':>6} {'test':>13} {'MIA-eff':>7} "
        f"{'stop':>6} {'steps':>6} {'seconds':>8} {'x retrain':>9}"
    )
    print(header)
    print("-" * len(header))
    drops: dict[int, dict[str, float]] = {}
    for k in args.k:
        for method in ("original", *METHODS):
            cell = [r for r in rows if r["k"] == k and r["method"] == method]
            if not cell:
                continue
            test = np.array([r["test"] for r in cell])
            seconds = _mean(cell, "seconds")
            stop = "–"
            if "goal" in cell[0] and np.isfinite(cell[0]["goal"]):
                stop = "/".join(
                    str(int(sum(r[key] for r in cell))) for key in ("goal", "capped", "diverged")
                )
            print(
                f"{k:>4} {method:<14} {_mean(cell, 'forget'):>6.3f} {_mean(cell, 'retain'):>6.3f} "
                f"{test.mean():>7.3f} ±{test.std():.3f} {_mean(cell, 'mia'):>7.3f} "
                f"{stop:>6} {_fmt(_mean(cell, 'steps'), '.0f'):>6} "
                f"{_fmt(seconds, '.2f'):>8} {_fmt(_mean(cell, 'speedup'), '.1f'):>9}"
            )
            drops.setdefault(k, {})[method] = float(test.mean())
        print()
    print("stop: runs that reached the target / hit the cap / diverged; MIA-eff '–': overflow")
    print("test-accuracy loss (original - after), in points, and its ratio to GA's:")
    for k, tests in drops.items():
        losses = {m: 100 * (tests["original"] - tests[m]) for m in tests if m != "original"}
        ga = losses.get("GA", float("nan"))
        parts = [
            f"{m} {v:.1f}" + (f" ({v / ga:.2f}x GA)" if m in ("+adv", "+adv+imp") else "")
            for m, v in losses.items()
        ]
        print(f"  k={k}: " + ", ".join(parts))


def _fmt(value: float, spec: str) -> str:
    return "–" if not np.isfinite(value) else format(value, spec)


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["fashion-mnist", "cifar10"],
        help="fashion-mnist, cifar10 (SmallCNN; skipped if absent), digits (bundled; an MLP)",
    )
    parser.add_argument("--k", nargs="+", type=int, default=[8, 32, 128], help="forget sizes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=10_000, help="training images")
    parser.add_argument("--n-test", type=int, default=2_000, help="test images")
    parser.add_argument("--epochs", type=int, default=5, help="pre-training (and retraining)")
    parser.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs")
    parser.add_argument(
        "--retain-eval", type=int, default=2_000, help="retained records scored per cell"
    )
    parser.add_argument(
        "--forget-loss",
        choices=["complement", "neg-ce"],
        default=None,
        help="forget term of GA, +adv, +adv+imp (default: each method's own)",
    )
    parser.add_argument(
        "--l2ul",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="an l2ul option for +adv and +adv+imp (JSON value), e.g. adv_labels=target; "
        "repeatable",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3,000 train / 1,000 test images, 3 epochs, k in {8, 32}, 2 seeds",
    )
    parser.add_argument("--out", help="write the rows as JSON to this file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    try:  # refuse before the work, not after it
        claim_output_file(args.out, force=args.force) if args.out else None
    except OutputError as error:
        parser.error(str(error))
    if args.quick:
        args.n_train, args.n_test, args.epochs = 3_000, 1_000, 3
        args.k, args.seeds, args.retain_eval = [8, 32], 2, 1_000
    torch.set_num_threads(1)
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        rows = run(args)
    print(f"\ntotal {time.perf_counter() - start:.0f}s")
    if args.out:
        write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
