"""``oblivio audit``: the unlearning attack of Chen et al. (CCS 2021) from the command line.

Example::

    oblivio audit --dataset breast-cancer --model logistic --unlearner retrain \\
        --classifiers dt,lr --defenses none,label,temperature:4 --output audit.json
    oblivio audit --dataset adult --root $OBLIVIO_DATA/adult --model dt --unlearner sisa --quick
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from oblivio.audit._constants import CLASSIFIERS, FEATURES, SETTINGS

if TYPE_CHECKING:
    from oblivio.data import Dataset

__all__ = ["MODELS", "add_arguments", "build_model", "run"]

MODELS = ("logistic", "dt", "rf", "sk-mlp", "mlp")

#: Chen et al.'s protocol (CCS 2021, Sec. 5.1; the released code's defaults, which the Python
#: API's defaults follow): 10 original models per side on 2,000 records each, 20 unlearned
#: models per original, a 500-tree attack forest.
PAPER = {"n_original": 10, "set_size": 2000, "n_unlearn": 20, "attack_trees": 500}
#: A small protocol for a first look (--quick).
QUICK = {"n_original": 5, "set_size": 200, "n_unlearn": 20, "attack_trees": 100}


def _describe(protocol: dict[str, int]) -> str:
    return (
        f"{protocol['n_original']} originals x {protocol['set_size']:,} records per side, "
        f"{protocol['n_unlearn']} unlearned each, {protocol['attack_trees']}-tree attack forest"
    )


def protocol(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    """Which protocol the options give: ("paper" | "quick" | "custom", its sizes)."""
    base = QUICK if args.quick else PAPER
    chosen = {
        "n_original": args.n_original if args.n_original is not None else base["n_original"],
        "set_size": args.set_size if args.set_size is not None else base["set_size"],
        "n_unlearn": args.n_unlearn if args.n_unlearn is not None else base["n_unlearn"],
        "attack_trees": args.attack_trees
        if args.attack_trees is not None
        else base["attack_trees"],
    }
    if chosen == PAPER:
        return "paper", chosen
    if chosen == QUICK:
        return "quick", chosen
    return "custom", chosen


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
    parser.add_argument(
        "--trees", type=int, default=100, help="trees of the target model --model rf"
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs of --model mlp")
    parser.add_argument(
        "--unlearner", default="retrain", help="registered unlearner name (retrain, sisa, ...)"
    )
    parser.add_argument("--shards", type=int, default=10, help="shards of --unlearner sisa")
    parser.add_argument("--setting", choices=SETTINGS, default="in_out")
    parser.add_argument(
        "--n-original",
        type=int,
        default=None,
        help=f"original models per side (default {PAPER['n_original']}, "
        f"--quick {QUICK['n_original']})",
    )
    parser.add_argument(
        "--set-size",
        type=int,
        default=None,
        help=f"training records of each original model (default {PAPER['set_size']:,}, "
        f"--quick {QUICK['set_size']})",
    )
    parser.add_argument(
        "--attack-trees",
        type=int,
        default=None,
        help=f"trees of the attack's random forest (classifier rf; default "
        f"{PAPER['attack_trees']}, --quick {QUICK['attack_trees']}); independent of --trees",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the small protocol: {_describe(QUICK)} (minutes instead of the paper's hours)",
    )
    parser.add_argument(
        "--n-unlearn",
        type=int,
        default=None,
        help=f"unlearned models per original model (default {PAPER['n_unlearn']})",
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
    import numpy as np

    from oblivio import datasets
    from oblivio.data import Dataset

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
    from oblivio._progress import task
    from oblivio.audit.unlearning_attack import Defense, collect_posteriors, run_unlearning_attack

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

    name, sizes = protocol(args)
    if not args.quiet:
        print(
            f"oblivio audit: {data.name} ({len(data)} records), model {args.model}, "
            f"unlearner {args.unlearner}, setting {args.setting}\n"
            f"protocol: {name} ({_describe(sizes)})"
            + (" = Chen et al.'s" if name == "paper" else ", not Chen et al.'s")
            + (", --quick for a small one" if name == "paper" else ""),
            file=sys.stderr,
            flush=True,
        )
    with task("audit: original models", total=2 * sizes["n_original"]) as bar:
        sides: dict[str, int] = {}

        def progress(side: str, done: int, total: int) -> None:
            sides[side] = done
            bar.update(sum(sides.values()), note=side)

        try:
            rows = collect_posteriors(
                data,
                model,
                unlearner=args.unlearner,
                unlearner_options=options,
                setting=args.setting,
                n_original=sizes["n_original"],
                set_size=sizes["set_size"],
                n_unlearn=sizes["n_unlearn"],
                n_delete=args.n_delete,
                seed=args.seed,
                progress=progress,
            )
        except ValueError as error:
            if "set_size" not in str(error):
                raise
            raise ValueError(
                f"{error}. Chen et al.'s protocol trains each original model on "
                f"{PAPER['set_size']:,} records, which needs a larger data set (e.g. --dataset "
                "adult); on small data use --quick or a smaller --set-size"
            ) from error
    results = run_unlearning_attack(
        rows,
        features=args.features,
        classifiers=args.classifiers,
        defenses=defenses,
        seed=args.seed,
        classifier_options={"rf": {"n_estimators": sizes["attack_trees"]}},
    )
    results.metadata["protocol"] = {"name": name, **sizes}
    results.metadata["model_name"] = args.model
    print(results.summary())
    print(f"protocol: {name} ({_describe(sizes)})")
    print(
        f"time: {rows.metadata['seconds']:.1f} s to train and unlearn, "
        f"{results.metadata['attack_seconds']:.1f} s for the attacks"
    )
    if args.output:
        path = results.save(args.output)
        print(f"results written to {path}")
    return 0
