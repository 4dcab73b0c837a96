"""One Newton step of certified removal with its rigorous bound (``T1`` and ``T2``).

The bound's derivation is in :mod:`oblivio.unlearners.certified`; what follows is how
each ``hessian`` mode computes the step and accounts what it leaves.

Hessian modes
-------------
``hessian="exact"`` (the original procedure, with a Cholesky solve instead of an explicit
inverse): ``H'(w)`` is built and factorised for every step, ``O(n d^2 + d^3)``; then
``T2 ~= 0`` (it is still computed and accounted, to cover rounding).

``hessian="amortized"`` (default). A cache holds a fixed SPD matrix
``H~ = sum_i cf_i x_i x_i^T + lam n_f I`` (the Hessian at the last refresh: ``cf_i`` the
curvatures then) and its Cholesky factor. Per step:

1. ``s ~= Hf^-1 Delta`` where ``Hf = H~ - sum_{removed since} cf_i x_i x_i^T -
   lam (n_f - n') I`` is the refresh-time Hessian restricted to the current rows; solved by
   iterative refinement preconditioned with the cached factor, ``O(d^2 + k d)`` per
   iteration (``k`` rows removed since the refresh; contraction about ``k / n``).
2. One blocked pass over ``X`` gives ``a = X' s`` and ``H'(w) s`` at the *current*
   weights, hence ``T2`` exactly and the ``T1`` bound; ``O(n d)``. For dense ``X`` the pass
   reads a float32 copy of ``X`` and computes only ``X'^T ((c - cf) * a)`` with it (``Hf s``
   in float64): half the memory traffic; every rounding error of the float32 arithmetic is
   bounded (``_measure``) and added to ``T2`` and the norms of ``a``, and the margins
   updated with it carry an error bound that is settled by an exact float64 product when
   it would matter.
3. If ``||T2|| > refresh * T1``: a correction ``s <- s - u`` with ``Hf u = T2`` whose
   effect is *bounded* without another pass (see ``_deferred_correction``; ``X u`` is
   folded into the next step's pass), then up to ``refine - 1`` measured corrections
   ``s <- s - H~^-1 (H'(w) s - Delta)`` (one more pass each); if still too large, a partial
   refresh (removed rows taken out of ``H~``, the 2% of rows whose curvature drifted most
   updated, ``O(t d^2 + d^3)``), then a full rebuild of ``H~`` at the current weights
   (``O(n d^2 + d^3)``), after which ``s`` is the exact Newton step.

``hessian="cg"`` (and ``"amortized"`` when ``d > 4096``, e.g. hashed sparse features): no
``d x d`` matrix at all. ``s`` solves ``H'(w) s = Delta`` by preconditioned conjugate
gradients (``O(nnz(X))`` per iteration; columns no row uses have ``H' = lam n' I`` and are
solved exactly): for sparse ``X`` the preconditioner is the exact Hessian block of the 256
most frequent columns (formed once per design matrix) and Jacobi elsewhere, and the CG
products run on a float32 copy of ``X``'s values. ``T2 = ||H'(w) s - Delta||`` is then
computed exactly with one Hessian-vector product in float64 (plus a rounding allowance,
see ``_measure``), so neither choice touches rigour; if it is too large, up to ``refine``
corrections ``s <- s - H'^-1 (H' s - Delta)`` follow.
``||X'||_2`` is then bounded by ``min(||X||_F, sqrt(||X||_1 ||X||_inf))`` when both sides of
``X`` exceed 4096 (:func:`~oblivio.linalg.spectral_norm_bound`).

A certified fit of the amortised mode forms the per-class Hessians once, at the end of a
short L-BFGS run (preconditioned with ``X^T X / 4 + lam n I``, on a float32 copy of dense
``X``), polishes to the exact optimum with float64 chord-Newton steps using their
factors, and keeps them as the cache (``_fit_with_cached_hessians``). Dense data stored as
float32 or memory-mapped is used through :class:`~oblivio.data.blocked.BlockedRows`
(float64 products a block of rows at a time, no float64 copy); its float32 rows are then
the shadow the per-step pass reads.

Whatever ``s`` is used, ``T2`` is computed exactly or rigorously bounded (deferred
margins, the ``O(d^2)`` correction) and ``T1`` bounded: every certificate is rigorous;
``refresh`` caps the extra budget a step may spend on ``T2`` at ``refresh`` times its ``T1``
bound, or ``refresh * 1e-5`` of the whole budget for steps whose ``T1`` is below that.
Removed rows are folded into the cached inverse every 64 removals (Woodbury,
``O(k d^2)``). ``||X'||_2`` is never recomputed per step.

"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats

from oblivio.data.blocked import BlockedRows
from oblivio.unlearners._certified_cache import HessianCacheMixin
from oblivio.unlearners._certified_numerics import (
    _UNIT,
    GAMMA,
    _apply_mask,
    _curvature,
    _gamma,
)
from oblivio.unlearners._passes import BLOCK, fused_pass, thread_pool

_BUDGET_FLOOR = 1e-5  # per step, as a share of the budget (see _newton)


class NewtonStepMixin(HessianCacheMixin):
    """The step, its measured pass and its bound (a part of :class:`CertifiedRemoval`)."""

    def _measure(
        self,
        X: Any,
        Z: np.ndarray,
        p_norm: np.ndarray,
        S: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        s: np.ndarray,
        Delta: np.ndarray,
        xnorm: np.ndarray,
        p_image: np.ndarray | None = None,
        *,
        zerr: np.ndarray | None = None,
        cache: dict[str, Any] | None = None,
        products: dict[int, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """One pass over ``X``: ``a = X s``, ``T2 >= ||H'(w) s - Delta||`` and ``T1``.

        ``products`` holds ``Hf s_k`` already formed (in float64, by the same operator) for
        this ``s``, ``cache`` and ``mask`` (:meth:`_cached_solve`); missing classes are
        formed here.

        ``Z`` may lag the exact margins by a deferred correction ``X p^T`` with
        ``||p_k|| = p_norm[k]`` and by at most ``zerr[k]`` per row (float32 updates): the
        curvatures then differ by at most ``gamma (R ||p|| + zerr)`` per row (or by
        ``gamma (||X' p||_2 + sqrt(n') zerr)`` in 2-norm), so ``H'(w) s`` is computed up to
        ``err = ||X'||_2 gamma (min(R ||p|| ||a||_2, p_image ||a||_inf) + zerr ||a||_2)``,
        which is added to ``T2``.

        Mixed precision (dense ``X`` with an amortised cache). Split
        ``H'(w) s = Hf s + X'^T (dc * a)`` with ``dc = c - cf`` (current minus cached
        curvatures on the current rows). ``Hf s`` is formed in float64 in ``O(d^2 + r d)``;
        the pass computes ``a^ = X32 s32`` and ``X32^T (dc * a^)`` in float32 (blocks of
        ``B`` rows, summed in float64): half the memory traffic of a float64 pass. Rounding is
        bounded with Higham's ``gamma_m = m u / (1 - m u)`` (``u = 2^-24``, any summation
        order): ``|a^_i - a_i| <= e_a = gamma_{d+3} R ||s||`` (``x``, ``s`` rounded to float32,
        then a ``d``-term dot product); the second product errs by at most
        ``||X'||_2 ||dc||_2 e_a + (gamma_{B+8} + gamma^64_{n/B}) R ||dc * a^||_1`` (the
        vector ``(sum_i |x_ij| |v_i|)_j`` has 2-norm ``<= R ||v||_1``); the float64 ``Hf s``
        by at most ``16 (d + r + 2) u_64 sqrt(d) (gamma ||X||_2^2 + lam n_f) ||s||`` (``r`` rows
        removed since the refresh). All of this goes into ``err``; ``||a||_2``, ``||a||_4``,
        ``||a||_inf`` are replaced by upper bounds (``+ sqrt(n') e_a`` etc.), and the new
        margins ``Z + a^`` carry ``e_a`` more error (``e_a`` returned, summed into ``zerr``).
        """
        lam = self._l2
        K = self._K
        if zerr is None:
            zerr = np.zeros(K)
        e_a = np.zeros(K)
        hs_err = np.zeros(K)
        dc = dc_norm = None
        mixed = cache is not None and self._X32 is not None and X is self._X
        if mixed:
            n0, d = X.shape
            # curvatures and their drift, zero outside the mask; in place, as these (n, K)
            # element-wise passes cost as much as the float32 pass itself
            curvature = _curvature(Z)
            dc = curvature - cache["cf"]
            _apply_mask(mask, curvature, dc)
            A32, HS = fused_pass(
                self._X32, s, dc, workers=thread_pool(self.n_jobs), parts=self.n_jobs
            )
            A_full = A32.astype(np.float64)
            A = _apply_mask(mask, A_full.copy())
            s_norm = np.linalg.norm(s, axis=1)
            e_a = _gamma(d + 3) * self._R * s_norm
            dc_norm = np.sqrt(np.einsum("ik,ik->k", dc, dc))
            # ||dc * a^||_1 <= ||dc||_2 ||a^||_2 (Cauchy-Schwarz)
            weighted = dc_norm * np.sqrt(np.einsum("ik,ik->k", A, A))
            block_gamma = _gamma(BLOCK + 8) + _gamma(n0 // BLOCK + 2 + self.n_jobs, _UNIT)
            hs_err = xnorm * dc_norm * e_a + block_gamma * self._R * weighted
            for k in range(K):
                if not np.any(s[k]):
                    continue
                apply, removed = self._cached_operator(X, mask, counts, cache, k)
                HS[k] += apply(s[k]) if products is None or k not in products else products[k]
                h_norm = math.sqrt(d) * (GAMMA * xnorm[k] ** 2 + lam * cache["nf"][k])
                hs_err[k] += 16.0 * (d + removed + 2) * _UNIT * h_norm * s_norm[k]
                # forming H~ = sum cf_i x_i x_i^T erred by <= gamma_n || |X|^T C |X| ||_2
                # <= gamma_n max(cf) ||X||_F^2 <= gamma_n R^2 n / 4 (any summation order;
                # doubled for the rows folds and partial refreshes add or take out)
                hs_err[k] += _gamma(2 * n0 + 2, _UNIT) * 0.25 * self._R**2 * n0 * s_norm[k]
        else:
            # float64 products: |fl(x_i.s) - x_i.s| <= gamma_{q+2} R ||s|| (q terms per row)
            # and fl(X^T (c * a)) errs by <= gamma_{n+2} R ||c * a||_1 plus the propagated
            # ||X'||_2 ||c||_inf sqrt(n') e_a (Higham, any summation order)
            curvature = _curvature(Z, mask)
            if sp.issparse(X) or isinstance(X, BlockedRows):
                A_full = np.asarray(X @ s.T)
                HS = np.asarray(X.T @ (curvature * A_full)).T
                per_row = int(np.diff(X.indptr).max(initial=0)) if sp.issparse(X) else X.shape[1]
            else:
                A_full, HS = fused_pass(X, s, curvature)
                per_row = X.shape[1]
            HS += lam * counts[:, None] * s
            A = A_full * mask
            s_norm = np.linalg.norm(s, axis=1)
            e_a = _gamma(per_row + 2, _UNIT) * self._R * s_norm
            hs_err = (
                _gamma(X.shape[0] + 2, _UNIT) * self._R * np.abs(curvature * A).sum(axis=0)
                + xnorm * GAMMA * np.sqrt(counts) * e_a
                + 2 * _UNIT * lam * counts * s_norm
            )
        r2 = HS - Delta
        root_n = np.sqrt(counts.astype(np.float64))
        squares = np.square(A)
        ones = np.ones(squares.shape[0])
        # upper bounds on the exact norms (the (1 + 4u) covers rounding a^2 and its root)
        a2 = np.sqrt(ones @ squares) + root_n * e_a
        a4 = np.einsum("ik,ik->k", squares, squares) ** 0.25 + np.sqrt(root_n) * e_a
        lag = GAMMA * self._R * p_norm * a2  # |c~_i - c_i| <= gamma R ||p||
        if p_image is not None and np.any(lag):  # or ||c~ - c||_2 <= gamma ||X' p||_2, times
            top = squares.max(axis=0) if A.size else np.zeros(K)  # ... ||a||_inf
            a_inf = np.sqrt(top) * (1.0 + 4.0 * _UNIT) + e_a
            lag = np.minimum(lag, GAMMA * p_image * a_inf)
        err = xnorm * (lag + GAMMA * zerr * a2) + hs_err
        T2 = np.linalg.norm(r2, axis=1) + err
        T1 = 0.5 * GAMMA * xnorm * a4**2
        return {
            "A_full": A_full,
            "A": A,
            "a2": a2,
            "a4": a4,
            "T1": T1,
            "T2": T2,
            "r2": r2,
            "err": err,
            "curvature": curvature,
            "e_a": e_a,
            "zerr": zerr,
            "dc": dc,
            "dc_norm": dc_norm,
        }

    def _image_norm(self, V: np.ndarray, xnorm: np.ndarray) -> np.ndarray:
        """Upper bounds on ``||X' v_k||_2`` per class: ``sqrt(v^T G v)`` or ``||X'||_2 ||v||``."""
        plain = xnorm * np.linalg.norm(V, axis=1)
        if self._gram is None or not np.any(plain):
            return plain
        quad = np.einsum("kd,kd->k", V @ self._gram, V)
        # rounding of v^T G v is at most about d u ||G||_2 ||v||^2 = d u (||X||_2 ||v||)^2
        slack = 4.0 * (V.shape[1] + 2) * _UNIT * plain**2
        return np.minimum(plain, np.sqrt(np.maximum(quad, 0.0) + slack))

    def _deferred_correction(
        self,
        X: Any,
        mask: np.ndarray,
        counts: np.ndarray,
        m: dict[str, Any],
        classes: list[int],
        xnorm: np.ndarray,
        p_norm: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One correction ``s <- s - u``, ``Hf u = r2``, bounded without another pass.

        With ``r2 ~= H'(w) s - Delta`` (exact up to the ``err`` of :meth:`_measure`), the new
        correction term is ``H'(w)(s - u) - Delta = (r2 - Hf u) + err - (H'(w) - Hf) u`` and
        ``||(H'(w) - Hf) u|| = ||X'^T ((c - cf) * X' u)|| <= ||X'||_2 ||c - cf||_2 R ||u||``
        (``|x_i . u| <= R ||u||``), or ``<= ||X'||_2 ||c - cf||_inf ||X' u||_2``, whichever
        is smaller (``c - cf`` from the lagging curvatures plus the lag, deferred and
        float32); ``||r2 - Hf u||``
        is computed exactly. The curvature term uses ``||X'(s - u)||_4 <= ||X' s||_4 +
        ||X' u||_2``. ``||X' u||_2 <= sqrt(u^T G u)`` with the Gram matrix ``G`` of the rows
        at build time. ``X' u`` joins the deferred correction of the margins, so this costs
        ``O(d^2 + n)``.
        """
        rhs = np.zeros_like(m["r2"])
        rhs[classes] = m["r2"][classes]
        # what the solve leaves is accounted exactly (``left``): modest accuracy suffices
        u, iterations, left = self._cached_solve(
            X, mask, counts, rhs, classes, self._cache, rtol=1e-3
        )
        if m["dc"] is not None and m["cache"] is self._cache:
            shift, shift_norm = m["dc"], m["dc_norm"]  # the pass's own c - cf
        else:
            shift = m["curvature"] - self._cache["cf"] * mask  # lagging c minus cf
            shift_norm = np.linalg.norm(shift, axis=0)
        root_n = np.sqrt(counts.astype(np.float64))
        drift_2 = shift_norm + GAMMA * (m["p_image"] + root_n * m["zerr"])
        drift_inf = np.max(np.abs(shift), axis=0) + GAMMA * (self._R * p_norm + m["zerr"])
        u_norm = np.linalg.norm(u, axis=1)
        u_image = self._image_norm(u, xnorm)  # >= ||X' u||_2 >= ||X' u||_4
        term = np.minimum(drift_2 * self._R * u_norm, drift_inf * u_image)
        T2 = left + m["err"] + xnorm * term
        T1 = 0.5 * GAMMA * xnorm * (m["a4"] + u_image) ** 2
        return u, T1, T2, iterations

    def _newton(
        self,
        X: Any,
        Z: np.ndarray,
        S: np.ndarray,
        mask: np.ndarray,
        counts: np.ndarray,
        Delta: np.ndarray,
        delta_max: np.ndarray,
        xnorm: np.ndarray,
        *,
        pending: np.ndarray | None = None,
        zerr: np.ndarray | None = None,
        refresh_all: bool = False,
    ) -> dict[str, Any]:
        """One (approximate) Newton step on the edited data with its rigorous bound.

        ``X, mask, counts`` describe ``D'``; ``Z - X pending^T`` are the margins at the
        current weights ``self._W`` up to ``zerr`` per row (float32 rounding, see
        :meth:`_measure`); ``Delta = -grad L_b(w; D')`` assuming ``grad L_b(w; D) = 0``.
        ``refresh_all`` rebuilds the amortised cache for every class first (edits).
        """
        K = self._K
        lam = self._l2
        touched = np.flatnonzero(np.any(Delta != 0, axis=1))
        cache = None
        refreshed = 0
        full_refreshes = 0
        iterations = 0
        corrected = 0
        deferred = None
        if pending is None:
            pending = np.zeros_like(Delta)
        if zerr is None:
            zerr = np.zeros(K)

        def settle() -> None:  # exact margins at the current weights, O(n d) in float64
            nonlocal Z, pending, zerr
            if np.any(pending) or np.any(zerr):
                Z = np.asarray(X @ self._W.T)
                pending = np.zeros_like(pending)
                zerr = np.zeros(K)

        mode = self._solver_mode()
        first_products = None  # Hf s per class, formed by the cached solve
        if mode == "cg":  # the lagging margins' error is accounted in the measured T2
            s, iterations = self._cg_steps(X, Z, mask, counts, Delta, touched)
        elif mode == "exact" or refresh_all:
            settle()
            curvature = _curvature(Z, mask)
            s = np.zeros_like(Delta)
            if self.hessian == "exact":
                for k in touched:
                    H = self._hessian(X, curvature[:, k], counts[k])
                    factor = scipy.linalg.cho_factor(H, check_finite=False)
                    s[k] = scipy.linalg.cho_solve(factor, Delta[k], check_finite=False)
            else:
                cache = self._fresh_cache(X, Z, mask, counts, range(K), self._cache)
                refreshed = K
                for k in touched:
                    s[k] = scipy.linalg.cho_solve(cache["F"][k], Delta[k], check_finite=False)
        else:
            folded = self._fold(X, mask)
            if folded is not None:  # becomes the cache (restored by forget() on failure)
                cache = self._cache = folded
            # solve error lands in T2, which is measured and, if large, corrected
            rtol = 1e-6 if self.refine >= 1 else 1e-10
            first_products = {}
            s, iterations, _ = self._cached_solve(
                X, mask, counts, Delta, touched, self._cache, rtol=rtol, products=first_products
            )

        def measure(products: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
            p_norm = np.linalg.norm(pending, axis=1)
            p_image = self._image_norm(pending, xnorm)
            current = None
            if mode == "amortized":
                current = self._cache if cache is None else cache
            out = self._measure(
                X,
                Z,
                p_norm,
                S,
                mask,
                counts,
                s,
                Delta,
                xnorm,
                p_image,
                zerr=zerr,
                cache=current,
                products=products,
            )
            out["p_image"] = p_image
            out["cache"] = current
            return out

        m = measure(first_products)
        tiny = 1e-12 * (1.0 + np.linalg.norm(Delta, axis=1))
        # steps whose curvature term is negligible against the budget need no refresh: the
        # correction term may then reach refresh * 1e-5 * budget (<= 0.5% of the budget per
        # 1000 steps at the default refresh)
        floor = _BUDGET_FLOOR * self.budget_total

        def is_stale(k: int) -> bool:
            return bool(m["T2"][k] > self.refresh * max(m["T1"][k], floor) + tiny[k])

        if mode == "cg":  # exact corrections s <- s - H^-1 (H s - Delta), one pass each
            for _ in range(max(int(self.refine), 1)):
                stale = [k for k in touched if is_stale(k)]
                if not stale:
                    break
                rhs = np.zeros_like(m["r2"])
                rhs[stale] = m["r2"][stale]
                correction, more = self._cg_steps(X, Z, mask, counts, rhs, stale)
                iterations += more
                s = s - correction
                m = measure()
        if mode == "amortized" and not refresh_all:
            stale = [k for k in touched if is_stale(k)]
            if stale and self.refine >= 1:
                p_norm = np.linalg.norm(pending, axis=1)
                u, T1, T2, more = self._deferred_correction(
                    X, mask, counts, m, stale, xnorm, p_norm
                )
                iterations += more
                accepted = [k for k in stale if T2[k] <= self.refresh * max(T1[k], floor) + tiny[k]]
                corrected = len(accepted)
                if accepted:
                    deferred = np.zeros_like(s)
                    deferred[accepted] = u[accepted]
                    s = s - deferred
                    m["T1"][accepted], m["T2"][accepted] = T1[accepted], T2[accepted]
                stale = [k for k in stale if k not in accepted]
            if stale:  # measured corrections and refreshes need the exact margins
                settle()
                if deferred is not None:
                    m = measure()  # X s for the whole corrected s
                    deferred = None
                    stale = [k for k in touched if is_stale(k)]
            for _ in range(max(int(self.refine) - 1, 0)):  # exact, measured corrections
                if not stale:
                    break
                correction = np.zeros_like(s)
                for k in stale:
                    correction[k] = self._cache["Hinv32"][k] @ m["r2"][k].astype(np.float32)
                s = s - correction
                m = measure()
                stale = [k for k in touched if is_stale(k)]
            if stale:  # first a partial refresh (rows that drifted most), then a full one
                partial = self._partial_refresh(X, Z, mask, counts, stale)
                if partial is not None:
                    cache = partial
                    refreshed += len(stale)
                    s_new, more, _ = self._cached_solve(X, mask, counts, Delta, stale, partial)
                    iterations += more
                    s[stale] = s_new[stale]
                    m = measure()
                    stale = [k for k in stale if is_stale(k)]
            if stale:
                cache = self._fresh_cache(
                    X, Z, mask, counts, stale, self._cache if cache is None else cache
                )
                refreshed += len(stale)
                full_refreshes = len(stale)
                for k in stale:
                    s[k] = scipy.linalg.cho_solve(cache["F"][k], Delta[k], check_finite=False)
                m = measure()
        T1, T2 = m["T1"], m["T2"]
        s_norm = np.linalg.norm(s, axis=1)
        if self.bound == "data":
            per_class = T1 + T2
        else:
            s_max = np.maximum(s_norm, delta_max / (lam * np.maximum(counts, 1)))
            per_class = GAMMA * self._R**3 * counts * s_max**2 + T2
        untouched = np.setdiff1d(np.arange(K), touched)
        per_class[untouched] = 0.0
        # the deferred margin correction carried to the next step: settle it once its lag
        # term would no longer be small against this step's curvature term
        new_pending = pending if deferred is None else pending + deferred
        Z_new = Z + m["A_full"]
        new_zerr = zerr + m["e_a"]
        lag_next = (
            xnorm * GAMMA * (self._R * np.linalg.norm(new_pending, axis=1) + new_zerr) * m["a2"]
        )
        if np.any(lag_next > 0.05 * T1 + tiny):
            Z_new = np.asarray(X @ (self._W + s).T)  # exact margins at w + s
            new_pending = np.zeros_like(new_pending)
            new_zerr = np.zeros(K)
        return {
            "s": s,
            "Z_new": Z_new,  # margins at w + s, up to the deferred X pending^T
            "pending": new_pending,
            "zerr": new_zerr,
            "bound": float(np.sqrt(np.sum(per_class**2))),
            "correction": float(np.sqrt(np.sum(T2**2))),
            "bound_cor1": float(np.sqrt(np.sum((GAMMA * xnorm * s_norm * m["a2"]) ** 2))),
            "cache": cache,
            "refreshed": refreshed,
            "iterations": iterations,
            "full_refreshes": full_refreshes,
            "corrections": corrected if deferred is not None else 0,
        }
