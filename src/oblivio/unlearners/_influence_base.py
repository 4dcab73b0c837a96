"""The shared base of the influence methods: options, passes over the data, the update.

:class:`_Influence` holds what :class:`~oblivio.unlearners.influence.FirstOrder` and
:class:`~oblivio.unlearners.influence.SecondOrder` share: checking the common options, the
curvature estimate (``lambda_max``) and its state, model helpers, the per-request memo of
passes over the data (``_memoised``), the gradient difference ``G``, the schedules
(``"chunks"``, ``"misclassified"``) and the update loop. The landing check, ``steps="auto"``
and the residual diagnostics are mixed in from :mod:`oblivio.unlearners._influence_landing`.
"The module docstring" in the docstrings below is that of
:mod:`oblivio.unlearners.influence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from oblivio.data import Change, Dataset, RequestError
from oblivio.linalg.eigen import largest_eigenvalue
from oblivio.linalg.solvers import SolverError
from oblivio.unlearners._influence_landing import _LandingMixin, _norm
from oblivio.unlearners.base import ON_FAILURE, Outcome, StateError, Unlearner

__all__: list[str] = []


class _Influence(_LandingMixin, Unlearner):
    """Shared machinery of :class:`FirstOrder` and :class:`SecondOrder`.

    Subclasses implement :meth:`_direction` (the step for one chunk of the change).
    """

    exact = False
    _SCHEDULES = ("chunks", "misclassified")

    # -- set-up ------------------------------------------------------------------------
    _AUTO_STEPS = False  # whether steps="auto" is offered

    def _check_common(self) -> None:
        auto = self._AUTO_STEPS and self.steps == "auto"
        if auto and self.schedule != "chunks":
            raise ValueError("steps='auto' repeats Newton steps on D~; it needs schedule='chunks'")
        if not auto and not (
            isinstance(self.steps, (int, np.integer))
            and not isinstance(self.steps, bool)
            and self.steps >= 1
        ):
            hint = " or 'auto'" if self._AUTO_STEPS else ""
            raise ValueError(f"steps must be a positive integer{hint}, got {self.steps!r}")
        allowed = ON_FAILURE + (("skip",) if self._AUTO_STEPS else ())
        if self.on_failure not in allowed:
            raise ValueError(
                f"on_failure must be one of {', '.join(map(repr, allowed))}, "
                f"got {self.on_failure!r}"
            )
        if not (
            isinstance(self.land_ratio, (int, float))
            and not isinstance(self.land_ratio, bool)
            and 0 < self.land_ratio <= 1
        ):
            raise ValueError(f"land_ratio must be in (0, 1], got {self.land_ratio!r}")
        if (self.epsilon is None) != (self.delta is None):
            raise ValueError(
                "epsilon and delta go together (the sigma needed for (epsilon, delta)-"
                f"certification); got epsilon={self.epsilon!r}, delta={self.delta!r}"
            )
        if self.epsilon is not None and not (
            isinstance(self.epsilon, (int, float))
            and math.isfinite(self.epsilon)
            and self.epsilon > 0
        ):
            raise ValueError(f"epsilon must be a positive finite number, got {self.epsilon!r}")
        if self.delta is not None and not (
            isinstance(self.delta, (int, float)) and 0 < self.delta < 1
        ):
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta!r}")
        if not (
            isinstance(self.residual_records, (int, np.integer)) and self.residual_records >= 0
        ):
            raise ValueError(
                f"residual_records must be a non-negative integer, got {self.residual_records!r}"
            )
        if self.schedule not in self._SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(map(repr, self._SCHEDULES))}, got "
                f"{self.schedule!r}"
            )
        for option in ("step_records", "curvature_records"):
            value = getattr(self, option)
            if value is not None and not (
                isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            ):
                raise ValueError(f"{option} must be None or a positive integer, got {value!r}")

    def _validate_change(self, change: Change) -> None:
        if self.schedule == "misclassified" and change.is_removal and int(self.steps) > 1:
            raise RequestError(
                "schedule='misclassified' refines the predictions on the replacement records; "
                "a removal has none (use schedule='chunks')"
            )

    def _needs_curvature(self) -> bool:
        return False

    def _prepare(self) -> None:
        self.lambda_max_: float | None = None
        if self._needs_curvature():
            self.lambda_max_ = self._mean_lambda_max(self.train_)

    def _mean_lambda_max(self, data: Dataset) -> float:
        """``lambda_max`` of the **mean** objective Hessian ``H(D) / |D|`` at ``theta``.

        Lanczos on Hessian-vector products (reference §4.3, "choosing s"); dividing by the
        number of records makes the value reusable after removals
        (``lambda_max(H(D~)) ~= |D~| lambda_max_``). With more than ``curvature_records``
        records the mean Hessian is that of a uniform sample of that many records (seeded):
        the cost of each product drops by ``n / curvature_records``, at the price of a
        sampling error of ``lambda_max`` (harmless for ``1 / lambda_max`` steps, which stay
        stable up to twice the exact value; LiSSA's ``s`` carries a factor-2 margin anyway).
        """
        limit = self.curvature_records
        if limit is not None and len(data) > limit:
            rng = np.random.default_rng(self.seed)
            data = data.take(np.sort(rng.choice(len(data), size=int(limit), replace=False)))
        hvp = self._hvp_callable(data)
        n = len(data)
        value = largest_eigenvalue(lambda v: hvp(v) / n, self._n_params(), tol=1e-3, seed=self.seed)
        if not (math.isfinite(value) and value > 0):
            raise SolverError(
                f"the largest Hessian eigenvalue is {value:.4g}; the objective has no positive "
                "curvature at theta, so no curvature-based step size exists (pass tau=...)"
            )
        return value

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"lambda_max": getattr(self, "lambda_max_", None)}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        value = meta.get("lambda_max")
        if value is not None and not (
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0
        ):
            raise StateError("lambda_max", f"must be None or a positive number, got {value!r}")
        self.lambda_max_ = value

    # -- model helpers -------------------------------------------------------------------
    def _theta(self) -> torch.Tensor:
        return self.model_.theta.detach().clone()

    def _n_params(self) -> int:
        return int(self.model_.theta.numel())

    def _to_theta(self, vector: Any) -> torch.Tensor:
        theta = self.model_.theta
        if isinstance(vector, torch.Tensor):
            return vector.detach().to(dtype=theta.dtype, device=theta.device).reshape(-1)
        return torch.as_tensor(np.asarray(vector), dtype=theta.dtype, device=theta.device).reshape(
            -1
        )

    def _hvp_callable(self, data: Dataset):
        """``v (numpy) -> H(data) v (numpy float64)`` at the current ``theta``."""
        model = self.model_

        def hvp(v: np.ndarray) -> np.ndarray:
            product = model.hvp(data, self._to_theta(v))
            return product.detach().cpu().double().numpy().reshape(-1)

        return hvp

    def _memoised(
        self,
        kind: str,
        data: Dataset,
        positions: np.ndarray | None,
        theta: torch.Tensor,
        compute: Callable[[], Any],
    ) -> Any:
        """``compute()``, or the value it gave earlier in this request for the same inputs.

        ``kind`` names the quantity, ``data`` (by identity: within a request datasets are
        never modified, and the memo keeps each one alive so that its id is not reused),
        ``positions`` the sample of it and ``theta`` the parameters, compared bit for bit:
        the pass would recompute exactly the stored value (module docstring, "one pass per
        value"). The rest of the model does not change during a request, and the memo
        lives only for one (``_forget``). Tensors are returned as copies.
        """
        memo = getattr(self, "_memo", None)
        if memo is None:
            return compute()
        flat = theta.detach().reshape(-1).contiguous().cpu()
        key = (
            kind,
            id(data),
            None if positions is None else np.asarray(positions).tobytes(),
            str(flat.dtype),
            # the raw bytes: exact equality (also for dtypes numpy lacks, e.g. bfloat16)
            flat.view(torch.uint8).numpy().tobytes(),
        )
        if key not in memo:
            memo[key] = (data, compute())
        value = memo[key][1]
        return value.clone() if isinstance(value, torch.Tensor) else value

    def _sum_grad(self, data: Dataset) -> torch.Tensor:
        if len(data) == 0:
            return torch.zeros_like(self.model_.theta)
        return self._memoised(
            "sum-gradient", data, None, self._theta(), lambda: self.model_.grad(data).detach()
        )

    def _objective(self, data: Dataset, theta: torch.Tensor) -> float:
        """``L(theta; data)`` as a float (one loss pass over ``data``, memoised)."""
        return self._memoised(
            "objective", data, None, theta, lambda: float(self.model_.objective(data, theta))
        )

    def _gradient_difference(self, before: Dataset, after: Dataset) -> torch.Tensor:
        """``G`` of (*): ``grad L(theta; D~) - grad L(theta; D)`` for ``Z=before -> Z~=after``."""
        theta = self._theta()
        G = self._sum_grad(after) - self._sum_grad(before)
        size_change = len(after) - len(before)
        if size_change:
            G = G + float(self.model_.l2) * size_change * theta
        return G

    def _residual_positions(self, n: int) -> np.ndarray | None:
        """The residual sample of this request (None: all ``n`` records)."""
        records = int(self.residual_records)
        if records == 0 or n <= records:
            return None
        rng = np.random.default_rng(
            None if self.seed is None else self.seed + len(getattr(self, "history_", []))
        )
        return np.sort(rng.choice(n, size=records, replace=False))

    def _objective_gradient(
        self, data: Dataset, records: int | None = None, positions: np.ndarray | None = None
    ) -> torch.Tensor:
        """``grad L(theta; data)`` (sum loss + ``l2 n theta`` + ``b``), or a sample estimate.

        With ``records < len(data)`` (or given ``positions``) the sum part is estimated from
        a uniform sample of that many records, scaled by ``n / records``.
        """
        model = self.model_
        theta = self._theta()
        n = len(data)
        if positions is None and records is not None and records < n:
            rng = np.random.default_rng(
                None if self.seed is None else self.seed + len(getattr(self, "history_", []))
            )
            positions = np.sort(rng.choice(n, size=records, replace=False))

        def compute() -> torch.Tensor:
            if positions is not None:
                gradient = (n / len(positions)) * model.grad(data.take(positions)).detach()
            else:
                gradient = model.grad(data).detach()
            gradient = gradient + float(model.l2) * n * theta
            noise = getattr(model, "noise", None)
            if noise is not None:
                gradient = gradient + torch.as_tensor(noise, dtype=theta.dtype).reshape(-1)
            return gradient

        # the residual diagnostic draws the landing check's sample again (same seed): one pass
        return self._memoised("objective-gradient", data, positions, theta, compute)

    # -- the update ----------------------------------------------------------------------
    def _chunks(self, change: Change) -> list[tuple[Dataset, Dataset, Dataset]]:
        """``steps`` successive sub-edits ``(Z_k, Z~_k, D_k)`` with ``D_last = D~``.

        The stepwise variant of the reference (§2; the "iterative" rows of its tables) splits
        the feature set; we split the affected records, which applies to every request type
        and likewise makes each step a smaller perturbation.
        """
        m = len(change)
        k = int(min(1 if self.steps == "auto" else self.steps, m))
        if k <= 1:
            return [(change.before, change.after, change.result)]
        chunks = []
        current = self.train_
        for index, part in enumerate(np.array_split(np.arange(m), k)):
            before = change.before.take(part)
            if change.is_removal:
                after = change.after
                current = current.drop(before.ids)
            else:
                after = change.after.take(part)
                current = current.update(before.ids, X=after.X, y=after.y)
            chunks.append((before, after, change.result if index == k - 1 else current))
        return chunks

    def _misclassified_step(self, change: Change, index: int) -> tuple[Dataset, Dataset] | None:
        """``(Z_k, Z~_k)`` of a refinement step of ``schedule="misclassified"``, or None.

        Reference §6.3 (the label-repair loop) and §6.2 ("stabilisation"): ``Z~_k`` are up to
        ``step_records`` replacement records (sampled with the seed) that the current model
        still misclassifies, ``Z_k`` the same inputs with the label the model currently
        predicts. None when every replacement record is classified as requested.
        """
        after = change.after
        predicted = np.asarray(self.model_.predict(after.X)).astype(np.int64)
        wrong = np.flatnonzero(predicted != after.y)
        if wrong.size == 0:
            return None
        limit = self.step_records
        if limit is not None and wrong.size > limit:
            seed = None if self.seed is None else [int(self.seed), index]
            wrong = np.sort(np.random.default_rng(seed).choice(wrong, size=limit, replace=False))
        targets = after.take(wrong)
        return targets.update(targets.ids, y=predicted[wrong]), targets

    def _plan(self, change: Change):
        """Yield ``(Z_k, Z~_k, D_k)`` step by step (lazily: later steps see the updates)."""
        if self.schedule == "chunks":
            yield from self._chunks(change)
            return
        yield change.before, change.after, change.result
        for index in range(1, int(self.steps)):
            pair = self._misclassified_step(change, index)
            if pair is None:
                return
            yield pair[0], pair[1], change.result

    def _forget(self, change: Change) -> Outcome:
        self._memo: dict[tuple, tuple[Dataset, Any]] | None = {}
        try:
            return self._update(change)
        finally:
            self._memo = None  # the next request may see other data and another theta

    def _update(self, change: Change) -> Outcome:
        diagnostics: dict[str, float] = {}
        start = self._theta()
        auto = self.steps == "auto"
        judge = int(self.residual_records) > 0 or auto
        # steps="auto" steps on the whole of D~, so it judges on the whole of it too
        positions = None if auto or not judge else self._residual_positions(len(change.result))
        if judge:  # g(theta_0) on D~ and the edit's own gradient G, both at theta_0
            G_edit = self._gradient_difference(change.before, change.after)
            g0 = self._objective_gradient(change.result, positions=positions) - G_edit
        request_G = torch.zeros_like(start)  # G of the request itself (all chunks summed)
        applied = skipped = 0
        for index, (before, after, edited) in enumerate(self._plan(change)):
            G = self._gradient_difference(before, after)
            if self.schedule == "chunks" or index == 0:
                request_G = request_G + G
            diagnostics["gradient_records"] = (
                diagnostics.get("gradient_records", 0.0) + len(before) + len(after)
            )
            if _norm(G) == 0.0:
                continue  # nothing changed for the model: skip the update (reference §2)
            # a refinement step of the "misclassified" schedule is the reference's heuristic,
            # not a descent step on L(.; D~): it is not judged by that objective
            refining = self.schedule == "misclassified" and index > 0
            step = self._direction(G, edited, diagnostics, refining=refining)
            if step is None:
                skipped += 1
                continue
            self.model_.theta = self._theta() - self._to_theta(step)
            applied += 1
        if auto:
            applied += self._more_newton_steps(change.result, start, g0, _norm(G_edit), diagnostics)
        diagnostics["grad_diff_norm"] = _norm(request_G)
        diagnostics["steps"] = float(applied)
        diagnostics["steps_skipped"] = float(skipped)
        diagnostics["update_norm"] = _norm(self._theta() - start)
        self._residual_diagnostics(change.result, diagnostics)
        if judge:
            self._judge_landing(change.result, positions, g0, _norm(G_edit), diagnostics)
        return Outcome(diagnostics=diagnostics)

    def _direction(
        self,
        G: torch.Tensor,
        edited: Dataset,
        diagnostics: dict[str, float],
        *,
        refining: bool = False,
    ) -> torch.Tensor | np.ndarray | None:
        raise NotImplementedError
