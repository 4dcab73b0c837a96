"""Loaders of the data sets bundled with scikit-learn: ``digits`` and ``breast-cancer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oblivio.data._registry import random_split, register_loader
from oblivio.data.dataset import Split


@register_loader("digits", "scikit-learn's 8x8 handwritten digits (1,797 x 64, bundled)")
def _load_digits(root: Path | None, seed: int | None) -> Split:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return random_split(
        bunch.data.astype(np.float64),
        bunch.target.astype(np.int64),
        test_size=0.25,
        seed=seed,
        name="digits",
        classes=[int(c) for c in bunch.target_names],
        feature_names=bunch.feature_names,
    )


@register_loader("breast-cancer", "scikit-learn's Wisconsin breast cancer (569 x 30, bundled)")
def _load_breast_cancer(root: Path | None, seed: int | None) -> Split:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return random_split(
        bunch.data.astype(np.float64),
        bunch.target.astype(np.int64),
        test_size=0.25,
        seed=seed,
        name="breast-cancer",
        classes=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
    )
