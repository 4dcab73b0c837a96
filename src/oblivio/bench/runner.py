"""Run every cell of a configuration, with caching, resumption and parallelism.

Each cell = (dataset, model, unlearner, request, seed). The runner trains the original
model and the retrained reference once per (dataset, model, request, seed) and caches both
on disk, times the unlearning uniformly (precomputation in ``fit``/``attach`` counted, see
``Unlearner.prepare_seconds_``), and appends one JSON line per finished cell to
``results.jsonl``. Cells already in that file are skipped, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from oblivio._io import write_json
from oblivio.bench.config import Cell, Config, DatasetSpec, ModelSpec, RequestSpec
from oblivio.data import Dataset, Relabel, Remove, ReplaceFeatures, Request, Split

RESULTS_FILE = "results.jsonl"

_DATA_CACHE: dict[str, Split] = {}


def load_dataset(spec: DatasetSpec) -> Split:
    """Load (and memoise within this process) the dataset a spec names."""
    from oblivio import datasets

    key = json.dumps([spec.name, spec.options], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = datasets.load(spec.name, **spec.options)
    return _DATA_CACHE[key]


def build_model(spec: ModelSpec, train: Dataset, seed: int) -> Any:
    """A fresh, untrained model for ``train`` as the spec describes."""
    from oblivio import models

    options = dict(spec.options)
    if spec.kind == "logistic":
        return models.LogisticRegression(**options)
    hidden = tuple(options.pop("hidden", (64,)))
    options.setdefault("seed", seed)
    if spec.kind == "mlp":
        module = models.MLP(train.n_features, hidden=hidden, n_classes=train.n_classes)
    else:
        shape = train.X.shape[1:]
        if len(shape) != 3:
            raise ValueError(
                f"model kind 'cnn' needs image data (n, c, h, w), got X {train.X.shape}"
            )
        module = models.SmallCNN(
            in_channels=shape[0], image_size=shape[1], n_classes=train.n_classes
        )
    return models.TorchModel(module, **options)


class Scenario:
    """The training set the original model sees and the requests made of it."""

    def __init__(self, train: Dataset, requests: list[Request], forget_ids: np.ndarray) -> None:
        self.train = train
        self.requests = requests
        self.forget_ids = forget_ids

    def final_training_set(self) -> Dataset:
        data = self.train
        for request in self.requests:
            data = request.resolve(data).result
        return data


def _size(spec: RequestSpec, n: int) -> int:
    if spec.count is not None:
        return min(spec.count, n - 1)
    return max(1, min(int(round(spec.fraction * n)), n - 1))


def make_scenario(spec: RequestSpec, train: Dataset, seed: int) -> Scenario:
    """Turn a request spec into concrete requests on ``train`` (seeded)."""
    rng = np.random.default_rng(seed)
    if spec.kind == "remove":
        ids = rng.choice(train.ids, size=_size(spec, len(train)), replace=False)
        return Scenario(train, [Remove(ids=ids)], ids)
    if spec.kind == "sequence":
        ids = rng.choice(train.ids, size=_size(spec, len(train)), replace=False)
        requests = [Remove(ids=ids[i : i + spec.batch]) for i in range(0, len(ids), spec.batch)]
        return Scenario(train, requests, ids)
    if spec.kind == "remove-class":
        if not 0 <= spec.class_ < train.n_classes:
            raise ValueError(f"class {spec.class_} is not a label of {train.name!r}")
        ids = train.ids[train.y == spec.class_]
        return Scenario(train, [Remove(ids=ids)], ids)
    if spec.kind == "features":
        if spec.features:
            features = list(spec.features)
        else:
            X = train.X
            counts = np.asarray((X != 0).sum(axis=0)).ravel()
            features = [int(f) for f in np.argsort(-counts, kind="stable")[: spec.count or 1]]
        request = ReplaceFeatures(features=features)
        return Scenario(train, [request], request.resolve(train).ids)
    # relabel: poison k labels (to another class), then ask to restore the true ones.
    ids = rng.choice(train.ids, size=_size(spec, len(train)), replace=False)
    true_labels = train.select(ids).y
    shift = rng.integers(1, train.n_classes, size=len(ids))
    poisoned = train.update(ids, y=(true_labels + shift) % train.n_classes)
    return Scenario(poisoned, [Relabel(ids=ids, labels=true_labels)], ids)


def _digest(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(handle)
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def _cached_fit(
    cache: Path, key: Any, model: Any, data: Dataset, init: Any = None
) -> tuple[Any, float]:
    """Fit ``model`` on ``data`` unless a cached state exists; return (model, fit seconds)."""
    path = cache / f"{_digest(key)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as archive:
            state = {k: archive[k] for k in archive.files if k not in ("__seconds__", "__meta__")}
            seconds = float(archive["__seconds__"])
            state["__meta__"] = json.loads(str(archive["__meta__"]))
        model.set_state(state)
        return model, seconds
    start = time.perf_counter()
    model.fit(data, init=init)
    seconds = time.perf_counter() - start
    state = model.get_state()
    meta = state.pop("__meta__", {})
    arrays = {k: np.asarray(v) for k, v in state.items()}
    arrays["__seconds__"] = np.asarray(seconds)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    _atomic_savez(path, arrays)
    return model, seconds


def goal_of(unlearner: Any) -> str:
    """The goal a method instance serves: ``"deletion"`` (be where retraining is) or
    ``"correction"`` (stop predicting the original labels, as L2UL).

    Neural methods declare ``goals`` (class) and ``goal`` (instance); every other method
    (exact, influence, certified) deletes.
    """
    goal = getattr(unlearner, "goal", None)
    if goal is None:
        goals = tuple(getattr(type(unlearner), "goals", ()))
        goal = goals[0] if len(goals) == 1 else "deletion"
    return str(goal)


def reference_set(unlearner: Any, holdout: Dataset | None) -> dict[str, Dataset]:
    """``{"holdout": holdout}`` for ``fit``/``attach`` of an unlearner that takes a
    reference set (the neural deletion methods: it sets their target), else ``{}``."""
    if holdout is None or "holdout" not in inspect.signature(unlearner.attach).parameters:
        return {}
    return {"holdout": holdout}


def method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A method's options for a harness cell: one that serves both goals and is not told
    which (``goal=``) runs on deletion, what a removal request asks of it."""
    from oblivio import unlearners

    goals = tuple(getattr(unlearners.get(name), "goals", ()))
    if "deletion" in goals and len(goals) > 1 and "goal" not in options:
        return {**options, "goal": "deletion"}
    return dict(options)


#: The four numbers of the field's "avg gap" (Fan et al., SalUn, ICLR 2024; Jia et al.,
#: NeurIPS 2023): accuracy on forget / retain / test records and MIA-efficacy.
AVG_GAP_KEYS = ("acc_forget", "acc_retain", "acc_test", "mia_efficacy")


def avg_gap(own: dict[str, float], reference: dict[str, float]) -> float:
    """:func:`oblivio.audit.evaluate.avg_gap` over the harness's names (:data:`AVG_GAP_KEYS`)."""
    from oblivio.audit.evaluate import avg_gap as gap

    return gap(own, reference, AVG_GAP_KEYS)


def _mia_efficacy(model: Any, forget: Dataset, retain: Dataset, test: Dataset, seed: int) -> float:
    from oblivio.audit.mia import mia_efficacy

    try:
        return mia_efficacy(
            model, retain=retain, test=test, forget=forget, seed=seed, max_shadow=2000
        ).efficacy
    except ValueError:  # too few records, or outputs that overflowed
        return float("nan")


def _record_losses(model: Any, data: Dataset) -> np.ndarray:
    from oblivio.audit.mia import per_record_loss, posteriors

    return per_record_loss(posteriors(model, data.X), data.y)


def loss_mia(model: Any, members: Dataset, non_members: Dataset) -> dict[str, Any]:
    """Loss-threshold membership inference (Yeom et al., CSF 2018) on members vs non-members.

    Score = −loss; AUC 0.5 means the forget set looks like unseen data.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(members) == 0 or len(non_members) == 0:
        return {"auc": float("nan"), "fpr": [], "tpr": []}
    scores = -np.concatenate([_record_losses(model, members), _record_losses(model, non_members)])
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    fpr, tpr, _ = roc_curve(labels, scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 60)).astype(int))
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "fpr": [round(float(v), 5) for v in fpr[keep]],
        "tpr": [round(float(v), 5) for v in tpr[keep]],
    }


def run_cell(cell: Cell, out: Path, mia: bool = True) -> dict[str, Any]:
    """Run one cell and return its record (does not write it)."""
    import torch

    from oblivio import audit, unlearners

    torch.set_num_threads(1)
    split = load_dataset(cell.dataset)
    test, holdout = split.test, None
    if cell.dataset.holdout:
        # the same records for every cell of the data set, so methods compare on one test set
        order = np.random.default_rng(0).permutation(len(test))
        k = min(len(test) - 1, max(1, round(cell.dataset.holdout * len(test))))
        holdout, test = test.take(np.sort(order[:k])), test.take(np.sort(order[k:]))
    scenario = make_scenario(cell.request, split.train, cell.seed)
    final = scenario.final_training_set()
    cache = out / "cache"
    base_key = [asdict(cell.dataset), asdict(cell.model), cell.seed]
    scenario_key = base_key + [asdict(cell.request)]

    def fresh() -> Any:
        return build_model(cell.model, scenario.train, cell.seed)

    # Only label poisoning changes the data the original model is trained on.
    poison = asdict(cell.request) if cell.request.kind == "relabel" else None
    original_key = base_key + ["original", poison]
    original, _ = _cached_fit(cache / "originals", original_key, fresh(), scenario.train)
    reference, retrain_seconds = _cached_fit(
        cache / "references", scenario_key + ["reference"], fresh(), final
    )
    _, warm_seconds = _cached_fit(
        cache / "references", scenario_key + ["warm"], fresh(), final, init=original.theta
    )

    options = method_options(cell.unlearner.name, cell.unlearner.options)
    unlearner = unlearners.create(cell.unlearner.name, fresh(), **options)
    reference_records = reference_set(unlearner, holdout)
    if unlearner.requires_fit:
        unlearner.fit(scenario.train, **reference_records)
    else:
        unlearner.model = original
        try:
            unlearner.attach(scenario.train, **reference_records)
        except ValueError:
            # e.g. certified removal refuses a model trained without loss perturbation:
            # such methods train their own model (not counted as unlearning time).
            unlearner.model = fresh()
            unlearner.fit(scenario.train, **reference_records)
    seconds = unlearner.prepare_seconds_
    budget_trace = []
    results = []
    for request in scenario.requests:
        result = unlearner.forget(request)
        results.append(result)
        seconds += result.seconds
        if result.certificate is not None:
            budget_trace.append(
                {
                    "used": result.certificate.budget_used,
                    "total": result.certificate.budget_total,
                    "retrained": result.retrained,
                }
            )
    model = unlearner.model_
    forget = (
        final.select(scenario.forget_ids)
        if cell.request.kind in ("relabel", "features")
        else split.train.select(scenario.forget_ids)
    )
    forget_ids = set(scenario.forget_ids.tolist())
    retain = final.take(np.flatnonzero([i not in forget_ids for i in final.ids.tolist()]))

    def scores(candidate: Any) -> dict[str, float]:
        return {
            "acc_forget": audit.accuracy(candidate, forget),
            "acc_retain": audit.accuracy(candidate, retain),
            "acc_test": audit.accuracy(candidate, test),
        }

    own, ref = scores(model), scores(reference)
    if mia:
        own["mia_efficacy"] = _mia_efficacy(model, forget, retain, test, cell.seed)
        ref["mia_efficacy"] = _mia_efficacy(reference, forget, retain, test, cell.seed)
    goal = goal_of(unlearner)
    original_test = audit.accuracy(original, test)
    record: dict[str, Any] = {
        "cell": cell.key,
        "dataset": cell.dataset.key,
        "model": cell.model.name,
        "method": cell.unlearner.key,
        "unlearner": cell.unlearner.name,
        "goal": goal,
        "options": cell.unlearner.options,
        "request": cell.request.key,
        "request_kind": cell.request.kind,
        "seed": cell.seed,
        "n_train": len(scenario.train),
        "n_holdout": len(reference_records.get("holdout") or ()),
        "n_affected": int(sum(r.n_affected for r in results)),
        "n_requests": len(results),
        "seconds": seconds,
        "retrain_seconds": retrain_seconds,
        "warm_retrain_seconds": warm_seconds,
        # honouring each request of a sequence by retraining costs one retrain per request
        "speedup": len(results) * retrain_seconds / max(seconds, 1e-9),
        "speedup_vs_warm": len(results) * warm_seconds / max(seconds, 1e-9),
        "exact": all(r.exact for r in results),
        "retrained": any(r.retrained for r in results),
        **own,
        **{f"ref_{k}": v for k, v in ref.items()},
        "gap_forget": abs(own["acc_forget"] - ref["acc_forget"]),
        "gap_test": abs(own["acc_test"] - ref["acc_test"]),
        # deletion is judged by the avg gap, correction by forget accuracy -> 0 and this drop
        "avg_gap": avg_gap(own, ref),
        "acc_test_original": original_test,
        "test_drop": 100 * (original_test - own["acc_test"]),
        "agreement": audit.agreement(model, reference, test),
        "diagnostics": {k: v for r in results for k, v in r.diagnostics.items()},
        "budget_trace": budget_trace,
    }
    try:
        record["distance"] = audit.param_distance(model, reference)
        record["distance_original"] = audit.param_distance(original, reference)
    except (ValueError, AttributeError):
        record["distance"] = record["distance_original"] = float("nan")
    certificate = results[-1].certificate if results else None
    record["certificate"] = asdict(certificate) if certificate is not None else None
    if mia:
        own_mia = loss_mia(model, forget, test)
        ref_mia = loss_mia(reference, forget, test)
        record.update(
            mia_auc=own_mia["auc"],
            ref_mia_auc=ref_mia["auc"],
            gap_mia=abs(own_mia["auc"] - ref_mia["auc"]),
            roc={"fpr": own_mia["fpr"], "tpr": own_mia["tpr"]},
        )
    return record


def environment() -> dict[str, Any]:
    """Versions and hardware, stored beside the results."""
    import scipy
    import sklearn
    import torch

    import oblivio

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "oblivio": oblivio.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_records(out: str | Path) -> list[dict[str, Any]]:
    """Records in ``out/results.jsonl`` (a torn last line from a crash is ignored)."""
    path = Path(out) / RESULTS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append_record(out: Path, record: dict[str, Any]) -> None:
    with open(out / RESULTS_FILE, "a") as handle:
        handle.write(json.dumps(record, default=float) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _check_same_experiment(config: Config, out: Path) -> None:
    """Refuse to mix another configuration's cells into ``out``; warn when an edited
    configuration leaves records of cells it no longer has (resuming stays possible).

    Raises
    ------
    ValueError
        When ``out`` already holds results of a configuration with another name.
    """
    stored_path = out / "config.json"
    records = read_records(out)
    if not records or not stored_path.is_file():
        return
    try:
        stored = json.loads(stored_path.read_text())
    except (OSError, json.JSONDecodeError):
        stored = {}
    previous = stored.get("name")
    if previous != config.name:
        raise ValueError(
            f"{out} holds {len(records)} results of configuration {previous!r}; running "
            f"{config.name!r} there would mix their cells in one table. Use another --out "
            "folder (or remove this one to start over)."
        )
    current = {cell.key for cell in config.cells()}
    stale = sorted({r["cell"] for r in records} - current)
    if stale:
        warnings.warn(
            f"{out}: {len(stale)} earlier result(s) of {config.name!r} belong to cells this "
            f"version of the configuration no longer has (e.g. {stale[0]}); they stay in "
            "results.jsonl and in its report",
            UserWarning,
            stacklevel=3,
        )


def run_config(
    config: Config,
    out: str | Path,
    *,
    n_jobs: int = 1,
    backend: str = "loky",
    scheduler: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell not yet in ``out/results.jsonl``; return all records.

    Parameters
    ----------
    n_jobs : int
        Cells run in parallel (joblib); ``-1`` uses every core.
    backend : {"loky", "dask"}
        ``"dask"`` sends cells to a ``dask.distributed`` cluster at ``scheduler`` (or a
        local cluster when ``scheduler`` is None).
    progress : callable, optional
        Called as ``progress(done, total, cell_key)`` after each cell.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_experiment(config, out)
    write_json(out / "config.json", config.to_dict())
    write_json(out / "environment.json", environment())
    done_keys = {record["cell"] for record in read_records(out)}
    cells = config.cells()
    pending = [cell for cell in cells if cell.key not in done_keys]
    done = len(cells) - len(pending)
    if progress:
        progress(done, len(cells), "")
    if backend not in ("loky", "dask"):
        raise ValueError(f"backend must be 'loky' or 'dask', got {backend!r}")
    if n_jobs == 1 and backend == "loky":
        for cell in pending:
            _append_record(out, run_cell(cell, out, mia=config.audit.mia))
            done += 1
            if progress:
                progress(done, len(cells), cell.key)
    else:
        import joblib

        client = cluster = None
        if backend == "dask":
            from dask.distributed import Client, LocalCluster

            if scheduler is None:
                cluster = LocalCluster(
                    n_workers=max(n_jobs, 1), threads_per_worker=1, dashboard_address=None
                )
                client = Client(cluster)
            else:
                client = Client(scheduler)
        try:
            with joblib.parallel_backend(backend if backend == "dask" else "loky"):
                stream = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                    joblib.delayed(run_cell)(cell, out, config.audit.mia) for cell in pending
                )
                for record in stream:
                    _append_record(out, record)
                    done += 1
                    if progress:
                        progress(done, len(cells), record["cell"])
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
    return read_records(out)
