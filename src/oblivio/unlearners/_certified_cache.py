"""The Hessian side of certified removal's Newton step: the amortised cache and CG.

``hessian="amortized"`` keeps ``H~`` (the Hessian at the last refresh), its Cholesky factor
and inverse, folds removed rows into them (Woodbury) and refreshes them partially or fully;
``hessian="cg"`` solves matrix-free. Derivations: :mod:`oblivio.unlearners._certified_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats

from oblivio.data.blocked import BlockedRows
from oblivio.linalg.solvers import cg_solve
from oblivio.unlearners._certified_numerics import (
    _GRAM_LIMIT,
    _curvature,
    _inverse,
    _rows,
    _set_inverse,
    _weighted_gram,
)

_FOLD_ROWS = 64  # fold removed rows into the cached inverse once this many have gathered
_PARTIAL_SHARE = 0.02  # share of rows whose curvature a partial refresh updates
_CG_RTOL = 1e-5  # relative residual of the matrix-free step (what it leaves is in T2)
_CG_MAXITER = 500
_CG_HEAD = 256  # most frequent sparse columns whose Hessian block preconditions CG


class HessianCacheMixin:
    """Solves with the cached Hessian or by CG (a part of :class:`CertifiedRemoval`)."""

    def _hessian(self, X: Any, weights: np.ndarray, count: int) -> np.ndarray:
        """``X^T diag(weights) X + lam * count * I`` (weights zero outside the class's rows)."""
        H = _weighted_gram(X, weights)
        H[np.diag_indices_from(H)] += self._l2 * count
        return H

    def _fresh_cache(
        self,
        X: Any,
        Z: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        classes: Any,
        cache: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Amortised mode: Hessian ``H~`` and its Cholesky factor at the current weights.

        The cache records the per-row weights ``cf`` (curvatures), rows ``fmask`` and counts
        ``nf`` that ``H~ = sum_{fmask} cf_i x_i x_i^T + lam nf I`` was built from, so that
        ``Hf v = H~ v - sum_{removed since} cf_i x_i x_i^T v - lam (nf - n') v`` (the same
        matrix on the *current* rows) costs ``O(d^2 + k d)``. Returns a new dict.
        """
        if self._solver_mode() != "amortized":
            return None
        cache = self._copy_cache(cache, Z, mask, counts)
        curvature = _curvature(Z, mask)
        for k in classes:
            H = self._hessian(X, curvature[:, k], counts[k])
            cache["H"][k] = H
            cache["F"][k] = scipy.linalg.cho_factor(H, check_finite=False)
            _set_inverse(cache, k, _inverse(cache["F"][k]))
            cache["cf"][:, k] = curvature[:, k]
            cache["fmask"][:, k] = mask[:, k]
            cache["nf"][k] = counts[k]
        return cache

    def _copy_cache(
        self, cache: dict[str, Any] | None, Z: np.ndarray, mask: np.ndarray, counts: np.ndarray
    ) -> dict[str, Any]:
        K = self._K
        if cache is None:
            return {
                "H": [None] * K,
                "F": [None] * K,
                "Hinv": [None] * K,
                "Hinv32": [None] * K,
                "cf": _curvature(Z, mask),
                "fmask": mask.copy(),
                "nf": counts.copy(),
            }
        return {
            "H": list(cache["H"]),
            "F": list(cache["F"]),
            "Hinv": list(cache["Hinv"]),
            "Hinv32": list(cache["Hinv32"]),
            "cf": cache["cf"].copy(),
            "fmask": cache["fmask"].copy(),
            "nf": cache["nf"].copy(),
        }

    def _partial_refresh(
        self, X: Any, Z: np.ndarray, mask: np.ndarray, counts: np.ndarray, classes: Any
    ) -> dict[str, Any] | None:
        """Cheap refresh: take removed rows out of ``H~`` and update the rows whose curvature
        drifted most (``O((k + t) d^2 + d^3)`` for ``k`` removed and ``t`` updated rows).

        ``H~`` stays a sum of positive terms plus ``lam n' I``, hence SPD; if the Cholesky
        factorisation fails anyway (cancellation), returns None (caller refreshes fully).
        """
        cache = self._copy_cache(self._cache, Z, mask, counts)
        curvature = _curvature(Z, mask)
        top = max(64, int(_PARTIAL_SHARE * X.shape[0]))
        for k in classes:
            H = cache["H"][k].copy()
            gone = np.flatnonzero(cache["fmask"][:, k] & ~mask[:, k])
            if gone.size:
                Xg = _rows(X, gone)
                H -= _weighted_gram(Xg, cache["cf"][gone, k])
                H[np.diag_indices_from(H)] -= self._l2 * (cache["nf"][k] - counts[k])
            drift = (curvature[:, k] - cache["cf"][:, k]) * mask[:, k]
            if top < drift.size:
                rows = np.argpartition(-np.abs(drift), top)[:top]
            else:
                rows = np.arange(drift.size)
            rows = rows[drift[rows] != 0]
            if rows.size:
                H += _weighted_gram(_rows(X, rows), drift[rows])
            try:
                cache["F"][k] = scipy.linalg.cho_factor(H, check_finite=False)
            except np.linalg.LinAlgError:
                return None
            _set_inverse(cache, k, _inverse(cache["F"][k]))
            cache["H"][k] = H
            cache["cf"][:, k] = np.where(mask[:, k], cache["cf"][:, k], 0.0)
            cache["cf"][rows, k] = curvature[rows, k]
            cache["fmask"][:, k] = mask[:, k]
            cache["nf"][k] = counts[k]
        return cache

    def _fold(self, X: Any, mask: np.ndarray) -> dict[str, Any] | None:
        """Take the rows removed since the refresh out of ``H~`` and its inverse.

        ``H~ <- H~ - U C U^T`` (``U`` their rows, ``C`` their cached curvatures) with the
        Sherman-Morrison-Woodbury formula for the inverse, ``O(k d^2)`` for ``k`` rows, so
        that the cached solves stay ``O(d^2)`` and contract fast. ``lam n_f I`` is left in
        ``H~`` (the shift ``lam (n_f - n')`` is applied separately). The Cholesky factor goes
        stale (``None``); it is only needed after a refresh, which recomputes it.
        """
        cache = self._cache
        removed = self._removed_since(cache, mask)
        if max((rows.size for rows in removed), default=0) < _FOLD_ROWS:
            return None
        cache = self._copy_cache(cache, None, mask, None)
        for k in range(self._K):
            rows = removed[k]
            weights = cache["cf"][rows, k]
            keep = weights > 0
            if np.any(keep):
                U = _rows(X, rows[keep])
                U = (U.toarray() if sp.issparse(U) else U).T
                w = weights[keep]
                HU = cache["Hinv"][k] @ U
                middle = np.diag(1.0 / w) - U.T @ HU
                try:
                    update = HU @ scipy.linalg.solve(middle, HU.T, assume_a="pos")
                except (np.linalg.LinAlgError, ValueError):
                    return None
                _set_inverse(cache, k, cache["Hinv"][k] + update)
                cache["H"][k] = cache["H"][k] - (U * w) @ U.T
                cache["F"][k] = None
            cache["fmask"][rows, k] = False
            cache["cf"][rows, k] = 0.0
        return cache

    def _removed_since(self, cache: dict[str, Any], mask: np.ndarray) -> list[np.ndarray]:
        """Per class, the rows in ``H~`` (``fmask``) that ``mask`` no longer has.

        Remembered for the last ``(fmask, mask)`` pair (held, so identity is safe; neither
        is changed in place once made): a step asks for them once per class and solve.
        """
        memo = getattr(self, "_removed_memo", None)
        if memo is not None and memo[0] is cache["fmask"] and memo[1] is mask:
            return memo[2]
        gone = cache["fmask"] & ~mask
        candidates = np.flatnonzero(gone.any(axis=1))
        rows = [candidates[gone[candidates, k]] for k in range(gone.shape[1])]
        self._removed_memo = (cache["fmask"], mask, rows)
        return rows

    def _cached_operator(
        self, X: Any, mask: np.ndarray, counts: np.ndarray, cache: dict[str, Any], k: int
    ) -> tuple[Any, int]:
        """``v -> Hf v`` for class ``k`` in float64, ``O(d^2 + r d)``, and ``r`` (see below).

        ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T - lam (nf - n') I`` is the cached
        Hessian restricted to the current rows (``r`` rows removed since the refresh).
        """
        rows = self._removed_since(cache, mask)[k]
        Xr = _rows(X, rows)
        weights = cache["cf"][rows, k]
        shift = self._l2 * (cache["nf"][k] - counts[k])
        H = cache["H"][k]

        def apply(v: np.ndarray) -> np.ndarray:
            return H @ v - np.asarray(Xr.T @ (weights * np.asarray(Xr @ v))).ravel() - shift * v

        return apply, rows.size

    def _cached_solve(
        self,
        X: Any,
        mask: np.ndarray,
        counts: np.ndarray,
        rhs: np.ndarray,
        touched: Any,
        cache: dict[str, Any],
        rtol: float = 1e-10,
        products: dict[int, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, int, np.ndarray]:
        """Solve ``Hf s = rhs`` by iterative refinement preconditioned with ``H~``.

        ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T - lam (nf - n') I`` is the cached
        Hessian restricted to the current rows. Each iteration costs ``O(d^2 + k d)``
        (``k`` rows removed since the refresh) and contracts the error by about ``k / n``.
        Returns the solution, the iteration count and the exact norms ``||rhs - Hf s||``.
        Exactness is not needed for rigour: whatever ``s`` results, the bound covers it.
        ``products``, if given, receives ``Hf s_k`` per class (the float64 products the
        refinement formed anyway, for :meth:`_measure`).
        """
        s = np.zeros_like(rhs)
        left = np.zeros(rhs.shape[0])
        iterations = 0
        for k in touched:
            apply, _ = self._cached_operator(X, mask, counts, cache, k)
            # the preconditioner: the explicit inverse of H~ (a matrix-vector product is
            # several times faster than two triangular solves; its rounding does not matter,
            # since the residuals below are formed in float64 with Hf itself)
            Hinv = cache["Hinv32"][k]
            target = rhs[k]
            floor = rtol * float(np.linalg.norm(target))
            sk = (Hinv @ target.astype(np.float32)).astype(np.float64)
            product = apply(sk)
            residual = target - product
            size = float(np.linalg.norm(residual))
            for _ in range(30):
                if size <= floor:
                    break
                candidate = sk + Hinv @ residual.astype(np.float32)
                new_product = apply(candidate)
                new_residual = target - new_product
                new_size = float(np.linalg.norm(new_residual))
                iterations += 1
                if new_size >= size:
                    break  # stagnation (rounding) or no contraction: keep the best
                sk, product, residual, size = candidate, new_product, new_residual, new_size
            s[k] = sk
            left[k] = size
            if products is not None:
                products[k] = product
        return s, iterations, left

    def _solver_mode(self) -> str:
        """``hessian``, with ``"amortized"`` read as ``"cg"`` above ``_GRAM_LIMIT`` columns."""
        if self.hessian == "amortized" and getattr(self, "_D", 0) > _GRAM_LIMIT:
            return "cg"
        return self.hessian

    def _head_preconditioner(
        self,
        X: Any,
        used: np.ndarray,
        inverse: np.ndarray,
        k: int,
        curvature: np.ndarray,
        counts: np.ndarray,
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``v -> M^-1 v`` for CG on the columns ``used``: Jacobi, except on the ``_CG_HEAD``
        most frequent columns of sparse ``X``, where ``M`` is the exact Hessian block.

        Hashed features are Zipf-distributed: the head columns occur in most rows and their
        correlations make the large eigenvalues that Jacobi misses (about half the CG
        iterations on the scaling benchmark's data). The block ``X_h^T diag(c) X_h + lam n I``
        and its Cholesky factor are formed once per design matrix, at the curvatures ``c``
        and counts of its first step (later removals only make the preconditioner less
        exact; ``M`` stays SPD, and the step is measured exactly afterwards).
        """

        def jacobi(v: np.ndarray) -> np.ndarray:
            return inverse * v

        if not sp.issparse(X):
            return jacobi
        head, factors = self._head_blocks(X, curvature, counts)
        positions = np.searchsorted(used, head)
        if head.size == 0 or np.any(positions >= used.size) or np.any(used[positions] != head):
            return jacobi
        factor = factors[k]

        def block(v: np.ndarray) -> np.ndarray:
            out = inverse * v
            out[positions] = scipy.linalg.cho_solve(factor, v[positions], check_finite=False)
            return out

        return block

    def _head_blocks(
        self, X: sp.csr_matrix, curvature: np.ndarray, counts: np.ndarray
    ) -> tuple[np.ndarray, list[Any]]:
        """The head columns of ``X`` and the per-class factors of their Hessian block."""
        memo = getattr(self, "_head_memo", None)
        if memo is not None and memo[0] is X:
            return memo[1], memo[2]
        frequency = np.bincount(X.indices, minlength=X.shape[1])
        head = np.flatnonzero(frequency)
        if head.size > _CG_HEAD:
            head = np.sort(np.argpartition(-frequency, _CG_HEAD)[:_CG_HEAD])
        part = X.tocsr()[:, head]
        factors = []
        for k in range(curvature.shape[1]):
            H = np.asarray((part.T @ (sp.diags(curvature[:, k]) @ part)).todense())
            H[np.diag_indices_from(H)] += self._l2 * counts[k]
            factors.append(scipy.linalg.cho_factor(H, check_finite=False))
        self._head_memo = (X, head, factors)
        return head, factors

    def _sparse_copies(self, X: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``X * X`` (for the Jacobi diagonal) and a float32 copy of sparse ``X`` (for the CG
        iterations), sharing ``X``'s index arrays; made once per design matrix.

        CG only has to find a good ``s``: its products may round in float32 (half the
        bytes of the values, a gather from a vector half the size) because ``T2`` is then
        computed exactly in float64 (:meth:`_measure`); a step that CG solved less well
        only spends more budget, and the refinement corrects it.
        """
        memo = getattr(self, "_sparse_memo", None)
        if memo is None or memo[0] is not X:
            X = X.tocsr()
            parts = (X.indices, X.indptr)
            squares = sp.csr_matrix((np.square(X.data), *parts), shape=X.shape, copy=False)
            single = sp.csr_matrix((X.data.astype(np.float32), *parts), shape=X.shape, copy=False)
            memo = self._sparse_memo = (X, squares, single)
        return memo[1], memo[2]

    def _cg_steps(
        self,
        X: Any,
        Z: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        rhs: np.ndarray,
        classes: Any,
    ) -> tuple[np.ndarray, int]:
        """``H'(w)^-1 rhs_k`` per class by Jacobi-preconditioned CG, matrix-free, ``O(nnz)``
        per iteration. Its accuracy matters for the budget, not for rigour: the caller
        measures ``T2 = ||H'(w) s - Delta||`` exactly afterwards.

        On columns no row uses (common for hashed features) the Hessian is ``lam n' I``:
        there the solution is ``rhs / (lam n')`` exactly and CG runs on the other columns.
        """
        curvature = _curvature(Z, mask)
        if isinstance(X, BlockedRows):
            diagonal = X.rmatmul(curvature, transform=np.square).T
            operand = X
        elif sp.issparse(X):
            squares, operand = self._sparse_copies(X)
            diagonal = np.asarray(squares.T @ curvature).T
        else:
            diagonal = np.asarray((X * X).T @ curvature).T
            operand = X
        used = np.flatnonzero(np.any(diagonal > 0, axis=0))
        diagonal = diagonal + self._l2 * counts[:, None]
        out = rhs / (self._l2 * np.maximum(counts, 1))[:, None]
        full = used.size == X.shape[1]
        iterations = 0
        for k in classes:
            weights = curvature[:, k].astype(operand.dtype)
            shift = self._l2 * counts[k]

            def hvp(v: np.ndarray, weights: np.ndarray = weights, shift: float = shift):
                wide = v if full else np.zeros(X.shape[1])
                if not full:
                    wide[used] = v
                wide = wide.astype(operand.dtype, copy=False)
                product = np.asarray(operand.T @ (weights * np.asarray(operand @ wide))).ravel()
                product = product if full else product[used]
                return product.astype(np.float64) + shift * v

            inverse = 1.0 / diagonal[k, used]
            preconditioner = self._head_preconditioner(X, used, inverse, k, curvature, counts)
            result = cg_solve(
                hvp,
                rhs[k, used],
                rtol=_CG_RTOL,
                maxiter=_CG_MAXITER,
                preconditioner=preconditioner,
            )
            out[k, used] = result.x
            iterations += result.iterations
        for k in np.setdiff1d(np.arange(rhs.shape[0]), np.asarray(list(classes), dtype=int)):
            out[k] = 0.0
        return out, iterations
