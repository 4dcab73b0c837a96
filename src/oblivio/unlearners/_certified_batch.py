"""Turning a request into Newton steps: removals one by one, jointly or ``batch="auto"``,
edits as one step; committing a step to the cached state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data import Change
from oblivio.data.blocked import BlockedRows
from oblivio.unlearners._certified_numerics import (
    _dense64,
    _float32_shadow,
    _frobenius_sq,
    _loss_slope,
    _row_norms,
    _rows,
    _signs,
)

_BATCH_MODES = ("sequential", "joint", "auto")
_clock = time.perf_counter  # the clock batch="auto" sizes its steps with


class BatchingMixin:
    """Requests to steps (part of :class:`~oblivio.unlearners.CertifiedRemoval`)."""

    def _removal_steps(self, positions: np.ndarray) -> Iterator[tuple[dict[str, Any], Any]]:
        """Newton steps (step, commit) for the records of one removal request (``batch``).

        ``"auto"`` computes two candidates from the current weights, the joint step and the
        step for the first record alone (two passes), and takes the joint step when it
        costs no more budget than ``m`` times the single step (records whose gradients
        cancel, e.g. of different classes, make the joint step cheap) or when the time limit
        does not allow more steps; otherwise it continues with as many steps as the time
        limit affords, sized from the measured time per step.
        """
        mode = {True: "joint", False: "sequential"}.get(self.batch, self.batch)
        if mode == "joint" or positions.size == 1:
            yield self._removal_step(positions)
            return
        if mode == "sequential":
            for i in range(positions.size):
                yield self._removal_step(positions[i : i + 1])
            return
        start = _clock()
        joint = self._removal_step(positions)
        first = self._removal_step(positions[:1])
        per_step = (_clock() - start) / 2
        limit = math.inf if self.time_limit is None else self.time_limit
        affordable = (limit - 2 * per_step) / max(per_step, 1e-9)
        if affordable < 1 or positions.size * first[0]["bound"] >= joint[0]["bound"]:
            yield joint
            return
        yield first
        done, taken = 1, 0
        while done < positions.size:
            left = positions.size - done
            size = 1
            if self.time_limit is not None:
                elapsed = _clock() - start
                affordable = int((limit - elapsed) // (elapsed / (taken + 2)))
                size = left if affordable <= 1 else -(-left // min(affordable, left))
            yield self._removal_step(positions[done : done + size])
            done += size
            taken += 1

    def _removal_step(self, positions: np.ndarray) -> tuple[dict[str, Any], Any]:
        W = self._W
        mask = self._mask()
        removed = np.zeros_like(mask)
        removed[positions] = mask[positions]
        m = removed[np.unique(positions)].sum(axis=0)  # not a pass over all n rows
        new_mask = mask & ~removed
        counts = self._counts - m
        X_removed = _rows(self._X, positions)
        Z_removed = np.asarray(X_removed @ W.T)  # exact margins, O(m d)
        slopes = _loss_slope(Z_removed, self._S[positions]) * removed[positions]
        Delta = np.asarray(X_removed.T @ slopes).T
        Delta = Delta + self._l2 * m[:, None] * W
        delta_max = m * (self._l2 * np.linalg.norm(W, axis=1) + self._R)
        step = self._newton(
            self._X,
            self._Z,
            self._S,
            new_mask,
            counts,
            Delta,
            delta_max,
            self._xnorm,
            pending=self._pending,
            zerr=self._zerr,
        )

        def commit(step: dict[str, Any]) -> None:
            active = self._active.copy()
            active[positions] = False
            self._active = active
            self._counts = counts
            self._take_step(step)

        return step, commit

    def _take_step(self, step: dict[str, Any]) -> None:
        """Move to ``w + s`` with the margins, lags and cache that ``_newton`` left."""
        self._W = self._W + step["s"]
        self._Z = step["Z_new"]
        self._pending = step["pending"]
        self._zerr = step["zerr"]
        if step["cache"] is not None:
            self._cache = step["cache"]
        self._refreshes += step["refreshed"]

    def _edit_step(self, change: Change) -> tuple[dict[str, Any], Any]:
        """One step for Relabel / ReplaceFeatures / Replace (``Delta = -G``)."""
        self._flush()
        self._compact()
        W = self._W
        old = self._base
        positions = old.positions(change.ids)
        result = change.result
        X_new = self.model_.design_matrix(result.X)
        X_new = _dense64(X_new)
        X32_new = _float32_shadow(X_new)
        S_new = _signs(result.y, self._K)
        rows_old = _rows(self._X, positions)
        rows_new = _rows(X_new, positions)
        Z_rows_new = np.asarray(rows_new @ W.T)
        Delta = (
            np.asarray(rows_old.T @ _loss_slope(self._Z[positions], self._S[positions])).T
            - np.asarray(rows_new.T @ _loss_slope(Z_rows_new, S_new[positions])).T
        )
        Z = self._Z.copy()
        Z[positions] = Z_rows_new
        features_changed = (
            (rows_old != rows_new).nnz > 0
            if sp.issparse(rows_old)
            else not np.array_equal(rows_old, rows_new)
        )
        xnorm = self._xnorm
        R = self._R
        gram = self._gram
        if features_changed:
            xnorm = np.sqrt(xnorm**2 + _frobenius_sq(rows_new)) * (1 + 1e-12)
            R = max(R, float(_row_norms(rows_new).max()))
            if gram is not None:  # X'^T X' <= G + X~^T X~ (Loewner order)
                extra = rows_new.T @ rows_new
                gram = gram + (np.asarray(extra.todense()) if sp.issparse(extra) else extra)
        delta_max = np.full(self._K, 2.0 * len(positions) * R)
        step = self._newton(
            X_new, Z, S_new, self._mask(), self._counts, Delta, delta_max, xnorm, refresh_all=True
        )

        def commit(step: dict[str, Any]) -> None:
            self._X, self._S, self._base = X_new, S_new, result
            self._X32 = X32_new
            self._xnorm, self._R, self._gram = xnorm, R, gram
            self._take_step(step)

        return step, commit

    def _flush(self) -> None:
        """Exact margins at ``self._W`` (float64, one ``O(n d)`` product) if they lag."""
        if np.any(self._pending) or np.any(self._zerr):
            self._Z = np.asarray(self._X @ self._W.T)
            self._pending = np.zeros_like(self._pending)
            self._zerr = np.zeros(self._K)

    def _compact(self) -> None:
        """Drop rows removed so far from the caches, so they align with ``train_``."""
        if self._active.all():
            return
        keep = self._active
        if isinstance(self._X, BlockedRows):
            self._X = self._X.take_rows(keep)
            self._X32 = _float32_shadow(self._X)
        else:
            self._X = self._X[keep]
            if self._X32 is not None:
                self._X32 = self._X32[keep]
        self._Z = self._Z[keep]
        self._S = self._S[keep]
        self._member = self._member[keep]
        self._active = np.ones(int(keep.sum()), dtype=bool)
        self._base = self.train_
        self._cache = None  # rebuilt by the edit step (rows no longer align)
