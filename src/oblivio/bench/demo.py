"""The quick built-in benchmark behind ``oblivio demo``.

Trains models on bundled data (scikit-learn's digits), forgets a few records with every
registered unlearner, and compares each with exact retraining on the same request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oblivio import audit, datasets, unlearners
from oblivio.data import Dataset, Remove
from oblivio.models.base import Model

# Options a method needs to run sensibly in the demo (defaults elsewhere).
LINEAR_OPTIONS: dict[str, dict[str, Any]] = {
    "certified": {"epsilon": 1.0, "delta": 1e-4, "sigma": 0.1, "seed": 0},
    "sisa": {"shards": 5, "seed": 0},
}
NEURAL_OPTIONS: dict[str, dict[str, Any]] = {
    "sisa": {"shards": 3, "seed": 0},
}
# Methods that only apply to one model family.
LINEAR_ONLY = {"certified"}
NEURAL_ONLY = {"l2ul", "finetune", "gradient-ascent", "random-labels"}


@dataclass
class DemoRow:
    """One line of the demo table."""

    setting: str
    method: str
    seconds: float
    speedup: float
    test_accuracy: float
    forget_accuracy: float
    distance: float
    agreement: float
    note: str = ""


def _linear_model() -> Model:
    from oblivio.models import LogisticRegression

    return LogisticRegression(l2=1e-3)


def _neural_model() -> Model | None:
    try:
        from oblivio.models import MLP, TorchModel
    except ImportError:
        return None
    return TorchModel(
        MLP(64, hidden=(32,), n_classes=10), epochs=30, batch_size=64, lr=3e-3, seed=0
    )


def _run_setting(
    setting: str,
    make_model: Callable[[], Model],
    train: Dataset,
    test: Dataset,
    forget_ids: np.ndarray,
    methods: list[str],
    options: dict[str, dict[str, Any]],
    progress: Callable[[str], None],
) -> list[DemoRow]:
    rows: list[DemoRow] = []
    forget = train.select(forget_ids)
    request = Remove(ids=forget_ids)
    progress(f"{setting}: training the original model")
    original = make_model().fit(train)
    progress(f"{setting}: retraining without {len(forget_ids)} records (the reference)")
    start = time.perf_counter()
    reference = make_model().fit(train.drop(forget_ids))
    retrain_seconds = time.perf_counter() - start
    for name in methods:
        progress(f"{setting}: {name}")
        try:
            unlearner = unlearners.create(name, make_model(), **options.get(name, {}))
            if _fits_its_own_model(name):
                unlearner.fit(train)
            else:
                unlearner.model = original
                unlearner.attach(train)
            result = unlearner.forget(request)
        except Exception as error:  # a demo shows every method, even one that fails here
            rows.append(
                DemoRow(setting, name, *([float("nan")] * 6), note=f"error: {error}"[:80])
            )
            continue
        model = unlearner.model_
        own_reference = reference
        note = "exact" if result.exact else ""
        if result.certificate is not None:
            note = f"certified, budget {result.certificate.budget_used:.2g}/{result.certificate.budget_total:.2g}"
        if _fits_its_own_model(name):
            # Methods that train their own kind of model are compared with themselves
            # refitted from scratch (e.g. SISA's ensemble, certified's noisy objective).
            own_reference = unlearners.create(name, make_model(), **options.get(name, {}))
            own_reference = own_reference.fit(train.drop(forget_ids)).model_
        try:
            distance = audit.param_distance(model, own_reference)
        except (ValueError, AttributeError):
            distance = float("nan")
        rows.append(
            DemoRow(
                setting=setting,
                method=name,
                seconds=result.seconds,
                speedup=retrain_seconds / max(result.seconds, 1e-9),
                test_accuracy=audit.accuracy(model, test),
                forget_accuracy=audit.accuracy(model, forget),
                distance=distance,
                agreement=audit.agreement(model, reference, test),
                note=note,
            )
        )
    return rows


def _fits_its_own_model(name: str) -> bool:
    """Methods whose model differs from a plain fit (noise, ensembles) must train it."""
    return name in ("certified", "sisa")


def run_demo(progress: Callable[[str], None] | None = None, n_forget: int = 10) -> list[DemoRow]:
    """Run the demo and return its table rows.

    Setting "linear": L2-regularised logistic regression on digits (rows scaled to unit
    norm, 10 classes). Setting "neural": a small MLP on the same data. In each, ``n_forget``
    random training records are removed by every registered method; speed-up and distance
    are relative to retraining from scratch on the same request.
    """
    progress = progress or (lambda message: None)
    split = datasets.load("digits", normalize="l2", seed=0)
    train, test = split.train, split.test
    rng = np.random.default_rng(0)
    forget_ids = rng.choice(train.ids, size=n_forget, replace=False)
    names = unlearners.available()
    rows = _run_setting(
        "linear",
        _linear_model,
        train,
        test,
        forget_ids,
        [n for n in names if n not in NEURAL_ONLY],
        LINEAR_OPTIONS,
        progress,
    )
    if _neural_model() is not None:
        rows += _run_setting(
            "neural",
            _neural_model,
            train,
            test,
            forget_ids,
            [n for n in names if n not in LINEAR_ONLY],
            NEURAL_OPTIONS,
            progress,
        )
    return rows


def rows_as_dicts(rows: list[DemoRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
