"""Second-order influence's solver handling: one solve of ``(H~ + mu I) t = G``.

:class:`_SolverMixin` picks the solver (``solver="auto"``), runs a Cholesky, conjugate-
gradient or LiSSA solve (:mod:`oblivio.linalg.solvers`), accumulates the solver's numbers in
the diagnostics and words the message of an unusable step. The Levenberg-Marquardt loop that
calls it (``_direction``) and the options it reads are
:class:`~oblivio.unlearners.influence.SecondOrder`'s
(:mod:`oblivio.unlearners._second_order`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from oblivio.data import Dataset
from oblivio.linalg.solvers import (
    SolverError,
    SolveResult,
    cg_solve,
    cholesky_solve,
    lissa,
)

__all__: list[str] = []

_DENSE_LIMIT = 3000  # parameters up to which solver="auto" forms the dense Hessian


class _SolverMixin:
    """Solves, their accounting and failure messages for ``SecondOrder``'s Newton systems."""

    def _resolved_solver(self) -> str:
        if self.solver != "auto":
            return self.solver
        has_dense = callable(getattr(self.model_, "hessian", None))
        return "cholesky" if has_dense and self._n_params() <= _DENSE_LIMIT else "cg"

    def _default_rtol(self) -> float:
        if self.rtol is not None:
            return float(self.rtol)
        return 1e-8 if self.model_.theta.dtype == torch.float64 else 1e-4

    def _solve(
        self, rhs: np.ndarray, edited: Dataset, solver: str, damping: float, cache: dict
    ) -> SolveResult:
        """One solve of ``(H~ + damping I) t = G``; ``cache`` keeps the dense Hessian."""
        if solver == "cholesky":
            if "hessian" not in cache:
                cache["hessian"] = self.model_.hessian(edited)
            return cholesky_solve(cache["hessian"], rhs, damping=damping)
        hvp = self._hvp_callable(edited)
        if solver == "cg":
            cap = self.max_iter if self.max_iter is not None else min(10 * rhs.size, 1000)
            preconditioner = None
            if callable(getattr(self.model_, "hessian_diagonal", None)):
                # Jacobi: O(nnz) once per solve, no d x d matrix (high-dimensional sparse X)
                if "diagonal" not in cache:
                    cache["diagonal"] = self.model_.hessian_diagonal(edited)
                inverse = 1.0 / (cache["diagonal"] + damping)

                def preconditioner(v: np.ndarray) -> np.ndarray:
                    return inverse * v

            return cg_solve(
                hvp,
                rhs,
                damping=damping,
                rtol=self._default_rtol(),
                maxiter=cap,
                preconditioner=preconditioner,
            )
        # LiSSA on the mean Hessian H~ / n: H~^{-1} G = (H~ / n)^{-1} (G / n)
        n = len(edited)
        if self.lissa_scale == "auto":
            if getattr(self, "lambda_max_", None) is None:
                self.lambda_max_ = self._mean_lambda_max(self.train_)
            scale = 2.0 * self.lambda_max_
        else:
            scale = float(self.lissa_scale)
        d = damping / (n * scale)
        if d >= 1.0:
            raise SolverError(
                f"damping={damping:g} is too large for LiSSA with scale {scale:.4g} on {n} "
                f"records (d = damping / (n s) = {d:.3g} must be < 1); raise lissa_scale"
            )
        model = self.model_

        def batch_hvp(positions: np.ndarray, u: np.ndarray) -> np.ndarray:
            product = model.hvp(edited.take(positions), self._to_theta(u))
            return product.detach().cpu().double().numpy().reshape(-1) / len(positions)

        result = lissa(
            batch_hvp,
            rhs / n,
            n_records=n,
            batch_size=int(self.lissa_batch_size),
            scale=scale,
            damping=d,
            max_iter=self.max_iter,
            rounds=int(self.lissa_rounds),
            patience=int(self.lissa_patience),
            seed=self.seed,
        )
        if result.diverged:
            return result
        # exact relative residual and model change of the damped system, one full HVP
        product = hvp(result.x) + damping * result.x
        residual = float(np.linalg.norm(product - rhs)) / float(np.linalg.norm(rhs))
        curvature = float(result.x @ product)
        info = {
            **result.info,
            "scale": scale,
            "model_change": 0.5 * curvature - float(rhs @ result.x),
            # t^T (H~ + mu I) t <= 0: the step points along negative curvature
            "negative_curvature": float(curvature <= 0.0),
        }
        if curvature <= 0.0:
            info["curvature"] = curvature / max(float(result.x @ result.x), 1e-300)
        return SolveResult(
            x=result.x,
            method="lissa",
            iterations=result.iterations,
            hvp_calls=result.hvp_calls + 1,
            residual=residual,
            converged=residual <= 1.0,
            diverged=False,
            info=info,
        )

    def _record(self, result: SolveResult, solver: str, diagnostics: dict[str, float]) -> None:
        """Accumulate the solver's numbers over the steps and attempts."""

        def add(key: str, value: float) -> None:
            diagnostics[key] = diagnostics.get(key, 0.0) + float(value)

        add("solver_iterations", result.iterations)
        add("hvp_calls", result.hvp_calls)
        residual = float(result.residual)
        if math.isfinite(residual) or "solver_residual" not in diagnostics:
            diagnostics["solver_residual"] = max(diagnostics.get("solver_residual", 0.0), residual)
        if solver == "cg":
            add("cg_iterations", result.iterations)
        if solver == "cholesky":
            diagnostics["condition"] = max(
                diagnostics.get("condition", 0.0), result.info["condition"]
            )
        if solver == "lissa":
            diagnostics["lissa_diverged"] = max(
                diagnostics.get("lissa_diverged", 0.0), float(result.diverged)
            )
            if "scale" in result.info:
                diagnostics["lissa_scale"] = result.info["scale"]

    def _failure_message(
        self,
        result: SolveResult,
        solver: str,
        finite: bool,
        negative: bool,
        change: float,
        damping: float,
        increases: int,
        wanted_more: bool,
    ) -> str:
        tail = " Nothing was changed (on_failure='warn' or 'ignore' would edit the data "
        tail += "without updating the model)."
        if solver == "lissa" and result.diverged:
            return (
                f"LiSSA diverged after {result.iterations} iterations; increase lissa_scale "
                "(> the largest mini-batch Hessian eigenvalue), add damping (> |lambda_min| "
                "for non-convex models), or use solver='cg'." + tail
            )
        if negative:
            return (
                f"the damped Hessian is not positive definite: {solver} met negative curvature "
                f"with damping {damping:.4g} (after {increases} increases); its iterate is not "
                "a trustworthy step. Pass damping > |lambda_min(H~)| (see "
                "oblivio.linalg.smallest_eigenvalue), allow more damping_increases, or "
                "restrict theta to the last layer (convex head)." + tail
            )
        if not finite or not change < 0.0:
            return (
                f"the {solver} solution does not decrease the damped quadratic model of the "
                f"edited objective (q(t) = {change:.3g} >= 0 or not finite)." + tail
            )
        if wanted_more:
            return (
                f"every step tried increased the edited objective L(theta - t; D~) (damping "
                f"raised {increases} times, to {damping:.4g}): the quadratic model is not "
                "trustworthy here. Pass a larger damping or allow more damping_increases." + tail
            )
        if solver == "lissa":
            return (
                f"LiSSA left a relative residual {result.residual:.3g} > 1 after "
                f"{result.iterations} iterations and inexact='fail'; raise max_iter or "
                "lissa_scale, or use inexact='apply'." + tail
            )
        return (
            f"CG did not reach rtol={self._default_rtol():g} in {result.iterations} iterations "
            f"(relative residual {result.residual:.3g}) and inexact='fail'; add damping, raise "
            "max_iter or rtol, or use inexact='apply' (a truncated Newton step)." + tail
        )
