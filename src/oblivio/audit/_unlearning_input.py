"""The unlearning attack's rows: posteriors of original and unlearned models.

:class:`UnlearningAttackInput` holds (P_o, P_u, label) rows of the shadow and target sides
(validation, defences, JSON ``save``/``load``); :func:`collect_posteriors` trains the original
models, unlearns with a registered unlearner and queries both (Chen et al., CCS 2021,
Sec. 4). The public names are re-exported by :mod:`oblivio.audit.unlearning_attack`.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oblivio._io import write_json
from oblivio.audit._constants import SETTINGS
from oblivio.audit._mia_data import _read_json
from oblivio.audit._mia_scores import posteriors
from oblivio.audit._unlearning_defenses import Defense
from oblivio.data import Dataset, Remove, Replace


# -- input ----------------------------------------------------------------------------------
@dataclass
class UnlearningAttackInput:
    """Posteriors of original and unlearned models on the shadow and target sides.

    Each row is one query record x with its posterior under the original model,
    ``P_o = M_o(x)``, under the unlearned model, ``P_u = M_u(x)``, and a label: 1 when x was
    deleted (positive), 0 when x was never trained on (negative).

    Attributes
    ----------
    shadow_original, shadow_unlearned : ndarray of shape (n_shadow, C)
        P_o and P_u of the shadow rows (attack training data).
    shadow_labels : ndarray of shape (n_shadow,)
        0/1 labels of the shadow rows.
    target_original, target_unlearned : ndarray of shape (n_target, C)
        P_o and P_u of the target rows (attack evaluation data).
    target_labels : ndarray of shape (n_target,)
        0/1 labels of the target rows.
    shadow_groups, target_groups : ndarray of shape (n,), optional
        Index of the (original, unlearned) model pair each row came from.
    metadata : dict
        How the rows were made (setting, seeds, sizes, unlearner, timings).
    """

    shadow_original: np.ndarray
    shadow_unlearned: np.ndarray
    shadow_labels: np.ndarray
    target_original: np.ndarray
    target_unlearned: np.ndarray
    target_labels: np.ndarray
    shadow_groups: np.ndarray | None = None
    target_groups: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(np.shape(self.shadow_original)[1])

    def validate(self) -> UnlearningAttackInput:
        """Check shapes and values; raise ``ValueError`` naming the problem. Returns self."""
        C = None
        for side in ("shadow", "target"):
            p_o = np.asarray(getattr(self, f"{side}_original"), dtype=np.float64)
            p_u = np.asarray(getattr(self, f"{side}_unlearned"), dtype=np.float64)
            labels = np.asarray(getattr(self, f"{side}_labels"))
            if p_o.ndim != 2 or p_o.shape != p_u.shape:
                raise ValueError(
                    f"{side}_original and {side}_unlearned must be (n, C) arrays of equal "
                    f"shape, got {p_o.shape} and {p_u.shape}"
                )
            if C is not None and p_o.shape[1] != C:
                raise ValueError(f"shadow posteriors have {C} classes, target {p_o.shape[1]}")
            C = p_o.shape[1]
            if C < 2:
                raise ValueError(f"posteriors need at least 2 classes, got {C}")
            if labels.shape != (p_o.shape[0],):
                raise ValueError(
                    f"{side}_labels must have shape ({p_o.shape[0]},), got {labels.shape}"
                )
            values = set(np.unique(labels).tolist())
            if values != {0, 1}:
                raise ValueError(
                    f"{side}_labels must contain both 0 (never trained on) and 1 (deleted), "
                    f"got {sorted(values)}"
                )
            for name, P in (("original", p_o), ("unlearned", p_u)):
                if not np.all(np.isfinite(P)) or P.min() < 0:
                    raise ValueError(f"{side}_{name} must be finite and non-negative")
                worst = float(np.max(np.abs(P.sum(axis=1) - 1.0)))
                if worst > 1e-4:
                    raise ValueError(f"rows of {side}_{name} must sum to 1 (off by {worst:g})")
            groups = getattr(self, f"{side}_groups")
            if groups is not None and np.shape(groups) != (p_o.shape[0],):
                raise ValueError(f"{side}_groups must have shape ({p_o.shape[0]},)")
        return self

    def side(self, name: str, defense: Defense | None = None) -> tuple[np.ndarray, ...]:
        """(P_o, P_u, labels) of ``name`` (``"shadow"``/``"target"``) after ``defense``."""
        defense = Defense() if defense is None else defense
        return (
            defense.apply(getattr(self, f"{name}_original")),
            defense.apply(getattr(self, f"{name}_unlearned")),
            np.asarray(getattr(self, f"{name}_labels"), dtype=np.int64),
        )

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            payload[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return payload

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically), so an attack can be re-run without retraining."""
        return write_json(path, {"kind": "UnlearningAttackInput", **self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> UnlearningAttackInput:
        payload = _read_json(path)
        if payload.pop("kind", None) != "UnlearningAttackInput":
            raise ValueError(f"{path} does not hold an UnlearningAttackInput")
        for key in cls.__dataclass_fields__:
            if key != "metadata" and payload.get(key) is not None:
                payload[key] = np.asarray(payload[key])
        return cls(**payload)


# -- collecting posteriors ------------------------------------------------------------------
def _side_pools(positions: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """80/20 positive/negative pools, then 85/15 negative/replacement (reference Sec. 2)."""
    order = rng.permutation(positions)
    n_neg = int(round(0.2 * len(order)))
    positive, negative = order[: len(order) - n_neg], order[len(order) - n_neg :]
    n_replace = int(round(0.15 * len(negative)))
    return {
        "positive": positive,
        "negative": negative[: len(negative) - n_replace],
        "replace": negative[len(negative) - n_replace :],
    }


def collect_posteriors(
    data: Dataset,
    model: Any,
    *,
    unlearner: str = "retrain",
    unlearner_options: dict[str, Any] | None = None,
    setting: str = "in_out",
    n_original: int = 10,
    set_size: int = 2000,
    n_unlearn: int = 20,
    n_delete: int = 1,
    distinct_deletions: bool | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> UnlearningAttackInput:
    """Train original and unlearned models on both sides and query them (Chen et al., Sec. 4).

    ``data`` is split at random into a shadow half and a target half. On each side, 80 % of
    the records form the positive pool (training candidates) and 20 % the negative pool
    (never trained on), of which 15 % are reserved as replacements for the online setting.
    Then, ``n_original`` times: an original training set S of ``set_size`` records is drawn
    from the positive pool and the unlearner is fitted on it (``M_o``); ``n_unlearn`` times,
    a deletion set U of ``n_delete`` records of S is drawn and a deep copy of the fitted
    unlearner forgets it (``M_u``). The queried records depend on ``setting``:

    ============== =================================================================================
    ``in_out``     every x in U (label 1); single deletion for ``n_delete=1``, group deletion with
                   one row per deleted record otherwise
    ``multi_version`` one record of U at random (M_u misses several records; intermediate
                   versions unobserved); use ``n_delete > 1``
    ``in_in``      one record of S \\ U (remaining sample, in both training sets)
    ``online``     as ``in_out``, but M_u also learns ``n_delete`` new records from the
                   replacement pool (one out, one in: a :class:`~oblivio.Replace` request)
    ``null``       a control: U is deleted as in ``in_out``, but the "positive" rows are
                   records that were never trained on; any attack should give AUC ~ 0.5
    ============== =================================================================================

    Each positive row is paired with a negative row: a record of the negative pool, drawn with
    replacement (without replacement when ``distinct_deletions``). ``distinct_deletions``
    (default: True for ``"sisa"``, as in the reference) also makes the ``n_unlearn`` deletion
    sets of one original model disjoint.

    Every random choice is seeded from ``seed`` (the original code's per-model and negative
    sampling was not, pitfall 11); posteriors are queried without augmentation and defences
    are applied later, to every posterior (:func:`run_unlearning_attack`).

    Parameters
    ----------
    data : Dataset
        All N records (shadow and target sides are halves of it).
    model : model
        Template of the original models (an oblivio model or a
        :class:`~oblivio.models.SklearnModel`).
    unlearner : str
        A registered unlearner name (``oblivio.unlearners.available()``), e.g. ``"retrain"``
        or ``"sisa"``.
    unlearner_options : dict, optional
        Options for ``oblivio.unlearners.create`` (e.g. ``{"shards": 10, "seed": 0}``).
    setting : str
        One of :data:`SETTINGS`.
    n_original, set_size, n_unlearn, n_delete : int
        Original models per side, their training-set size, unlearned models per original
        model, records deleted per unlearned model (reference defaults 10, 2000, 20, 1).
    distinct_deletions : bool, optional
        See above.
    seed : int
        Seed of every random choice.
    progress : callable, optional
        ``progress(side, done, total)`` after each original model.

    Returns
    -------
    UnlearningAttackInput
    """
    from oblivio.unlearners import create

    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    for name, value in (
        ("n_original", n_original),
        ("set_size", set_size),
        ("n_unlearn", n_unlearn),
        ("n_delete", n_delete),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if n_delete >= set_size:
        raise ValueError(f"n_delete={n_delete} must be smaller than set_size={set_size}")
    if setting == "in_in" and n_delete >= set_size - 1:
        raise ValueError("in_in needs records left in S \\ U: lower n_delete")
    options = dict(unlearner_options or {})
    if distinct_deletions is None:
        distinct_deletions = unlearner == "sisa"
    if distinct_deletions and n_unlearn * n_delete > set_size:
        raise ValueError(
            f"{n_unlearn} disjoint deletion sets of {n_delete} records need "
            f"set_size >= {n_unlearn * n_delete}, got {set_size}"
        )
    n_classes = data.n_classes
    root = np.random.SeedSequence(seed)
    split_rng = np.random.default_rng(root.spawn(1)[0])
    order = split_rng.permutation(len(data))
    halves = {"shadow": order[: len(order) // 2], "target": order[len(order) // 2 :]}
    side_seeds = dict(zip(("shadow", "target"), root.spawn(3)[1:], strict=True))
    out: dict[str, dict[str, list]] = {}
    start = time.perf_counter()
    fit_seconds = forget_seconds = 0.0
    for side, positions in halves.items():
        rng = np.random.default_rng(side_seeds[side])
        pools = _side_pools(positions, rng)
        if set_size > len(pools["positive"]):
            raise ValueError(
                f"set_size={set_size} exceeds the {len(pools['positive'])} records of the "
                f"{side} positive pool (80 % of half of {len(data)} records)"
            )
        if setting == "online" and len(pools["replace"]) < n_delete:
            raise ValueError(
                f"the {side} replacement pool has only {len(pools['replace'])} records"
            )
        rows = {"original": [], "unlearned": [], "labels": [], "groups": []}
        group = 0
        for i in range(n_original):
            S = rng.choice(pools["positive"], set_size, replace=False)
            fitted = create(unlearner, model, **options)
            tick = time.perf_counter()
            fitted.fit(data.take(S))
            fit_seconds += time.perf_counter() - tick
            deletion_order = rng.permutation(S)
            negatives_left = rng.permutation(pools["negative"])
            for j in range(n_unlearn):
                if distinct_deletions:
                    U = deletion_order[j * n_delete : (j + 1) * n_delete]
                else:
                    U = rng.choice(S, n_delete, replace=False)
                ids = data.ids[U]
                if setting == "online":
                    R = rng.choice(pools["replace"], n_delete, replace=False)
                    request = Replace(ids=ids, X=data.X[R], y=data.y[R])
                else:
                    request = Remove(ids=ids)
                unlearned = copy.deepcopy(fitted)
                tick = time.perf_counter()
                unlearned.forget(request)
                forget_seconds += time.perf_counter() - tick
                if setting in ("in_out", "online"):
                    positives = U
                elif setting == "multi_version":
                    positives = rng.choice(U, 1)
                elif setting == "in_in":
                    positives = rng.choice(np.setdiff1d(S, U), 1)
                else:  # null: "deleted" rows that were never in training
                    positives = rng.choice(pools["negative"], len(U), replace=True)
                k = len(positives)
                if distinct_deletions:
                    if len(negatives_left) < k:
                        negatives_left = rng.permutation(pools["negative"])
                    negatives, negatives_left = negatives_left[:k], negatives_left[k:]
                else:
                    negatives = rng.choice(pools["negative"], k, replace=True)
                query = np.concatenate([positives, negatives])
                X = data.X[query]
                rows["original"].append(posteriors(fitted.model_, X, n_classes))
                rows["unlearned"].append(posteriors(unlearned.model_, X, n_classes))
                rows["labels"].append(np.r_[np.ones(k), np.zeros(k)].astype(np.int64))
                rows["groups"].append(np.full(2 * k, group))
                group += 1
            if progress is not None:
                progress(side, i + 1, n_original)
        out[side] = {key: np.concatenate(value) for key, value in rows.items()}
    result = UnlearningAttackInput(
        shadow_original=out["shadow"]["original"],
        shadow_unlearned=out["shadow"]["unlearned"],
        shadow_labels=out["shadow"]["labels"],
        target_original=out["target"]["original"],
        target_unlearned=out["target"]["unlearned"],
        target_labels=out["target"]["labels"],
        shadow_groups=out["shadow"]["groups"],
        target_groups=out["target"]["groups"],
        metadata={
            "dataset": data.name,
            "n_records": len(data),
            "model": repr(model),
            "unlearner": unlearner,
            "unlearner_options": {k: repr(v) for k, v in options.items()},
            "setting": setting,
            "n_original": int(n_original),
            "set_size": int(set_size),
            "n_unlearn": int(n_unlearn),
            "n_delete": int(n_delete),
            "distinct_deletions": bool(distinct_deletions),
            "seed": int(seed),
            "seconds": time.perf_counter() - start,
            "fit_seconds": fit_seconds,
            "forget_seconds": forget_seconds,
        },
    )
    return result.validate()
