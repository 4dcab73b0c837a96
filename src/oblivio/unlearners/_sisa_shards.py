"""SISA's shard machinery: which shard and slice a record goes to, and shard training.

Keyed hashing of record ids into shards and slices (the layout depends on nothing but the
id and the seed), SHA-256 digests of datasets (to detect stale checkpoints), copies of
model states, the sliced training of one shard (``_train_shard``) and
:class:`ShardRunnerMixin`, which runs shard trainings in this process, in joblib worker
processes or on a Dask cluster. A part of :class:`~oblivio.unlearners.sisa.SISA`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from oblivio.data import Dataset
from oblivio.models.base import Model

__all__ = ["ShardRunnerMixin"]

_SHARD_SALT = 0x5348415244  # "SHARD"
_SLICE_SALT = 0x534C494345  # "SLICE"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# -- keyed hashing of record ids ----------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014), vectorised on uint64."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _unit_hash(ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per id that depends only on (id, seed, salt)."""
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(salt))
    words = np.asarray(ids, dtype=np.int64).view(np.uint64)
    mixed = _splitmix64(words ^ key[0])
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _bucket(ids: np.ndarray, seed: int, salt: int, n_buckets: int) -> np.ndarray:
    return np.minimum((_unit_hash(ids, seed, salt) * n_buckets).astype(np.int64), n_buckets - 1)


# -- data fingerprints and model states ----------------------------------------------------
def _digest(data: Dataset) -> str:
    """SHA-256 of a dataset's ids, labels and features (detects stale checkpoints)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.ids).tobytes())
    digest.update(np.ascontiguousarray(data.y).tobytes())
    X = data.X
    if sp.issparse(X):
        for part in (X.data, X.indices, X.indptr):
            digest.update(np.ascontiguousarray(part).tobytes())
    else:
        digest.update(str(X.dtype).encode())
        digest.update(np.ascontiguousarray(X).tobytes())
    return digest.hexdigest()


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of ``model.get_state()`` with tensors turned into numpy arrays."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key == "__meta__":
            out[key] = copy.deepcopy(value)
        elif isinstance(value, torch.Tensor):
            out[key] = value.detach().cpu().numpy().copy()
        else:
            out[key] = np.array(value, copy=True)
    return out


def _restore(template: Model, state: dict[str, Any]) -> Model:
    model = template.clone()
    model.set_state(_copy_state(state))
    return model


def _accepts(function: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _is_torch_model(model: Any) -> bool:
    from oblivio.models import TorchModel

    return isinstance(model, TorchModel)


def _train_shard(
    template: Model,
    data: Dataset,
    bounds: Sequence[int],
    start: int,
    init_state: dict[str, Any] | None,
    epochs: Sequence[int] | None,
    in_worker: bool,
) -> tuple[Model | None, list[tuple[str, dict[str, Any] | None]]]:
    """Train one shard over slices ``start .. R-1`` (SISA's sliced training).

    ``data`` holds the shard's records ordered by slice, then id; slice ``r`` is
    ``data[bounds[r]:bounds[r + 1]]``. Training for slice ``r`` starts from the model after
    slice ``r - 1`` (``init_state`` for ``r = start``) and fits the prefix
    ``data[:bounds[r + 1]]``. Every step goes through the same path (clone, restore the
    previous state, ``fit(prefix, init=theta)``), so resuming from a checkpoint performs the
    very computation a run from scratch performs.

    Returns the final model (None for an empty shard) and ``(digest, state)`` checkpoints
    after slices ``start .. R-2``.
    """
    if in_worker:
        torch.set_num_threads(1)
    n_slices = len(bounds) - 1
    previous = None if init_state is None else _restore(template, init_state)
    state = init_state
    checkpoints: list[tuple[str, dict[str, Any] | None]] = []
    for r in range(start, n_slices):
        end = int(bounds[r + 1])
        prefix = data.take(np.arange(end))
        if end > int(bounds[r]) or (previous is None and end > 0):
            model = template.clone()
            options: dict[str, Any] = {}
            if previous is not None:
                # a TorchModel warm-starts its whole module (buffers and parameters outside
                # ``params`` too) from a fitted model; other models take theta
                options["init"] = previous if _is_torch_model(previous) else previous.theta
            if epochs is not None:
                options["epochs"] = int(epochs[r])
            model.fit(prefix, **options)
            previous = model
            state = _copy_state(model.get_state())
        # an empty slice adds no data: the model (and checkpoint) stay as they were
        if r < n_slices - 1:
            checkpoints.append((_digest(prefix), state))
    return previous, checkpoints


def _close_dask(client: Any, cluster: Any) -> None:
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()


class ShardRunnerMixin:
    """Runs shard trainings, in parallel where asked (a part of :class:`SISA`)."""

    def _run(self, tasks: list[tuple]) -> list[tuple[Model | None, list]]:
        """Run ``_train_shard`` on each task, in parallel where asked."""
        template, epochs = self.model, self._epochs()
        if self.backend == "dask" and tasks:
            client = self._dask_client()
            futures = [
                client.submit(_train_shard, template, *task, epochs, True, pure=False)
                for task in tasks
            ]
            return client.gather(futures)
        if self.n_jobs == 1 or len(tasks) <= 1:
            return [_train_shard(template, *task, epochs, False) for task in tasks]
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.n_jobs, backend="loky")(
            delayed(_train_shard)(template, *task, epochs, True) for task in tasks
        )

    def _dask_client(self) -> Any:
        if self._dask is None:
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "backend='dask' needs dask.distributed: pip install 'oblivio[dask]'"
                ) from error
            cluster = None
            if self.scheduler is not None:
                client = Client(self.scheduler)
            else:
                workers = (os.cpu_count() or 2) if self.n_jobs == -1 else max(2, self.n_jobs)
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                client = Client(cluster)
            self._dask = (client, cluster)
            self._finalizer = weakref.finalize(self, _close_dask, client, cluster)
        return self._dask[0]

    def close(self) -> None:
        """Shut down the Dask client (and the local cluster SISA started), if any."""
        if self._finalizer is not None:
            self._finalizer()
        self._dask = None
        self._finalizer = None
