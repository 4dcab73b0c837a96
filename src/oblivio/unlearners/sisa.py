"""SISA: sharded, isolated, sliced, aggregated training for exact unlearning.

Bourtoule, Chandrasekaran, Choquette-Choo, Jia, Travers, Zhang, Lie, Papernot,
*Machine Unlearning*, IEEE S&P 2021 (arXiv:1912.03817). Chen et al. (CCS 2021) and
Warnecke et al. (NDSS 2023) use it as the exact baseline.

This module holds the unlearner class :class:`SISA` (parameters, layout of records into
shards and slices, training, forgetting, persistence). Its parts live below it:
``_sisa_shards`` (keyed hashing, digests, one shard's sliced training and running shard
trainings), ``_sisa_checkpoints`` (slice checkpoints, :class:`CheckpointError`) and
``_sisa_ensemble`` (the aggregate model :class:`SISAEnsemble`); both public classes are
importable from here.
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oblivio.data import Change, Dataset
from oblivio.models.base import Model
from oblivio.unlearners._sisa_checkpoints import CheckpointError, CheckpointMixin
from oblivio.unlearners._sisa_ensemble import SISAEnsemble
from oblivio.unlearners._sisa_shards import (
    _SHARD_SALT,
    _SLICE_SALT,
    ShardRunnerMixin,
    _accepts,
    _bucket,
    _digest,
)
from oblivio.unlearners.base import Outcome, StateError, Unlearner, check_count, register

__all__ = ["SISA", "CheckpointError", "SISAEnsemble"]


# -- the unlearner -------------------------------------------------------------------------
@register
class SISA(CheckpointMixin, ShardRunnerMixin, Unlearner):
    """Exact unlearning by sharded, isolated, sliced, aggregated training.

    Bourtoule et al., *Machine Unlearning*, IEEE S&P 2021. The training set is split into
    ``shards`` disjoint parts, one model per shard (a clone of ``model``), and predictions
    aggregate the shard models. Within a shard, records are split into ``slices`` and the
    shard model is trained incrementally: for slice r it is trained on the union of slices
    0..r starting from the model after slice r - 1, and that model is checkpointed
    (Sec. IV, "slicing"). Forgetting a record of slice j of shard k retrains only shard k, from the
    checkpoint after slice j - 1. The result is exactly the model SISA trains from scratch on
    the edited data with the same seed, which is what makes the method exact.

    * Sharding: record ids are mapped to shards by a keyed hash of (id, seed), so the shard
      of a record depends on nothing else, and fitting from scratch on ``train.drop(ids)``
      puts every remaining record in the same shard. ``assignment`` may instead be a function
      ``ids -> shard indices`` (e.g. by user, so one user's records share a shard); it must
      map each id on its own (not depend on the other ids).
    * Slicing: the slice of a record comes from a second keyed hash of its id, so slices keep
      their contents when other records go (slicing by position would move records between
      slices and invalidate checkpoints); within a slice, and hence within the training order
      of each prefix, records are in id order.
    * Incremental training: ``LogisticRegression`` is warm-started on each growing prefix
      (``fit(prefix, init=theta)``); the objective is strictly convex, so the final shard
      model is the unique optimum on the whole shard (to the solver tolerance). A
      ``TorchModel`` trains ``e' = max(1, round(2 e / (R + 1)))`` epochs on each prefix
      (``fit(prefix, init=theta, epochs=e')``, ``e`` its ``epochs``), which keeps the total
      cost of R slices equal to ``e`` epochs on the shard: sum_r (r/R) e' = e (Sec. IV,
      "slicing" [check the paper's equation]). Any other model with ``fit(data)`` and
      ``predict_proba`` works with ``slices=1``.
    * Cost model (derived): with uniform shards and slices, a single removal retrains one
      shard from a uniformly chosen slice, ``E[cost] = e N (2R + 1) / (3 S R)`` record-epochs
      against ``e N`` for retraining, a theoretical speed-up of ``3 S R / (2 R + 1)``.

    Parameters
    ----------
    model : Model
        Template; each shard trains a ``clone()``.
    shards : int
        Number of shards S (>= 1).
    slices : int
        Number of slices R per shard (>= 1).
    aggregation : {"mean", "vote"}
        ``predict`` by argmax of the mean probability or by majority vote of the shards.
        ``predict_proba`` is always the mean.
    assignment : "random" or callable
        ``"random"``: keyed hash of (id, seed). A callable gets the ids (int64 array) and
        returns one shard index in ``0..shards-1`` per id.
    n_jobs : int
        Parallel shard trainings with joblib (``-1``: all cores). Shards are trained in
        parallel at ``fit`` and when a request hits several shards.
    backend : {"loky", "dask"}
        ``"loky"``: joblib processes on this machine. ``"dask"``: a ``dask.distributed``
        cluster: ``scheduler`` if given (``"tcp://host:port"``), else a local cluster of
        ``max(2, n_jobs)`` single-threaded worker processes started on first use; call
        :meth:`close` (or use the unlearner as a context manager) to shut it down.
    scheduler : str, optional
        Address of a running Dask scheduler (``backend="dask"`` only).
    checkpoint_dir : str or path-like, optional
        Keep the slice checkpoints as ``.npz`` files in this folder (written atomically)
        instead of in memory. Checkpoints record a digest of the data they were trained on;
        a missing, corrupt or stale file raises :class:`CheckpointError` and changes nothing.
    seed : int, optional
        Key of the shard and slice hashes. None draws one at ``fit`` (see ``seed_``).

    Attributes
    ----------
    model_ : SISAEnsemble
        The aggregate model.
    seed_ : int
        The hash key used.
    shards_ : list of ndarray
        Ids of the current training records per shard (in training order).

    Notes
    -----
    ``forget`` reports ``diagnostics``: ``shards_retrained``, ``slices_retrained`` (slice
    trainings redone, summed over shards), ``records_retrained`` (records of the retrained
    shards) and ``cost_fraction`` (record-epochs spent over those of retraining one model on
    the edited set; its inverse is the cost-model speed-up). Relabel, ReplaceFeatures and
    Replace requests retrain the shards of the edited records on their new values, from the
    earliest edited slice, and are exact too.

    Exactness for neural shard models needs a deterministic ``fit`` (fixed seed, CPU). Worker
    processes train with one torch thread; results agree bit for bit with the local
    sequential path when that also runs with one thread (as the tests do).

    Examples
    --------
    ::

        u = SISA(LogisticRegression(l2=1e-3), shards=5, slices=2, seed=0).fit(train)
        u.forget(Remove(ids=[3, 17])).diagnostics["shards_retrained"]  # at most 2.0
        with SISA(model, shards=20, backend="dask", scheduler="tcp://host:8786") as u:
            u.fit(train).forget(Remove(ids=[3, 17]))
    """

    name = "sisa"
    exact = True
    needs = frozenset({"retain"})
    requires_fit = True

    def __init__(
        self,
        model: Model,
        *,
        shards: int = 5,
        slices: int = 1,
        aggregation: str = "mean",
        assignment: str | Callable[[np.ndarray], np.ndarray] = "random",
        n_jobs: int = 1,
        backend: str = "loky",
        scheduler: str | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(model)
        self.shards = shards
        self.slices = slices
        self.aggregation = aggregation
        self.assignment = assignment
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.seed = seed
        self._dask: tuple[Any, Any] | None = None
        self._finalizer: weakref.finalize | None = None

    # -- parameters --------------------------------------------------------------------
    def _check_params(self) -> None:
        for what in ("shards", "slices"):
            check_count(what, getattr(self, what))
        if self.aggregation not in ("mean", "vote"):
            raise ValueError(f"aggregation must be 'mean' or 'vote', got {self.aggregation!r}")
        if not (self.assignment == "random" or callable(self.assignment)):
            hint = ""
            if self.assignment == "custom":
                hint = (
                    " ('custom' marks a SISA loaded from disk whose assignment function "
                    "was not saved; pass the function again to fit anew)"
                )
            raise ValueError(
                f"assignment must be 'random' or a callable ids -> shards, "
                f"got {self.assignment!r}{hint}"
            )
        if (
            isinstance(self.n_jobs, bool)
            or not isinstance(self.n_jobs, (int, np.integer))
            or self.n_jobs == 0
            or self.n_jobs < -1
        ):
            raise ValueError(f"n_jobs must be a positive integer or -1, got {self.n_jobs!r}")
        if self.backend not in ("loky", "dask"):
            raise ValueError(f"backend must be 'loky' or 'dask', got {self.backend!r}")
        if self.scheduler is not None and self.backend != "dask":
            raise ValueError(f"scheduler={self.scheduler!r} needs backend='dask'")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        if self.slices > 1 and not _accepts(self.model.fit, "init"):
            raise ValueError(
                f"slices={self.slices} needs a model whose fit() takes init= (warm start); "
                f"{type(self.model).__name__}.fit does not. Use slices=1."
            )
        if self.checkpoint_dir is not None:
            self._check_writable(Path(self.checkpoint_dir))

    def _epochs(self) -> list[int] | None:
        """Epochs per slice for models with an ``epochs`` option (None: the model's own)."""
        base = getattr(self.model, "epochs", None)
        if self.slices == 1 or not isinstance(base, (int, np.integer)):
            return None
        if not _accepts(self.model.fit, "epochs"):
            return None
        per_slice = max(1, int(round(2 * int(base) / (self.slices + 1))))
        return [per_slice] * self.slices

    # -- layout ------------------------------------------------------------------------
    def _assign(self, ids: np.ndarray) -> np.ndarray:
        if self.assignment == "random":
            return _bucket(ids, self.seed_, _SHARD_SALT, self.shards)
        shards = np.asarray(self.assignment(ids.copy()))
        if shards.shape != ids.shape or (shards.size and shards.dtype.kind not in "iu"):
            raise ValueError(
                f"assignment must return one integer shard per id: got shape {shards.shape}, "
                f"dtype {shards.dtype} for {ids.size} ids"
            )
        bad = shards[(shards < 0) | (shards >= self.shards)]
        if bad.size:
            raise ValueError(
                f"assignment returned shards outside 0..{self.shards - 1}: "
                f"{np.unique(bad)[:10].tolist()}"
            )
        return shards.astype(np.int64)

    def _shard_of(self, ids: np.ndarray) -> np.ndarray:
        positions = np.searchsorted(self._layout_ids, ids)
        positions = np.minimum(positions, len(self._layout_ids) - 1)
        if not np.array_equal(self._layout_ids[positions], ids):
            raise RuntimeError("record ids without a shard; the SISA state is inconsistent")
        return self._layout_shards[positions]

    def _slice_of(self, ids: np.ndarray) -> np.ndarray:
        return _bucket(ids, self.seed_, _SLICE_SALT, self.slices)

    def _partition(self, data: Dataset) -> list[tuple[Dataset, np.ndarray]]:
        """Per shard: its records ordered by (slice, id) and the slice boundaries."""
        ids = data.ids
        shard = self._shard_of(ids)
        slice_ = self._slice_of(ids)
        order = np.lexsort((ids, slice_, shard))
        parts = []
        for k in range(self.shards):
            rows = order[shard[order] == k]
            counts = np.bincount(slice_[rows], minlength=self.slices)
            bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            parts.append((data.take(rows), bounds))
        return parts

    @property
    def shards_(self) -> list[np.ndarray]:
        """Ids of the current training records per shard, in training order."""
        self._check_fitted()
        return [part.ids.copy() for part, _ in self._partition(self.train_)]

    # -- execution ---------------------------------------------------------------------
    def __enter__(self) -> SISA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dask"] = None
        state["_finalizer"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> SISA:
        clone = copy.copy(self)
        memo[id(self)] = clone
        for key, value in self.__getstate__().items():
            setattr(clone, key, copy.deepcopy(value, memo))
        return clone

    # -- training ----------------------------------------------------------------------
    def fit(self, train: Dataset) -> SISA:
        """Train one model per shard, slice by slice, keeping the slice checkpoints."""
        self._check_params()
        if self.shards > len(train):
            raise ValueError(f"shards={self.shards} is more than the {len(train)} training records")
        return super().fit(train)  # type: ignore[return-value]

    def attach(self, train: Dataset) -> Unlearner:
        raise ValueError(
            "SISA trains its own shard models and cannot attach a trained model; use fit(train)"
        )

    def _fit(self, train: Dataset) -> None:
        self.seed_ = (
            int(self.seed)
            if self.seed is not None
            else int(np.random.SeedSequence().entropy % (2**63))
        )
        order = np.argsort(train.ids, kind="stable")
        self._layout_ids = train.ids[order].copy()
        self._layout_shards = self._assign(train.ids[order])
        parts = self._partition(train)
        empty = [k for k, (part, _) in enumerate(parts) if len(part) == 0]
        if empty:
            warnings.warn(
                f"SISA shards {empty} received no records; they have no model",
                UserWarning,
                stacklevel=3,
            )
        tasks = [(part, bounds, 0, None) for part, bounds in parts]
        results = self._run(tasks)
        self._memory: dict[tuple[int, int], tuple[str, Any]] = {}
        entries = {
            (k, r): checkpoint
            for k, (_, checkpoints) in enumerate(results)
            for r, checkpoint in enumerate(checkpoints)
        }
        self._write_checkpoints(entries)
        self.model_ = SISAEnsemble(
            self.model, self.shards, self.aggregation, [model for model, _ in results]
        )

    # -- unlearning --------------------------------------------------------------------
    def _forget(self, change: Change) -> Outcome:
        hit_shards = self._shard_of(change.ids)
        hit_slices = self._slice_of(change.ids)
        start: dict[int, int] = {}
        for k, r in zip(hit_shards.tolist(), hit_slices.tolist(), strict=True):
            start[k] = min(start.get(k, r), r)
        parts = self._partition(change.result)
        tasks = []
        for k in sorted(start):
            part, bounds = parts[k]
            j = start[k]
            init = None
            if j > 0:
                expected = _digest(part.take(np.arange(bounds[j])))
                init = self._read_checkpoint(k, j - 1, expected)
            tasks.append((part, bounds, j, init))
        results = self._run(tasks)

        models = list(self.model_.models_)
        entries = {}
        for k, (model, checkpoints) in zip(sorted(start), results, strict=True):
            models[k] = model
            for offset, checkpoint in enumerate(checkpoints):
                entries[(k, start[k] + offset)] = checkpoint
        self._write_checkpoints(entries)  # last step that can fail: nothing changed before
        self.model_ = SISAEnsemble(self.model, self.shards, self.aggregation, models)
        if change.is_removal:  # the layout keeps no trace of forgotten records
            keep = ~np.isin(self._layout_ids, change.ids)
            self._layout_ids = self._layout_ids[keep]
            self._layout_shards = self._layout_shards[keep]

        epochs = self._epochs()
        base_epochs = 1 if epochs is None else int(getattr(self.model, "epochs", 1))
        work = 0.0
        for k in start:
            _, bounds = parts[k]
            for r in range(start[k], self.slices):
                work += int(bounds[r + 1]) * (1 if epochs is None else epochs[r])
        return Outcome(
            retrained=False,
            diagnostics={
                "shards_retrained": len(start),
                "slices_retrained": sum(self.slices - j for j in start.values()),
                "records_retrained": sum(len(parts[k][0]) for k in start),
                # record-epochs of this call over those of retraining on the edited set
                "cost_fraction": work / (base_epochs * max(len(change.result), 1)),
            },
        )

    def _snapshot(self) -> Any:
        return dict(self._memory), self._layout_ids, self._layout_shards

    def _restore(self, state: Any) -> None:
        self._memory, self._layout_ids, self._layout_shards = state

    # -- persistence -------------------------------------------------------------------
    def _blank_model(self) -> Model:
        return SISAEnsemble(self.model, self.shards, self.aggregation)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as :meth:`Unlearner.save` does; a custom assignment is saved as its result.

        The shard of every record is stored, so a loaded SISA forgets exactly; the function
        itself is not saved (``assignment`` reads ``"custom"`` after loading).
        """
        if callable(self.assignment):
            function = self.assignment
            self.assignment = "custom"
            try:
                return super().save(path)
            finally:
                self.assignment = function
        return super().save(path)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        keep = np.isin(self._layout_ids, self.train_.ids)  # only what the current state needs
        meta: dict[str, Any] = {
            "seed_": self.seed_,
            "checkpoints": [],
            # fingerprints of each shard's records: load() refuses a layout that moved one
            "shard_digests": [_digest(part) for part, _ in self._partition(self.train_)],
        }
        arrays: dict[str, np.ndarray] = {
            "layout_ids": self._layout_ids[keep],
            "layout_shards": self._layout_shards[keep],
        }
        for (k, r), (digest, state) in sorted(self._memory.items()):
            entry: dict[str, Any] = {"shard": k, "slice": r, "digest": digest, "empty": True}
            if state is not None:
                state = dict(state)
                entry["empty"] = False
                entry["meta"] = state.pop("__meta__", {})
                entry["keys"] = sorted(state)
                arrays.update({f"ckpt{k}_{r}__{key}": np.asarray(v) for key, v in state.items()})
            meta["checkpoints"].append(entry)
        return meta, arrays

    def _check_loaded_params(self) -> None:
        if self.assignment == "custom":  # the function is not saved; the layout stands in
            self.assignment = "random"
            try:
                self._check_params()
            finally:
                self.assignment = "custom"
            return
        self._check_params()

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore the layout and checkpoints; refuse a layout the training ids contradict."""
        seed = meta.get("seed_")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise StateError("seed_", f"must be an integer, got {seed!r}")
        self.seed_ = seed
        ids, shards = arrays.get("layout_ids"), arrays.get("layout_shards")
        if ids is None or shards is None or ids.shape != shards.shape or ids.ndim != 1:
            raise StateError("layout", "layout_ids / layout_shards missing or of unequal shape")
        if ids.dtype.kind not in "iu" or shards.dtype.kind not in "iu":
            raise StateError("layout", f"expected integer arrays, got {ids.dtype}, {shards.dtype}")
        if not np.array_equal(np.sort(ids), np.sort(self.train_.ids)) or np.any(np.diff(ids) <= 0):
            raise StateError(
                "layout_ids", "must list each training id exactly once, sorted (no other ids)"
            )
        if shards.size and (shards.min() < 0 or shards.max() >= self.shards):
            raise StateError("layout_shards", f"shards outside 0..{self.shards - 1}")
        if self.assignment == "random" and not np.array_equal(
            shards, _bucket(ids, self.seed_, _SHARD_SALT, self.shards)
        ):
            raise StateError("layout_shards", "differs from the seeded random assignment")
        self._layout_ids = ids.astype(np.int64)
        self._layout_shards = shards.astype(np.int64)
        parts = self._partition(self.train_)
        digests = meta.get("shard_digests")
        if digests is not None and digests != [_digest(part) for part, _ in parts]:
            raise StateError(
                "layout_shards", "a shard's records differ from those its model was saved with"
            )
        fitted = self.model_.models_ or []
        for k, (part, _) in enumerate(parts):
            if (len(part) > 0) != (k < len(fitted) and fitted[k] is not None):
                raise StateError(
                    "layout_shards",
                    f"shard {k} has records but no model, or a model but no records",
                )
        self._memory = {}
        for entry in meta["checkpoints"]:
            k, r = int(entry["shard"]), int(entry["slice"])
            state = None
            if not entry["empty"]:
                state = {key: arrays[f"ckpt{k}_{r}__{key}"] for key in entry["keys"]}
                state["__meta__"] = entry["meta"]
            self._memory[(k, r)] = (entry["digest"], state)
