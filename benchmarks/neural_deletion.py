"""Neural deletion on Fashion-MNIST: every neural method against retraining a SmallCNN.

A ``SmallCNN`` is trained on Fashion-MNIST (all 60,000 training images by default; ``--n``
takes a seeded subsample) until it memorises its training set (>= 99 % training accuracy:
epochs are added ``--epoch-step`` at a time up to ``--max-epochs``, and the epoch count it
took becomes the recipe of every retraining). Then three requests are honoured, each from
the same original model: a random 1 % and a random 10 % of the training records, and one
whole class (``--forget-class``). For every (seed, request) the table compares, with the
library defaults of each method:

* ``retrain``: the recipe from scratch on the retained records (the reference, gap 0);
* ``retrain-warm``: the recipe's optimiser for ``--warm-epochs`` epochs from the original
  weights on the retained records;
* ``no update``: the original model (its avg gap is the bar every method must beat);
* ``finetune``, ``gradient-ascent``, ``random-labels``, ``neggrad-plus``, ``l1-sparse``,
  ``salun``, ``scrub``, ``margin-match`` (oblivio's own): the deletion methods (a method
  that serves both goals runs with ``goal="deletion"``); a name the registry does not know
  is reported on stderr as "not registered" and skipped;
* ``second-order``: one Newton step on the last layer (``TorchModel(params=[head])``,
  damping 1e-3 per record);
* ``l2ul``: serves **correction** (Cha et al., AAAI 2024: every forget record
  misclassified), not deletion; its rows are labelled ``correction`` and judged by forget
  accuracy (target 0) and the test-accuracy drop against the original, not by the gap.
  It corrects a few records (it warns above 64), so requests of more than
  ``--l2ul-max-records`` (1,000) skip it: on a random 10 % or a class of the 60,000-image
  CNN (6,000 records) it would run for an hour or more per cell on a CPU (554 s for the
  600 records of a random 1 %, one thread).

Per cell: accuracy on the forget records, on retained records (a seeded sample of
``--retain-eval``), on the test set, SalUn's MIA-efficacy (``ob.audit.evaluate``), the
**avg gap** to retraining (mean absolute difference over those four numbers, in points;
Fan et al., ICLR 2024), seconds of the unlearning call (precomputation included), and the
speed-ups over retraining from scratch and warm-started, measured in the same run. Means
over ``--seeds`` seeds (each seed its own original model, requests and method seeds).

Writes ``neural_deletion.md`` (the table), ``neural_deletion.json`` (every row) and
``neural_deletion.png`` (avg gap against speed-up, one point per method and request) into
``--out`` through ``oblivio._io`` (atomic; nothing else in the folder is touched).
Progress goes to stderr. ``--device cuda`` runs on a GPU. The full run (60,000 images, 3
seeds) needs a GPU or a long CPU run; ``--n 10000 --seeds 1`` fits a small CPU machine.

Seeds can run side by side (one GPU keeps several of these launch-bound runs busy): give
each process its own ``--first-seed`` and ``--out``, then ``--merge DIR DIR ... --out ALL``
writes one table, JSON and figure from their rows without training anything. Speed-ups
stay honest under sharing: each is the ratio of two timings taken in the same process,
under the same load.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import oblivio as ob
from oblivio._io import write_bytes, write_json, write_text
from oblivio.audit.evaluate import AVG_GAP_METRICS, avg_gap
from oblivio.bench.runner import goal_of, method_options, reference_set
from oblivio.data import Dataset, Remove
from oblivio.models import SmallCNN, TorchModel

DELETION = ("finetune", "gradient-ascent", "random-labels", "neggrad-plus", "l1-sparse")
DELETION += ("salun", "scrub", "margin-match", "second-order")
METHODS = ("retrain", "retrain-warm", "no update", *DELETION, "l2ul")
#: The deletion loop's diagnostics kept in the JSON rows (why a method landed where it did).
DIAGNOSTICS = (
    "target_forget_accuracy",
    "forget_accuracy_before",
    "forget_accuracy",
    "steps",
    "repair_steps",
    "landed_at_step",
    "lr_halvings",
    "work_fraction",
    "mask_seconds",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Recipe:
    """How the original is trained (and every retraining repeats)."""

    def __init__(self, args: argparse.Namespace, shape: tuple[int, ...], n_classes: int) -> None:
        self.args = args
        self.shape = shape
        self.n_classes = n_classes
        self.epochs = args.epoch_step
        self.n_train = 0

    def model(self, seed: int, *, params: list[str] | None = None) -> TorchModel:
        net = SmallCNN(
            in_channels=self.shape[0], image_size=self.shape[1], n_classes=self.n_classes
        )
        return TorchModel(
            net,
            epochs=self.epochs,
            lr=self.args.lr,
            batch_size=self.args.batch_size,
            seed=seed,
            device=self.args.device,
            params=params,
        )


def train_original(recipe: Recipe, train: Dataset, seed: int) -> tuple[TorchModel, float]:
    """Train until >= 99 % training accuracy (or ``--max-epochs``); fixes the recipe's epochs."""
    args = recipe.args
    start = time.perf_counter()
    model = recipe.model(seed).fit(train, epochs=args.epoch_step)
    epochs = args.epoch_step
    train_acc = ob.audit.accuracy(model, train)
    while train_acc < args.memorise and epochs + args.epoch_step <= args.max_epochs:
        model.fit(train, init=model, epochs=args.epoch_step)
        epochs += args.epoch_step
        train_acc = ob.audit.accuracy(model, train)
        log(f"  seed {seed}: {epochs} epochs, training accuracy {train_acc:.4f}")
    seconds = time.perf_counter() - start
    recipe.epochs = epochs
    # the recipe is what the unlearners' budgets are fractions of (TorchModel.epochs): the
    # model was built with the first increment, and fit(epochs=...) does not change it
    model.epochs = epochs
    if train_acc < args.memorise:
        log(
            f"WARNING: training accuracy {train_acc:.4f} < {args.memorise} after {epochs} "
            "epochs: the original has not memorised its data; forgetting is hard to measure"
        )
    return model, seconds


def requests(train: Dataset, seed: int, forget_class: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "random 1%": rng.choice(train.ids, size=max(1, len(train) // 100), replace=False),
        "random 10%": rng.choice(train.ids, size=max(1, len(train) // 10), replace=False),
        f"class {forget_class}": train.ids[train.y == forget_class],
    }


def scores(model: Any, forget: Dataset, retain: Dataset, test: Dataset, seed: int) -> dict:
    metrics = ob.audit.evaluate(model, forget=forget, retain=retain, test=test, seed=seed).metrics
    return {k: metrics[k] for k in AVG_GAP_METRICS}


def make_unlearner(name: str, original: TorchModel, recipe: Recipe, seed: int) -> Any:
    """The method with its defaults, on deletion where it serves both goals (the harness's
    rule, :func:`oblivio.bench.runner.method_options`)."""
    options = method_options(name, {})
    if name == "second-order":
        net = original.module
        head = recipe.model(seed, params=[net.head_name])
        head.set_state(original.get_state())
        # The head's Hessian is only semi-definite (softmax is invariant to shifting every
        # class row alike) and near zero where the model is confident: a per-record damping
        # of 1e-3 (sum convention: mu = 1e-3 n) makes the Cholesky solve well posed.
        damping = 1e-3 * recipe.n_train
        return ob.unlearners.create(name, head, damping=damping, **options)
    if name == "l2ul":
        # its default cap (1000 passes over the adversarial set) is for a few records; with
        # thousands it would run for hours, so the benchmark bounds its work
        options = {**options, "max_epochs": recipe.args.l2ul_max_epochs}
    return ob.unlearners.create(name, original, seed=seed, **options)


def run_seed(
    args: argparse.Namespace, train: Dataset, test: Dataset, holdout: Dataset | None, seed: int
) -> list[dict]:
    recipe = Recipe(args, tuple(train.X.shape[1:]), train.n_classes)
    recipe.n_train = len(train)
    log(f"seed {seed}: training the original ({len(train)} images, {args.device})")
    original, fit_seconds = train_original(recipe, train, seed)
    log(
        f"seed {seed}: original trained in {fit_seconds:.0f}s ({recipe.epochs} epochs), "
        f"train {ob.audit.accuracy(original, train):.4f}, test "
        f"{ob.audit.accuracy(original, test):.4f}"
    )
    rows = []
    for request, forget_ids in requests(train, seed, args.forget_class).items():
        if args.requests and request not in args.requests:
            continue
        if time.perf_counter() > args.deadline:
            log(f"--time-limit reached: {request} of seed {seed} and later cells not run")
            break
        forget = train.select(forget_ids)
        remaining = train.drop(forget_ids)
        pick = np.random.default_rng(seed).choice(
            len(remaining), min(args.retain_eval, len(remaining)), replace=False
        )
        retain = remaining.take(np.sort(pick))
        base = {"seed": seed, "request": request, "n_forget": len(forget)}
        log(f"seed {seed}, {request} ({len(forget)} records): retraining from scratch")
        start = time.perf_counter()
        reference = recipe.model(seed).fit(remaining)
        retrain_seconds = time.perf_counter() - start
        ref = scores(reference, forget, retain, test, seed)
        start = time.perf_counter()
        warm_epochs = min(args.warm_epochs, recipe.epochs)
        warm = recipe.model(seed).fit(remaining, init=original, epochs=warm_epochs)
        warm_seconds = time.perf_counter() - start
        before = scores(original, forget, retain, test, seed)
        log(
            f"seed {seed}, {request}: the original's own avg gap to retraining is "
            f"{avg_gap(before, ref):.2f} points (the bar every deletion method must beat)"
        )

        context = {
            "base": base,
            "reference": ref,
            "before": before,
            "retrain_seconds": retrain_seconds,
            "warm_seconds": warm_seconds,
        }

        def row(method: str, goal: str, own: dict, seconds: float, **extra: Any) -> dict:
            return _row(context, method, goal, own, seconds, **extra)  # noqa: B023

        rows.append(row("retrain", "deletion", ref, retrain_seconds))
        rows.append(
            row("retrain-warm", "deletion", scores(warm, forget, retain, test, seed), warm_seconds)
        )
        rows.append(row("no update", "deletion", before, float("nan")))
        registered = set(ob.unlearners.available())
        for method in args.methods:
            if method in ("retrain", "retrain-warm", "no update"):
                continue
            if method not in registered:
                if method not in args.reported_missing:
                    log(f"{method}: not registered in this oblivio, skipped")
                    args.reported_missing.add(method)
                continue
            if method == "l2ul" and len(forget_ids) > args.l2ul_max_records:
                # correction of a few records (it warns above 64): on a random 10 % or a
                # class of the 60,000-image CNN it would run for hours on a CPU
                log(
                    f"seed {seed}, {request}: l2ul skipped ({len(forget_ids)} records > "
                    f"--l2ul-max-records {args.l2ul_max_records})"
                )
                continue
            unlearner = make_unlearner(method, original, recipe, seed)
            goal = goal_of(unlearner)
            log(f"seed {seed}, {request}: {method} ({goal})")
            unlearner.attach(train, **reference_set(unlearner, holdout))  # the target
            result = unlearner.forget(Remove(ids=forget_ids))
            seconds = unlearner.prepare_seconds_ + result.seconds
            own = scores(unlearner.model_, forget, retain, test, seed)
            d = result.diagnostics
            kept = {f"diag_{k}": float(d[k]) for k in DIAGNOSTICS if k in d}
            rows.append(
                row(
                    method,
                    goal,
                    own,
                    seconds,
                    goal_reached=d.get("goal_reached", float("nan")),
                    **kept,
                )
            )
        args.flush(rows)
    return rows


def _row(c: dict, method: str, goal: str, own: dict, seconds: float, **extra: Any) -> dict:
    """One table row: the method's numbers, its avg gap, test drop and speed-ups."""
    return {
        **c["base"],
        "method": method,
        "goal": goal,
        **own,
        "avg_gap": avg_gap(own, c["reference"]),
        "test_drop": 100 * (c["before"]["accuracy_test"] - own["accuracy_test"]),
        "seconds": seconds,
        "speedup": c["retrain_seconds"] / seconds if seconds > 0 else float("nan"),
        "speedup_warm": c["warm_seconds"] / seconds if seconds > 0 else float("nan"),
        **extra,
    }


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| request | method | goal | forget | retain | test | MIA-eff | avg gap | test drop "
        "| seconds | × scratch | × warm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for request in dict.fromkeys(r["request"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            cell = [r for r in rows if r["request"] == request and r["method"] == method]
            if not cell:
                continue

            def mean(key: str, cell: list[dict] = cell) -> float:
                values = [r[key] for r in cell if r.get(key) is not None]
                return float(np.mean(values)) if values else float("nan")

            goal = cell[0]["goal"]
            gap = _fmt(mean("avg_gap"), ".2f")
            if goal == "correction":
                gap = f"({gap})"  # not its target: judged by forget acc -> 0 and test drop
            lines.append(
                f"| {request} | {method} | {goal} | {_fmt(100 * mean('accuracy_forget'), '.1f')} "
                f"| {_fmt(100 * mean('accuracy_retain'), '.1f')} "
                f"| {_fmt(100 * mean('accuracy_test'), '.1f')} "
                f"| {_fmt(100 * mean('mia_efficacy'), '.1f')} | {gap} "
                f"| {_fmt(mean('test_drop'), '.1f')} | {_fmt(mean('seconds'), '.1f')} "
                f"| {_fmt(mean('speedup'), '.1f')} | {_fmt(mean('speedup_warm'), '.1f')} |"
            )
    lines += [
        "",
        "Accuracies and MIA-efficacy in %; avg gap: mean |difference| to `retrain` over those "
        "four, in points (deletion's target: 0; `no update` is the bar to beat). Test drop: "
        "points of test accuracy lost against the original. `correction` rows (l2ul) aim at "
        "forget accuracy 0; their avg gap (in brackets) is not their target.",
    ]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(dict.fromkeys(r["request"] for r in rows), "osD^v", strict=False))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("retrain",)]
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(methods), 1)))
    # the axis fits the deletion rows: a correction row's gap (not its target; l2ul's can be
    # 60 points) is drawn at the top edge with its value, not allowed to flatten the rest
    deletion = [r["avg_gap"] for r in rows if r["goal"] != "correction"]
    top = 1.25 * max([g for g in deletion if np.isfinite(g)] or [1.0])
    for colour, method in zip(colours, methods, strict=False):
        for request, marker in markers.items():
            cell = [r for r in rows if r["method"] == method and r["request"] == request]
            speeds = [r["speedup"] for r in cell if np.isfinite(r["speedup"])]
            if not speeds:  # "no update" has no time: drawn as a dashed line instead
                continue
            speed = float(np.mean(speeds))
            gap = float(np.mean([r["avg_gap"] for r in cell]))
            label = method if request == next(iter(markers)) else None
            if gap > top:
                axis.annotate(
                    f"{gap:.1f} (off scale)",
                    (speed, 0.97 * top),
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
                gap = 0.97 * top
            if cell[0]["goal"] == "correction":  # hollow: the gap is not its target
                label = label and f"{label} (correction)"
                axis.scatter(
                    speed,
                    gap,
                    edgecolors=colour,
                    facecolors="none",
                    marker=marker,
                    s=40,
                    label=label,
                )
            else:
                axis.scatter(speed, gap, color=colour, marker=marker, s=40, label=label)
    for request in markers:
        cell = [r for r in rows if r["method"] == "no update" and r["request"] == request]
        if cell:
            axis.axhline(np.mean([r["avg_gap"] for r in cell]), color="grey", lw=0.8, ls="--")
    axis.set_ylim(0, top)
    axis.set_xscale("log")
    axis.set_xlabel("speed-up over retraining from scratch (log)")
    axis.set_ylabel("avg gap to retraining (points)")
    axis.set_title(
        "Neural deletion: " + ", ".join(f"{m} {r}" for r, m in markers.items()) + " (dashed: "
        "no update)"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def merge(sources: list[Path], out: Path) -> int:
    """One table, JSON and figure from the rows of several runs (e.g. seeds run side by side)."""
    rows: list[dict] = []
    headers = []
    for source in sources:
        path = source / "neural_deletion.json"
        if not path.is_file():
            raise SystemExit(f"--merge: {path} does not exist (did that run write anything?)")
        rows += json.loads(path.read_text())
        md = source / "neural_deletion.md"
        if md.is_file():
            headers.append(f"- `{source.name}`: {md.read_text().splitlines()[2]}")
    seeds = sorted({r["seed"] for r in rows})
    header = (
        f"# Neural deletion: Fashion-MNIST, SmallCNN\n\nMerged from {len(sources)} runs "
        f"(seeds {seeds}); means over seeds.\n\n" + "\n".join(headers)
    )
    text = table(rows, header)
    write_text(out / "neural_deletion.md", text)
    write_json(out / "neural_deletion.json", rows)
    write_bytes(out / "neural_deletion.png", figure(rows))
    print(text)
    log(f"written to {out}/neural_deletion.{{md,json,png}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="folder with the Fashion-MNIST IDX files (optional)")
    parser.add_argument("--n", type=int, help="training images (seeded subsample; default all)")
    parser.add_argument("--n-test", type=int, help="test images (default all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run: K, K+1, ...")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="only merge the neural_deletion.json of these runs into --out (no training)",
    )
    parser.add_argument(
        "--holdout",
        type=int,
        default=2000,
        help="test images set aside as the deletion methods' reference set (0: none)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="rows to run")
    parser.add_argument("--forget-class", type=int, default=0)
    parser.add_argument("--epoch-step", type=int, default=5, help="epochs added per check")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--memorise", type=float, default=0.99, help="training accuracy")
    parser.add_argument("--warm-epochs", type=int, default=2, help="warm-started retraining")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam, training the original")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--retain-eval", type=int, default=5000, help="retained records scored")
    parser.add_argument(
        "--l2ul-max-epochs", type=int, default=20, help="l2ul's cap (passes over D_adv)"
    )
    parser.add_argument(
        "--l2ul-max-records",
        type=int,
        default=1000,
        help="requests of more records skip l2ul (it corrects a few records)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="results/neural-deletion", help="output folder")
    parser.add_argument(
        "--requests",
        nargs="+",
        help="requests to run (default all: 'random 1%%', 'random 10%%', 'class K')",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=float("inf"),
        help="seconds after which no new request starts (the table so far is written)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge([Path(d) for d in args.merge], Path(args.out))
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    args.reported_missing = set()
    torch.set_num_threads(args.threads)
    split = ob.datasets.load("fashion-mnist", root=args.root, seed=0)
    train, test = split.train, split.test
    if args.n is not None and args.n < len(train):
        keep = np.random.default_rng(0).choice(len(train), args.n, replace=False)
        train = train.take(np.sort(keep))
    # A held-out reference set (records no model trained on) tells the deletion methods
    # where a retrained model's forget accuracy lands; it is cut from the test split and
    # never used to score anything.
    holdout = None
    if args.holdout > 0:
        if args.holdout >= len(test):
            parser.error(f"--holdout {args.holdout} leaves no test images (have {len(test)})")
        holdout = test.take(np.arange(args.holdout))
        test = test.take(np.arange(args.holdout, len(test)))
    if args.n_test is not None and args.n_test < len(test):
        test = test.take(np.arange(args.n_test))
    start = time.perf_counter()
    args.deadline = start + args.time_limit
    rows: list[dict] = []
    out = Path(args.out)

    def write(done: list[dict], *, final: bool = False) -> str:
        """The table, rows and figure so far (after every request: a run cut short by a
        time limit keeps what it measured)."""
        total = time.perf_counter() - start
        header = (
            f"# Neural deletion: Fashion-MNIST, SmallCNN\n\n{len(train)} training / "
            f"{len(test)} test images ({args.holdout} more as the reference set), "
            f"seed(s) {list(range(args.first_seed, args.first_seed + args.seeds))}, device "
            f"{args.device}, {total:.0f} s "
            f"{'in all' if final else 'so far (incomplete)'}; means over seeds."
        )
        text = table(done, header)
        write_text(out / "neural_deletion.md", text)
        write_json(out / "neural_deletion.json", done)
        write_bytes(out / "neural_deletion.png", figure(done))
        return text

    args.flush = lambda seed_rows: write(rows + seed_rows)
    with threadpool_limits(limits=args.threads):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if time.perf_counter() > args.deadline:
                break
            rows += run_seed(args, train, test, holdout, seed)
    print(write(rows, final=True))
    log(f"written to {out}/neural_deletion.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
