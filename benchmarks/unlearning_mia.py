"""Membership inference against unlearning (Chen et al., CCS 2021) on Adult and Fashion-MNIST.

For each (dataset, target model, unlearner) the script trains original and unlearned models
on shadow and target halves of the data (``oblivio.audit.collect_posteriors``), then fits the
attack for the five features and the classical baseline with four attack classifiers,
with and without defences (``oblivio.audit.run_unlearning_attack``), and prints:

* the AUC table (rows: defence x attack classifier; columns: features + classical);
* DegCount / DegRate of the best feature per row (> 0.5 / > 0: publishing the unlearned
  model as well degrades privacy relative to publishing the original model alone);
* the time spent training/unlearning and attacking;
* a sweep over the settings (group deletion, multiple versions, remaining samples, online
  learning, and the null control whose AUC must be about 0.5) on Adult / logistic / retrain.

Defaults (about 3-4 minutes on 2 busy cores): Adult (``../shared/data/adult``, one-hot,
standardised) with a 10-leaf decision tree and oblivio's logistic regression (``--adult-models
rf`` adds the reference's random forest, 100 trees, min leaf 30: slow, and with SISA's
50-record shards a min leaf of 30 allows no split, so every shard model is constant); a
Fashion-MNIST subset with an MLP (oblivio's TorchModel if available, else scikit-learn's).
Unlearners: ``retrain`` and ``sisa`` (10 shards). Sizes are smaller than the reference's
(10 original models of 2,000 records, 20 deletions each): ``--reference-sizes`` restores
them (hours on a laptop).

On binary Adult, top-1 publication changes nothing (the second probability is 1 - the
first), so top-k defences run on Fashion-MNIST only.

Run ``python benchmarks/unlearning_mia.py`` (``--help`` for options); ``--out FILE`` writes
every result as JSON. Results are not committed.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # tiny solves are much slower with threaded BLAS

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import oblivio as ob  # noqa: E402
from oblivio._io import OutputError, claim_output_file, write_json  # noqa: E402
from oblivio.audit import collect_posteriors, run_unlearning_attack  # noqa: E402
from oblivio.audit.command import build_model  # noqa: E402
from oblivio.data import Dataset  # noqa: E402
from oblivio.models import SklearnModel  # noqa: E402


def pooled(split: ob.Split, limit: int | None, seed: int) -> Dataset:
    """Train and test pooled into one dataset with fresh ids (the attack splits it itself)."""
    X = np.concatenate([split.train.dense(), split.test.dense()]).astype(np.float64)
    y = np.concatenate([split.train.y, split.test.y])
    data = Dataset(
        X.reshape(len(X), -1),
        y,
        classes=split.train.classes,
        name=split.train.name.replace("-train", ""),
    )
    if limit is not None and limit < len(data):
        pick = np.sort(np.random.default_rng(seed).choice(len(data), limit, replace=False))
        data = data.take(pick)
    return data


def fashion_mlp(n_features: int, epochs: int, seed: int) -> tuple[str, Any]:
    models = ob.models
    if hasattr(models, "TorchModel") and hasattr(models, "MLP"):
        module = models.MLP(n_features, hidden=(128,), n_classes=10)
        return "mlp (torch)", models.TorchModel(
            module, epochs=epochs, batch_size=64, lr=1e-3, seed=seed
        )
    from sklearn.neural_network import MLPClassifier

    return "mlp (sklearn)", SklearnModel(
        MLPClassifier(hidden_layer_sizes=(128,), max_iter=epochs, random_state=seed)
    )


def experiments(args: argparse.Namespace) -> list[dict[str, Any]]:
    plan = []
    if "adult" in args.datasets:
        split = ob.datasets.load("adult", root=args.adult_root, normalize="standard", seed=0)
        data = pooled(split, args.limit, args.seed)
        for name in args.adult_models:
            model = build_model(
                name,
                n_features=data.n_features,
                n_classes=data.n_classes,
                l2=1e-3,
                trees=100,
                seed=args.seed,
            )
            plan.append(
                dict(
                    data=data,
                    model_name=name,
                    model=model,
                    defenses=["none", "label", "temperature:4"],
                    sizes=dict(
                        n_original=args.n_original, set_size=args.set_size, n_unlearn=args.n_unlearn
                    ),
                )
            )
    if "fashion-mnist" in args.datasets:
        split = ob.datasets.load("fashion-mnist", flatten=True, seed=0)
        data = pooled(split, args.fashion_limit, args.seed)
        name, model = fashion_mlp(data.n_features, args.epochs, args.seed)
        plan.append(
            dict(
                data=data,
                model_name=name,
                model=model,
                defenses=["none", "top1", "top3", "label", "temperature:4"],
                sizes=dict(
                    n_original=args.fashion_n_original,
                    set_size=args.fashion_set_size,
                    n_unlearn=args.fashion_n_unlearn,
                ),
            )
        )
    return plan


def settings_sweep(args: argparse.Namespace, summary_rows: list[dict[str, Any]]) -> None:
    """Group deletion, multiple versions, remaining samples, online learning, null control."""
    split = ob.datasets.load("adult", root=args.adult_root, normalize="standard", seed=0)
    data = pooled(split, args.limit, args.seed)
    model = build_model("logistic", n_features=data.n_features, n_classes=2, l2=1e-3)
    sizes = dict(n_original=args.n_original, set_size=args.set_size, n_unlearn=args.n_unlearn)
    print("\n=== settings (adult / logistic / retrain; attack classifiers dt, lr; no defence)")
    lines = []
    for setting, n_delete in (
        ("in_out", 5),
        ("multi_version", 5),
        ("in_in", 1),
        ("online", 1),
        ("null", 1),
    ):
        rows = collect_posteriors(
            data, model, setting=setting, n_delete=n_delete, seed=args.seed, **sizes
        )
        results = run_unlearning_attack(rows, classifiers=["dt", "lr"], seed=args.seed)
        frame = results.to_frame()
        ours = frame[frame["feature"] != "classical"]
        label = "group (5)" if setting == "in_out" else setting
        lines.append(
            {
                "setting": label,
                "n_delete": n_delete,
                "target rows": len(rows.target_labels),
                "best AUC": ours["auc"].max(),
                "mean AUC": ours["auc"].mean(),
                "classical AUC": frame[frame["feature"] == "classical"]["auc"].max(),
                "sorted_diff AUC (dt)": results.get("sorted_diff", "dt").auc,
                "seconds": rows.metadata["seconds"] + results.metadata["attack_seconds"],
            }
        )
        summary_rows.append(
            {
                "dataset": data.name,
                "model": "logistic",
                "unlearner": f"retrain, {label}",
                "best AUC (no defence)": ours["auc"].max(),
                "classical AUC (best clf)": lines[-1]["classical AUC"],
                "seconds": lines[-1]["seconds"],
            }
        )
    print(pd.DataFrame(lines).round(3).to_string(index=False), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["adult", "fashion-mnist"],
        choices=["adult", "fashion-mnist"],
    )
    parser.add_argument("--adult-root", default="../shared/data/adult")
    parser.add_argument(
        "--adult-models",
        nargs="+",
        default=["dt", "logistic"],
        choices=["dt", "rf", "logistic", "sk-mlp"],
    )
    parser.add_argument("--unlearners", nargs="+", default=["retrain", "sisa"])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--classifiers", nargs="+", default=["dt", "rf", "lr", "mlp"])
    parser.add_argument(
        "--rf-trees",
        type=int,
        default=100,
        help="trees of the random-forest attack (reference: 500)",
    )
    parser.add_argument("--limit", type=int, default=20000, help="Adult records used")
    parser.add_argument("--n-original", type=int, default=5)
    parser.add_argument("--set-size", type=int, default=500)
    parser.add_argument("--n-unlearn", type=int, default=20)
    parser.add_argument("--fashion-limit", type=int, default=10000)
    parser.add_argument("--fashion-n-original", type=int, default=3)
    parser.add_argument("--fashion-set-size", type=int, default=500)
    parser.add_argument("--fashion-n-unlearn", type=int, default=20)
    parser.add_argument(
        "--no-settings",
        action="store_true",
        help="skip the sweep over settings (Adult, logistic, retrain)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="MLP epochs (Fashion-MNIST)")
    parser.add_argument(
        "--reference-sizes",
        action="store_true",
        help="10 original models of 2,000 records, 20 deletions each",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write all results as JSON")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    try:  # refuse before the work, not after it
        claim_output_file(args.out, force=args.force) if args.out else None
    except OutputError as error:
        parser.error(str(error))
    if args.reference_sizes:
        args.n_original = args.fashion_n_original = 10
        args.set_size = args.fashion_set_size = 2000
        args.n_unlearn = args.fashion_n_unlearn = 20
        args.rf_trees = 500
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", module="sklearn")
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)

    everything = []
    summary_rows = []
    start = time.perf_counter()
    for item in experiments(args):
        data = item["data"]
        for unlearner in args.unlearners:
            options = {"shards": args.shards, "seed": args.seed} if unlearner == "sisa" else {}
            title = f"{data.name} ({len(data)} records) / {item['model_name']} / {unlearner}"
            print(f"\n=== {title}", flush=True)
            rows = collect_posteriors(
                data,
                item["model"],
                unlearner=unlearner,
                unlearner_options=options,
                seed=args.seed,
                **item["sizes"],
            )
            results = run_unlearning_attack(
                rows,
                classifiers=args.classifiers,
                defenses=item["defenses"],
                seed=args.seed,
                classifier_options={"rf": {"n_estimators": args.rf_trees}},
            )
            print(results.table("auc").round(3).to_string())
            frame = results.to_frame()
            ours = frame[frame["feature"] != "classical"]
            best = ours.loc[ours.groupby(["defense", "classifier"], sort=False)["auc"].idxmax()]
            print("best feature per row: DegCount / DegRate vs classical")
            print(
                best[["defense", "classifier", "feature", "auc", "deg_count", "deg_rate"]]
                .round(3)
                .to_string(index=False)
            )
            meta = results.metadata
            print(
                f"time: {meta['seconds']:.1f} s models (fit {meta['fit_seconds']:.1f} s, "
                f"forget {meta['forget_seconds']:.1f} s), {meta['attack_seconds']:.1f} s "
                f"attacks; {meta['n_target_rows']} target rows",
                flush=True,
            )
            none = frame[frame["defense"] == "none"]
            summary_rows.append(
                {
                    "dataset": data.name,
                    "model": item["model_name"],
                    "unlearner": unlearner,
                    "best AUC (no defence)": none[none["feature"] != "classical"]["auc"].max(),
                    "classical AUC (best clf)": none[none["feature"] == "classical"]["auc"].max(),
                    "best AUC (label only)": frame[
                        (frame["defense"] == "label") & (frame["feature"] != "classical")
                    ]["auc"].max(),
                    "best AUC (T=4)": frame[
                        (frame["defense"] == "temperature:4") & (frame["feature"] != "classical")
                    ]["auc"].max(),
                    "seconds": meta["seconds"] + meta["attack_seconds"],
                }
            )
            everything.append(
                {"title": title, "metadata": meta, "results": [r.row() for r in results]}
            )
    if "adult" in args.datasets and not args.no_settings:
        settings_sweep(args, summary_rows)
    print("\n=== summary (target-side AUC; max over attack classifiers and features)")
    print(pd.DataFrame(summary_rows).round(3).to_string(index=False))
    print(f"total time: {time.perf_counter() - start:.0f} s")
    if args.out:
        write_json(args.out, everything)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
