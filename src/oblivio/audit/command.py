"""``oblivio audit``: the unlearning attack of Chen et al. (CCS 2021) from the command line.

Example::

    oblivio audit --dataset breast-cancer --model logistic --unlearner retrain \\
        --classifiers dt,lr --defenses none,label,temperature:4 --output audit.json
    oblivio audit --dataset adult --root ../shared/data/adult --model dt --unlearner sisa
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from oblivio.audit.unlearning_attack import (
    CLASSIFIERS,
    FEATURES,
    SETTINGS,
    Defense,
    collect_posteriors,
    run_unlearning_attack,
)
from oblivio.data import Dataset

__all__ = ["MODELS", "add_arguments", "build_model", "run"]

MODELS = ("logistic", "dt", "rf", "sk-mlp", "mlp")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``oblivio audit``."""
    parser.description = (
        "Membership inference against unlearning (Chen et al., CCS 2021): train original "
        "and unlearned models on shadow and target halves of a dataset, then attack the "
        "(original, unlearned) posterior pairs. Prints the AUC table per feature and attack "
        "classifier, for each defence."
    )
    parser.add_argument(
        "--dataset",
        default="breast-cancer",
        help="dataset name (oblivio datasets); train and test are pooled",
    )
    parser.add_argument("--root", default=None, help="folder with the dataset's files")
    parser.add_argument(
        "--normalize",
        choices=("none", "l2", "standard"),
        default="standard",
        help="feature scaling passed to the loader (default: standard)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many records (seeded subsample)"
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="logistic",
        help="target/shadow model: oblivio logistic regression, scikit-learn "
        "decision tree (10 leaves), random forest (min leaf 30), "
        "scikit-learn MLP, or oblivio's torch MLP (default: logistic)",
    )
    parser.add_argument("--l2", type=float, default=1e-3, help="l2 of --model logistic/mlp")
    parser.add_argument("--trees", type=int, default=100, help="trees of --model rf")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of --model mlp")
    parser.add_argument(
        "--unlearner", default="retrain", help="registered unlearner name (retrain, sisa, ...)"
    )
    parser.add_argument("--shards", type=int, default=10, help="shards of --unlearner sisa")
    parser.add_argument("--setting", choices=SETTINGS, default="in_out")
    parser.add_argument("--n-original", type=int, default=5, help="original models per side")
    parser.add_argument(
        "--set-size", type=int, default=200, help="training records of each original model"
    )
    parser.add_argument(
        "--n-unlearn", type=int, default=20, help="unlearned models per original model"
    )
    parser.add_argument("--n-delete", type=int, default=1, help="records deleted per request")
    parser.add_argument(
        "--features",
        type=_csv,
        default=list(FEATURES),
        help=f"comma-separated subset of {','.join(FEATURES)}",
    )
    parser.add_argument(
        "--classifiers",
        type=_csv,
        default=["dt", "lr"],
        help=f"comma-separated subset of {','.join(CLASSIFIERS)}",
    )
    parser.add_argument(
        "--defenses",
        type=_csv,
        default=["none", "top1", "label", "temperature:4"],
        help="comma-separated defences: none, top<k>, label, temperature:<T>",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def build_model(
    name: str,
    *,
    n_features: int,
    n_classes: int,
    l2: float = 1e-3,
    trees: int = 100,
    epochs: int = 20,
    seed: int = 0,
) -> Any:
    """The target/shadow model template ``name`` (one of :data:`MODELS`)."""
    from oblivio import models
    from oblivio.models import SklearnModel

    if name == "logistic":
        return models.LogisticRegression(l2=l2, fit_intercept=True)
    if name == "dt":
        from sklearn.tree import DecisionTreeClassifier

        return SklearnModel(DecisionTreeClassifier(max_leaf_nodes=10, random_state=seed))
    if name == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return SklearnModel(
            RandomForestClassifier(
                n_estimators=trees, min_samples_leaf=30, random_state=seed, n_jobs=1
            )
        )
    if name == "sk-mlp":
        from sklearn.neural_network import MLPClassifier

        return SklearnModel(
            MLPClassifier(early_stopping=True, learning_rate_init=0.01, random_state=seed)
        )
    if name == "mlp":
        if not hasattr(models, "TorchModel") or not hasattr(models, "MLP"):
            raise ValueError("--model mlp needs oblivio.models.TorchModel (not available)")
        module = models.MLP(n_features, hidden=(64,), n_classes=n_classes)
        return models.TorchModel(module, l2=l2, epochs=epochs, lr=1e-3, seed=seed)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _pooled(args: argparse.Namespace) -> Dataset:
    from oblivio import datasets

    normalize = None if args.normalize == "none" else args.normalize
    split = datasets.load(args.dataset, root=args.root, normalize=normalize, seed=args.seed)
    train, test = split.train, split.test
    X = np.concatenate([train.dense(), test.dense()]).astype(np.float64)
    y = np.concatenate([train.y, test.y])
    name = train.name[: -len("-train")] if train.name.endswith("-train") else train.name
    data = Dataset(X.reshape(len(X), -1), y, classes=train.classes, name=name)
    if args.limit is not None and args.limit < len(data):
        pick = np.sort(
            np.random.default_rng(args.seed).choice(len(data), args.limit, replace=False)
        )
        data = data.take(pick)
    return data


def run(args: argparse.Namespace) -> int:
    """Run the audit and print the AUC tables."""
    data = _pooled(args)
    model = build_model(
        args.model,
        n_features=data.n_features,
        n_classes=data.n_classes,
        l2=args.l2,
        trees=args.trees,
        epochs=args.epochs,
        seed=args.seed,
    )
    options: dict[str, Any] = {}
    if args.unlearner == "sisa":
        options = {"shards": args.shards, "seed": args.seed}
    defenses = [Defense.parse(d) for d in args.defenses]  # fail early on a typo

    def progress(side: str, done: int, total: int) -> None:
        if not args.quiet:
            print(f"  {side}: {done}/{total} original models", file=sys.stderr, flush=True)

    if not args.quiet:
        print(
            f"oblivio audit: {data.name} ({len(data)} records), model {args.model}, "
            f"unlearner {args.unlearner}, setting {args.setting}",
            file=sys.stderr,
        )
    rows = collect_posteriors(
        data,
        model,
        unlearner=args.unlearner,
        unlearner_options=options,
        setting=args.setting,
        n_original=args.n_original,
        set_size=args.set_size,
        n_unlearn=args.n_unlearn,
        n_delete=args.n_delete,
        seed=args.seed,
        progress=progress,
    )
    results = run_unlearning_attack(
        rows,
        features=args.features,
        classifiers=args.classifiers,
        defenses=defenses,
        seed=args.seed,
        classifier_options={"rf": {"n_estimators": args.trees}},
    )
    results.metadata["model_name"] = args.model
    print(results.summary())
    print(
        f"time: {rows.metadata['seconds']:.1f} s to train and unlearn, "
        f"{results.metadata['attack_seconds']:.1f} s for the attacks"
    )
    if args.output:
        path = results.save(args.output)
        print(f"results written to {path}")
    return 0
