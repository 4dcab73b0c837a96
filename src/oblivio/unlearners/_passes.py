"""Blocked passes over a dense design matrix for certified removal.

One pass reads ``X`` once, in blocks of ``BLOCK`` rows that stay in cache for both products
``A = X s^T`` and ``G = X^T (weights * A)``. The products run in ``X``'s dtype (float32 for
the shadow copy the per-step pass reads); the blocks' contributions to ``G`` are summed in
float64. The rounding analysis in :mod:`oblivio.unlearners._certified_step` (``_measure``)
holds for any summation order across blocks, so the rows may be split into contiguous ranges
run by threads (``workers``) or by Dask workers holding their rows; the result is then
rigorous in the same way.

``X`` may be a :class:`numpy.memmap` (out-of-core data): blocks are read in order and only a
block at a time is resident beyond what the operating system caches.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = [
    "BLOCK",
    "fused_pass",
    "logistic_pass",
    "row_ranges",
    "thread_pool",
    "torch_matmul_exact",
]

BLOCK = 256  # rows per block (kept in cache between the two products)


def torch_matmul_exact() -> bool:
    """True when torch's float32 matrix products are plain float32 (no TF32 / bfloat16).

    The rounding bounds assume IEEE float32 products with float32 accumulation; a lowered
    ``torch.set_float32_matmul_precision`` would break them, so the pass then uses numpy.
    """
    return torch.get_float32_matmul_precision() == "highest"


def _tensor(array: np.ndarray) -> torch.Tensor:
    array = np.asarray(array)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array)  # torch refuses read-only memory (a read-only memmap)
    return torch.from_numpy(array)


def _range_pass(
    X: np.ndarray,
    s: np.ndarray,
    weights: np.ndarray,
    start: int,
    stop: int,
    A: np.ndarray,
) -> np.ndarray:
    """Rows ``start:stop`` of the pass: fills ``A[start:stop]``, returns their ``G`` part."""
    K, d = s.shape
    G = np.zeros((K, d))
    use_torch = torch_matmul_exact()
    if use_torch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sT = torch.from_numpy(np.ascontiguousarray(s.T))
            A_t = torch.from_numpy(A)
            w_t = torch.from_numpy(weights)
    for low in range(start, stop, BLOCK):
        high = min(low + BLOCK, stop)
        if use_torch:
            block = _tensor(X[low:high])
            part = A_t[low:high]
            if K == 1:
                torch.mv(block, sT[:, 0], out=part[:, 0])
                G[0] += torch.mv(block.T, w_t[low:high, 0] * part[:, 0]).numpy()
            else:
                torch.mm(block, sT, out=part)
                G += ((w_t[low:high] * part).T @ block).numpy()
        else:
            block = np.asarray(X[low:high])
            part = block @ s.T
            A[low:high] = part
            G += (block.T @ (weights[low:high] * part)).T
    return G


def row_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges of near-equal size, aligned to ``BLOCK`` rows."""
    blocks = -(-n // BLOCK)
    parts = max(1, min(parts, blocks))
    edges = [min(n, BLOCK * (blocks * i // parts)) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i] < edges[i + 1]]


_POOLS: dict[int, ThreadPoolExecutor] = {}


def thread_pool(n_jobs: int) -> ThreadPoolExecutor | None:
    """A process-wide pool of ``n_jobs`` threads for the passes (None for one job)."""
    if n_jobs <= 1:
        return None
    if n_jobs not in _POOLS:
        _POOLS[n_jobs] = ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="oblivio")
    return _POOLS[n_jobs]


def fused_pass(
    X: np.ndarray,
    s: np.ndarray,
    weights: np.ndarray,
    *,
    workers: Executor | None = None,
    parts: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """``A = X s^T`` (in ``X``'s dtype) and ``G = (X^T (weights * A))^T`` (float64).

    Parameters
    ----------
    X : ndarray or memmap of shape (n, d)
        float32 or float64, C-contiguous rows.
    s : ndarray of shape (K, d)
    weights : ndarray of shape (n, K)
    workers : concurrent.futures.Executor, optional
        Runs ``parts`` contiguous row ranges concurrently (threads: numpy and torch release
        the GIL inside the products).
    parts : int
        Number of row ranges when ``workers`` is given.
    """
    n0 = X.shape[0]
    s = np.ascontiguousarray(s, dtype=X.dtype)
    weights = np.ascontiguousarray(weights, dtype=X.dtype)
    A = np.empty((n0, s.shape[0]), dtype=X.dtype)
    if workers is None or parts <= 1:
        return A, _range_pass(X, s, weights, 0, n0, A)
    futures = [
        workers.submit(_range_pass, X, s, weights, low, high, A)
        for low, high in row_ranges(n0, parts)
    ]
    G = np.zeros(s.shape)
    for future in futures:
        G += future.result()
    return A, G


def logistic_pass(
    X: np.ndarray, W: np.ndarray, S: np.ndarray, block: int = 2048
) -> tuple[float, np.ndarray]:
    """Sum of the logistic losses ``log(1 + exp(-S (X W^T)))`` and its gradient, one pass.

    Each block of rows is read once for both products, which run in ``X``'s dtype (float32
    for the shadow copy: half the memory traffic); losses and the blocks' gradient parts are
    summed in float64. The result is only as accurate as ``X``'s dtype: a float32 pass
    serves the coarse phase of a fit, never a certificate.

    Parameters
    ----------
    X : ndarray or memmap of shape (n, d)
    W : ndarray of shape (K, d)
    S : ndarray of shape (n, K)
        Targets ``+1`` / ``-1`` per class.

    Returns
    -------
    loss : float
    grad : ndarray of shape (K, d), float64
    """
    Wt = np.ascontiguousarray(W.T, dtype=X.dtype)
    S = np.asarray(S, dtype=X.dtype)
    grad = np.zeros(W.shape)
    loss = 0.0
    for low in range(0, X.shape[0], block):
        rows = np.asarray(X[low : low + block])
        signs = S[low : low + block]
        margins = signs * (rows @ Wt)
        # log(1 + exp(-m)) = max(-m, 0) + log1p(exp(-|m|)); d/dm = -1 / (1 + exp(m))
        small = np.exp(-np.abs(margins))
        loss += float(np.sum(np.maximum(-margins, 0.0), dtype=np.float64))
        loss += float(np.sum(np.log1p(small), dtype=np.float64))
        slopes = np.where(margins >= 0, small, 1.0) / (1.0 + small)
        slopes *= -signs
        grad += (rows.T @ slopes).T
    return loss, grad


def chunk_pass(X: Any, s: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A whole-chunk pass (the function a Dask worker runs on the rows it holds)."""
    return fused_pass(X, s, weights)


class DaskRowPass:
    """The pass over ``X`` split by contiguous row ranges across Dask workers.

    The row ranges are scattered once (each to one worker, round robin); each call sends
    ``s`` and the matching rows of ``weights``, runs :func:`chunk_pass` where the rows are,
    and sums the partial ``G`` in float64. The rounding analysis is that of the serial pass
    with the partial sums added in another order (``parts`` more float64 terms).

    Parameters
    ----------
    client : distributed.Client
    X : ndarray of shape (n, d)
    parts : int, optional
        Row ranges (default: one per worker).
    """

    def __init__(self, client: Any, X: np.ndarray, parts: int | None = None) -> None:
        workers = list(client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("the Dask client has no workers")
        self.client = client
        self.shape = X.shape
        self.ranges = row_ranges(X.shape[0], parts or len(workers))
        self.chunks = [
            client.scatter(np.ascontiguousarray(X[low:high]), workers=[workers[i % len(workers)]])
            for i, (low, high) in enumerate(self.ranges)
        ]

    def __call__(self, s: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        futures = [
            self.client.submit(chunk_pass, chunk, s, weights[low:high], pure=False)
            for chunk, (low, high) in zip(self.chunks, self.ranges, strict=True)
        ]
        parts = self.client.gather(futures)
        A = np.concatenate([part[0] for part in parts])
        G = np.zeros(parts[0][1].shape)
        for part in parts:
            G += part[1]
        return A, G
