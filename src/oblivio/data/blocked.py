"""Row-blocked float64 arithmetic over a matrix stored in a narrower type or on disk.

Large dense data are best kept as float32 (half the memory) or in a memory-mapped file
(:func:`numpy.memmap`, data larger than memory). Exact-optimum models and certificates
need float64 products, and ``X.astype(float64)`` would double the memory (or read all of a
file into it). :class:`BlockedRows` computes ``X @ M``, ``X.T @ V`` and weighted Gram
matrices block by block, upcasting one block of rows at a time: every float32 value is
exactly representable in float64, so the results are those of the float64 matrix with the
same values, in bounded extra memory.

:func:`memmap_dataset` writes rows to a file block by block and returns a
:class:`~oblivio.data.Dataset` backed by a read-only memory map of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from oblivio.data.dataset import Dataset

__all__ = ["BlockedRows", "ChunkedRows", "chunked_dataset", "memmap_dataset", "needs_blocking"]

ROWS = 8192  # rows per float64 block (about 50 MB at d = 784)


def needs_blocking(X: Any) -> bool:
    """True for dense 2-d data that is not float64, is memory-mapped or is chunked."""
    if isinstance(X, ChunkedRows):
        return True
    return (
        isinstance(X, np.ndarray)
        and X.ndim == 2
        and (X.dtype != np.float64 or isinstance(X, np.memmap))
    )


class ChunkedRows:
    """The rows of a chunked 2-d array (Zarr, Dask, anything sliceable), read by blocks.

    Only contiguous row ranges are ever asked of ``source`` (``source[start:stop]``, made
    into numpy), so a Zarr array on disk or a Dask array is read a block at a time, like a
    memory map. A selection of rows (``view[positions]``) is another lazy view: removals
    never gather the remaining rows into memory. ``numpy.asarray(view)`` gathers them all.

    Parameters
    ----------
    source : array-like of shape (n, d)
        Supports ``shape``, ``dtype`` and row slicing (``zarr.Array``,
        ``dask.array.Array``, ``h5py.Dataset``, ...).
    rows : array of int, optional
        Positions of ``source``'s rows in this view (all rows when None).
    """

    ndim = 2

    def __init__(self, source: Any, rows: Any = None) -> None:
        if len(source.shape) != 2:
            raise ValueError(f"a chunked source must be 2-d, got shape {tuple(source.shape)}")
        self.source = source
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        count = int(source.shape[0]) if self.rows is None else int(self.rows.size)
        self.shape = (count, int(source.shape[1]))
        self.dtype = np.dtype(source.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ChunkedRows({type(self.source).__name__}, shape={self.shape}, dtype={self.dtype})"

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        """Source rows at ``positions`` (any order), reading ranges of ``ROWS`` rows."""
        out = np.empty((positions.size, self.shape[1]), dtype=self.dtype)
        if positions.size == 0:
            return out
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        low, high = int(wanted[0]), int(wanted[-1]) + 1
        if high - low == positions.size and np.all(np.diff(wanted) == 1):
            out[order] = np.asarray(self.source[low:high])
            return out
        for start in range(low, high, ROWS):
            first, last = np.searchsorted(wanted, [start, start + ROWS])
            if first == last:
                continue
            block = np.asarray(self.source[start : min(start + ROWS, high)])
            out[order[first:last]] = block[wanted[first:last] - start]
        return out

    def __getitem__(self, index: Any) -> Any:
        n = self.shape[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1 and self.rows is None:
                return np.asarray(self.source[start:stop])
            positions = np.arange(start, stop, step)
            source_rows = positions if self.rows is None else self.rows[positions]
            return self._gather(source_rows)
        if isinstance(index, (int, np.integer)):
            if not -n <= int(index) < n:
                raise IndexError(f"row {int(index)} out of range for {n} rows")
            return self[int(index) % n : int(index) % n + 1][0]
        positions = np.asarray(index)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64, copy=False)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"row positions out of range for {n} rows")
        positions = positions % max(n, 1)
        return ChunkedRows(self.source, positions if self.rows is None else self.rows[positions])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.rows is None:
            out = np.asarray(self.source[0 : self.shape[0]])
        else:
            out = self._gather(self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)


def chunked_dataset(
    source: Any,
    y: Any,
    *,
    ids: np.ndarray | None = None,
    classes: tuple[Any, ...] | None = None,
    name: str = "chunked",
) -> Dataset:
    """A :class:`~oblivio.data.Dataset` whose ``X`` is a Zarr / Dask array read by blocks.

    ``X`` becomes a :class:`ChunkedRows` view of ``source``: models and certified removal
    read it through :class:`BlockedRows`, as they read a memory map (float64 products a
    block at a time, float32 passes straight from the stored values); nothing loads the
    whole array unless asked (``numpy.asarray(data.X)``).
    """
    return Dataset(X=ChunkedRows(source), y=y, ids=ids, classes=classes, name=name)


class BlockedRows:
    """A dense ``(n, d)`` matrix, optionally with a ones column appended, in float64.

    Parameters
    ----------
    data : ndarray or memmap of shape (n, d0)
        The stored values (any real dtype); never copied as a whole.
    intercept : bool
        Append a column of ones (``d = d0 + 1``).
    """

    dtype = np.dtype(np.float64)
    ndim = 2

    def __init__(self, data: np.ndarray, intercept: bool = False) -> None:
        self.data = data
        self.intercept = bool(intercept)
        self.shape = (int(data.shape[0]), int(data.shape[1]) + int(self.intercept))

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float64 (with the ones column if any)."""
        part = np.asarray(self.data[start:stop], dtype=np.float64)
        if self.intercept:
            part = np.hstack([part, np.ones((part.shape[0], 1))])
        return part

    def blocks(self) -> Iterable[tuple[int, int, np.ndarray]]:
        n = self.shape[0]
        for start in range(0, n, ROWS):
            stop = min(start + ROWS, n)
            yield start, stop, self.block(start, stop)

    def __getitem__(self, rows: Any) -> np.ndarray:
        part = np.asarray(self.data[rows], dtype=np.float64)
        if part.ndim == 1:
            part = part[None, :]
        if self.intercept:
            part = np.hstack([part, np.ones((part.shape[0], 1))])
        return part

    def take_rows(self, rows: Any) -> BlockedRows:
        """A :class:`BlockedRows` over the selected rows (stored type kept; a chunked
        source stays a lazy view)."""
        part = self.data[rows]
        if not isinstance(part, ChunkedRows):
            part = np.asarray(part)
        return BlockedRows(part, self.intercept)

    def __matmul__(self, M: Any) -> np.ndarray:
        M = np.asarray(M, dtype=np.float64)
        out = np.empty((self.shape[0],) + M.shape[1:])
        for start, stop, part in self.blocks():
            out[start:stop] = part @ M
        return out

    @property
    def T(self) -> _Transposed:  # noqa: N802 - mirrors ndarray.T
        return _Transposed(self)

    def rmatmul(self, V: Any, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        """``X^T V`` (``transform`` applied to each block of rows first, e.g. squaring)."""
        V = np.asarray(V, dtype=np.float64)
        out = np.zeros((self.shape[1],) + V.shape[1:])
        for start, stop, part in self.blocks():
            if transform is not None:
                part = transform(part)
            out += part.T @ V[start:stop]
        return out

    def weighted_gram(self, weights: np.ndarray | None = None) -> np.ndarray:
        """``X^T diag(weights) X`` (non-negative weights: symmetric rank-k updates)."""
        d = self.shape[1]
        upper = np.zeros((d, d))
        for start, stop, part in self.blocks():
            if weights is not None:
                w = weights[start:stop]
                if np.any(w < 0):
                    upper += np.triu(part.T @ (part * w[:, None]))
                    continue
                part = part * np.sqrt(w)[:, None]
            upper = scipy.linalg.blas.dsyrk(
                1.0, part.T, beta=1.0, c=upper, trans=0, overwrite_c=True
            )
        upper = np.triu(upper)
        return upper + np.triu(upper, 1).T

    def row_norms(self) -> np.ndarray:
        out = np.empty(self.shape[0])
        for start, stop, part in self.blocks():
            out[start:stop] = np.sqrt(np.einsum("ij,ij->i", part, part))
        return out


class _Transposed:
    def __init__(self, rows: BlockedRows) -> None:
        self.rows = rows
        self.shape = rows.shape[::-1]

    def __matmul__(self, V: Any) -> np.ndarray:
        return self.rows.rmatmul(V)


def memmap_dataset(
    path: str | os.PathLike[str],
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    n: int,
    d: int,
    *,
    dtype: Any = np.float32,
    ids: np.ndarray | None = None,
    classes: tuple[Any, ...] | None = None,
    name: str = "memmap",
) -> Dataset:
    """Write ``(X_block, y_block)`` pairs to ``path`` and return a memory-mapped Dataset.

    The file is written under a temporary name and renamed when complete (a crash leaves
    no half-written file under ``path``); ``X`` of the result is a read-only
    :class:`numpy.memmap`, so only the blocks an algorithm reads are resident. The caller
    owns the file (delete it when done).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    y = np.empty(n, dtype=np.int64)
    try:
        X = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(n, d))
        filled = 0
        for X_block, y_block in blocks:
            count = len(y_block)
            if filled + count > n:
                raise ValueError(f"the blocks hold more than n={n} rows")
            X[filled : filled + count] = X_block
            y[filled : filled + count] = y_block
            filled += count
        if filled != n:
            raise ValueError(f"the blocks hold {filled} rows, n={n} were announced")
        X.flush()
        del X
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    X = np.load(path, mmap_mode="r")
    return Dataset(X=X, y=y, ids=ids, classes=classes, name=name)
