r"""First- and second-order influence unlearning (Warnecke et al., NDSS 2023).

A. Warnecke, L. Pirch, C. Wressnegger, K. Rieck, *Machine Unlearning of Features and
Labels*, NDSS 2023 (arXiv:2108.11577); reference ``influence-unlearning.md``.

Every request is an edit ``Z -> Z~`` of the training set (``Change.before`` / ``.after``;
``Z~`` is empty for removals). Up-weighting ``Z~`` and down-weighting ``Z`` by ``e`` and taking
one linear step to ``e = 1`` (reference §1) gives, with the gradient difference

    G(theta) = sum_{z~ in Z~} grad l(z~, theta) - sum_{z in Z} grad l(z, theta)
               + l2 (|Z~| - |Z|) theta                                               (*)

the updates (reference §2)

    first order:   theta_new = theta - tau G(theta)
    second order:  theta_new = theta - (H~ + mu I)^{-1} G(theta),

``H~`` the Hessian of the training **objective on the edited set** ``D~`` at ``theta`` (the
Newton step on the new objective, as the original code does for convex models and Guo et
al. use) and ``mu >= 0`` an optional damping (needed for non-convex models).

Conventions (oblivio's, reference §3): losses are **sums** over records and the objective on
``n`` records is ``sum l + l2 n / 2 ||theta||^2 + b . theta``. The term
``l2 (|Z~| - |Z|) theta`` in (*) is the change of the regulariser: ``G`` is exactly
``grad L(theta; D~) - grad L(theta; D)``, hence equals the gradient residual on ``D~``
whenever ``theta`` minimises ``L(.; D)``. For a removal (``Z~`` empty, ``m`` records)
``G = -sum_Z grad l - l2 m theta`` and the second-order update is Guo et al.'s Newton removal
``theta + H~^{-1} Delta``, ``Delta = l2 m theta + sum_Z grad l`` (ICML 2020, Eq. 5). The noise
term ``b . theta`` of a loss-perturbed model is the same in both objectives and drops out.
Warnecke et al. keep ``lambda`` fixed (not scaled by ``n``), under which the regulariser term
vanishes; with oblivio's per-record ``l2`` it must be kept (reference §2, "Relation to Guo").

Published hyper-parameters (``tau``, LiSSA's scale and damping) belong to the original
code's mixed sum/mean conventions and are not valid here; ``tau="auto"`` and
``lissa_scale="auto"`` derive them from the curvature instead.

Non-convex models (networks) need more than the formulas: the Hessian is indefinite and the
quadratic model behind the second-order step is only locally right. :class:`SecondOrder`
therefore accepts truncated conjugate-gradient steps that decrease the damped quadratic
model, never applies a step along negative curvature, and by default checks that a step
lowers the edited objective, raising the damping (Levenberg-Marquardt) otherwise; every
such event is counted in the diagnostics. Restricting ``theta`` to the last layer
(``TorchModel(params=[...])``) makes the problem convex in ``theta`` and is what the
reference does for its CNN. ``schedule="misclassified"`` implements the reference's
iterative label-repair loop (§6.3).

**Did the update land?** Both methods judge their own result against doing nothing. With
``g(theta)`` the objective gradient on ``D~`` (on the residual sample when ``D~`` is
larger than ``residual_records``) and ``G`` of (*) at the original ``theta_0``, the part of
the residual that the edit caused is ``g(theta) - g0`` with ``g0 = g(theta_0) - G`` (the
gradient ``theta_0`` already left on ``D``: zero at an optimum, not for a network stopped
early). Doing nothing leaves ``||G||``; the update leaves

    residual_ratio = ||g(theta_new) - g0|| / ||G||,

which for a convex model at its optimum is the plain ``||grad L(theta_new; D~)|| /
||grad L(theta_0; D~)||``. The update landed when ``residual_ratio <= land_ratio``
(diagnostic ``landed``); otherwise ``on_failure`` decides (warn by default). The check costs
one more gradient pass over ``D~`` (or its sample) at ``theta_0``; ``residual_records=0``
turns it off.

**One pass per value.** While a request is honoured, every pass over the data (an objective,
an objective gradient, a sum of per-record gradients) is made once for each exact set of
inputs (the same dataset, the same sample, bit-identical ``theta``) and its result reused
(``_Influence._memoised``). The same quantities recur: the landing check's ``g0`` is the
objective check's ``grad L(theta; D~) - G`` of a single-step request, the residual
diagnostic is the ratio's gradient, and ``steps="auto"`` evaluates its merit at the points
the objective check has just evaluated. Reusing them changes no number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from oblivio.data import Change, Dataset, RequestError
from oblivio.linalg.solvers import (
    SolverError,
    SolveResult,
    cg_solve,
    cholesky_solve,
    largest_eigenvalue,
    lissa,
)
from oblivio.models.base import Model
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners.base import (
    ON_FAILURE,
    Outcome,
    StateError,
    Unlearner,
    register,
    warn_missed,
)

__all__ = ["FirstOrder", "SecondOrder"]

_DENSE_LIMIT = 3000  # parameters up to which solver="auto" forms the dense Hessian
_AUTO_TARGET = 0.1  # steps="auto": stop once the residual ratio is at most this
_AUTO_MAX_STEPS = 8  # steps="auto": Newton steps at most (training polishes with more)


def _noise_constant(delta: float) -> float:
    """``c = sqrt(2 ln(1.5 / delta))`` (Guo et al., ICML 2020, Thm 3)."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def _norm(vector: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(vector.detach().double()))


class _Influence(Unlearner):
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

    def _ratio(self, edited: Dataset, positions: Any, g0: torch.Tensor, size: float) -> float:
        """``||g(theta) - g0|| / ||G||`` at the current ``theta`` (module docstring)."""
        return _norm(self._objective_gradient(edited, positions=positions) - g0) / size

    def _judge_landing(
        self, edited: Dataset, positions: Any, g0: torch.Tensor, size: float, diagnostics: dict
    ) -> None:
        if size == 0.0:  # the edit does not move the optimum: nothing to land
            self._judge(diagnostics, True, "")
            return
        ratio = self._ratio(edited, positions, g0, size)
        diagnostics["residual_ratio"] = ratio
        hint = (
            " Try steps='auto' (repeated Newton steps), more damping_increases, or retrain."
            if self._AUTO_STEPS
            else " Try second-order, a tuned tau, more steps, or retrain."
        )
        self._judge(
            diagnostics,
            ratio <= float(self.land_ratio),
            f"the update did not land: it leaves {ratio:.3g}x the gradient residual of doing "
            f"nothing on the edited data (land_ratio={self.land_ratio:g}); the model is not "
            f"close to what retraining gives.{hint}",
        )

    def _more_newton_steps(
        self,
        edited: Dataset,
        start: torch.Tensor,
        g0: torch.Tensor,
        size: float,
        diagnostics: dict,
    ) -> int:
        """``steps="auto"``: damped Newton steps on ``D~`` until the ratio is <= 0.1.

        Newton's method on the merit ``M(theta) = L(theta; D~) - g0 . theta``, whose
        gradient ``g(theta) - g0`` is the residual the edit caused (module docstring; for a
        convex model at its optimum ``g0 = 0`` and ``M`` is the edited objective). Each step
        solves ``(H~ + mu I) t = g(theta) - g0`` like the first one and backtracks
        (``theta - a t``, ``a = 1, 1/2, ...``, 10 halvings at most) until ``M`` decreases:
        the globally convergent damped Newton method (Boyd & Vandenberghe, *Convex
        Optimization*, §9.5). If the first (plain influence) step left more residual than
        doing nothing, the steps restart from ``theta_0``. Stops at ratio ``<= 0.1``, when
        two steps in a row do not improve the best ratio by 10% (damped steps far from the
        optimum may raise the gradient while lowering ``M``), when backtracking finds no
        decrease, when the solver gives no usable step, or after 8 steps in all. Returns the
        extra steps taken.
        """
        if size == 0.0:
            diagnostics["newton_steps"] = 1.0
            return 0
        ratio = self._ratio(edited, None, g0, size)
        if ratio > 1.0:  # the plain step overshot: doing nothing is the better start
            self.model_.theta = start
            ratio = 1.0
            diagnostics["newton_restarts"] = 1.0
        g0_np = g0.detach()

        def merit(theta: torch.Tensor) -> float:
            # the objective at theta and at theta - step was evaluated by _direction's check
            return self._objective(edited, theta) - float(torch.dot(g0_np, theta))

        taken = stale = 0
        best = ratio
        while ratio > _AUTO_TARGET and taken + 1 < _AUTO_MAX_STEPS and stale < 2:
            theta = self._theta()
            step = self._direction(self._objective_gradient(edited) - g0, edited, diagnostics)
            if step is None:
                break
            step = self._to_theta(step)
            before, scale = merit(theta), 1.0
            for _ in range(10):
                if merit(theta - scale * step) < before:
                    break
                scale *= 0.5
            else:
                break  # no decrease along the Newton direction: stalled
            self.model_.theta = theta - scale * step
            taken += 1
            ratio = self._ratio(edited, None, g0, size)
            stale = 0 if ratio < 0.9 * best else stale + 1
            best = min(best, ratio)
        diagnostics["newton_steps"] = float(1 + taken)
        return taken

    def _residual_diagnostics(self, edited: Dataset, diagnostics: dict[str, float]) -> None:
        """``gradient_residual`` on ``D~`` (or an estimate on a sample) and ``sigma_certified``.

        ``sigma_certified = residual * c / epsilon``, ``c = sqrt(2 ln(1.5 / delta))``, is the
        noise standard deviation of a loss-perturbed model (Guo et al., Thm 3) for which the
        measured residual would make this update (epsilon, delta)-certified: the post-hoc
        analysis of reference §5, reported for convex models with an exact residual only. It
        is not a certificate: a certified pipeline fixes sigma before training (use
        ``CertifiedRemoval``).
        """
        limit = int(self.residual_records)
        if limit == 0:
            return
        n = len(edited)
        if n <= limit:
            residual = _norm(self._objective_gradient(edited))
            diagnostics["gradient_residual"] = residual
            if self.epsilon is not None and isinstance(self.model_, LogisticRegression):
                diagnostics["sigma_certified"] = (
                    residual * _noise_constant(self.delta) / self.epsilon
                )
        else:
            diagnostics["gradient_residual_estimate"] = _norm(
                self._objective_gradient(edited, records=limit)
            )
            diagnostics["residual_sample_size"] = float(limit)

    def _direction(
        self,
        G: torch.Tensor,
        edited: Dataset,
        diagnostics: dict[str, float],
        *,
        refining: bool = False,
    ) -> torch.Tensor | np.ndarray | None:
        raise NotImplementedError


@register
class FirstOrder(_Influence):
    r"""First-order influence update ``theta - tau G`` (Warnecke et al., NDSS 2023, Sec. 4.1).

    ``G`` is the gradient difference between the replacements and the affected records, sum
    convention, including the regulariser change for removals (module docstring, Eq. (*)).
    Cost: gradients of the ``|Z| + |Z~|`` affected records only.

    For a convex objective, the residual left on the edited data is ``(I - tau H_xi) G``
    (reference §5, ``H_xi`` the Hessian averaged along the step), so any
    ``0 < tau <= 1 / lambda_max`` leaves a residual no larger than doing nothing (up to the
    curvature change along the step).

    Parameters
    ----------
    model : Model
        Template or trained model (``LogisticRegression`` or ``TorchModel``; with
        ``TorchModel(params=...)`` only those parameters move).
    tau : "auto" or float
        Unlearning rate (sum convention: ``G`` is a sum over the affected records).
        ``"auto"`` uses ``1 / lambda_max(H(D~))`` with ``lambda_max`` of the objective
        Hessian, estimated once by Lanczos at ``fit``/``attach`` (per record, rescaled to the
        current training-set size): the largest step that provably does not increase the
        residual of a convex model (reference §2, [derived]). It is conservative: on a
        network that has memorised the affected records (gradients near zero on ``Z``, the
        other records dominating the curvature along ``G``) it barely moves the model, and
        the reference's advice applies: tune ``tau`` per task (§2, "tau must be tuned"). The
        value used is reported as the diagnostic ``tau``. The paper's values (e.g. 3e-4 for
        the LSTM) assume mean losses and do not transfer (reference §3:
        ``tau_sum = tau_mean / m``).
    steps : int
        Number of updates; what each one does depends on ``schedule``.
    schedule : {"chunks", "misclassified"}
        ``"chunks"``: split the affected records into ``steps`` chunks and update after each
        (the paper's stepwise variant, reference §2), recomputing ``G`` at the current
        parameters. ``"misclassified"``: the first update is the plain one for the whole
        request; each further one (up to ``steps - 1``, stopping early when none is left)
        takes up to ``step_records`` replacement records the current model still
        misclassifies and moves them from the label it predicts to the requested one:
        ``Z_k = (x, predicted)``, ``Z~_k = (x, requested)`` (reference §6.3, the label-repair
        loop; §6.2, "stabilisation"). [code] uses predicted labels from the first step on;
        here the first step is the request's own update, so ``steps=1`` is the plain method.
        Needs a classifier (``predict``) and replacement records (not a removal).
    step_records : int or None
        Cap on the records of a ``"misclassified"`` refinement step (reference: 1024),
        sampled with ``seed``; None: all of them.
    curvature_records : int or None
        ``lambda_max`` for ``tau="auto"`` is estimated on a uniform sample of at most this
        many training records (None: all of them).
    epsilon, delta : float, optional
        If given (together), convex models report ``sigma_certified``.
    residual_records : int
        The gradient residual ``||grad L(theta_new; D~)||`` is computed on the whole edited
        set when it has at most this many records, else estimated on a uniform sample of this
        size (reported as ``gradient_residual_estimate``); 0 skips it, and with it the
        landing check.
    land_ratio : float
        The update *landed* when it leaves at most this fraction of the residual doing
        nothing leaves (``residual_ratio``, module docstring); reported as ``landed``.
        First order promises only a descent step (``tau <= 1 / lambda_max`` never raises a
        convex residual), so the default asks for a 10% reduction; on digits it removes
        about 25% for 10 removed records and 0.01% for zeroing all 64 columns (where test
        accuracy stays 0.91 and retraining gives 0.10). Second order defaults to 0.1.
    on_failure : {"warn", "raise", "ignore"}
        When the update did not land: ``"warn"`` emits
        :class:`~oblivio.unlearners.UnlearningWarning`; ``"raise"`` raises
        :class:`~oblivio.unlearners.UnlearningError` and nothing changes; ``"ignore"``
        only sets the diagnostics.
    seed : int or None
        Seed of the Lanczos start vector and of the residual sample.

    Notes
    -----
    Diagnostics: ``grad_diff_norm`` (norm of the request's gradient difference, summed over
    the chunks), ``tau``, ``steps`` (updates applied), ``steps_skipped``,
    ``gradient_records`` (per-record gradients evaluated), ``gradient_residual`` or
    ``gradient_residual_estimate``, ``sigma_certified``, ``residual_ratio`` and ``landed``
    (module docstring).
    """

    name = "first-order"
    needs = frozenset({"forget"})

    def __init__(
        self,
        model: Model,
        *,
        tau: float | str = "auto",
        steps: int = 1,
        schedule: str = "chunks",
        step_records: int | None = None,
        curvature_records: int | None = 20_000,
        epsilon: float | None = None,
        delta: float | None = None,
        residual_records: int = 20_000,
        land_ratio: float = 0.9,
        on_failure: str = "warn",
        seed: int | None = 0,
    ) -> None:
        super().__init__(model)
        self.land_ratio = land_ratio
        self.on_failure = on_failure
        self.tau = tau
        self.steps = steps
        self.schedule = schedule
        self.step_records = step_records
        self.curvature_records = curvature_records
        self.epsilon = epsilon
        self.delta = delta
        self.residual_records = residual_records
        self.seed = seed

    def _check_params(self) -> None:
        self._check_common()
        if isinstance(self.tau, str):
            if self.tau != "auto":
                raise ValueError(f"tau must be 'auto' or a positive number, got {self.tau!r}")
        elif not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be 'auto' or a positive number, got {self.tau!r}")

    def _needs_curvature(self) -> bool:
        return self.tau == "auto"

    def _current_tau(self, n_records: int) -> float:
        if self.tau != "auto":
            return float(self.tau)
        if getattr(self, "lambda_max_", None) is None:
            self.lambda_max_ = self._mean_lambda_max(self.train_)
        return 1.0 / (n_records * self.lambda_max_)

    def _direction(self, G, edited, diagnostics, *, refining=False):
        tau = self._current_tau(len(edited))
        diagnostics["tau"] = tau
        return tau * G


@register
class SecondOrder(_Influence):
    r"""Second-order influence update ``theta - (H~ + mu I)^{-1} G`` (Warnecke et al., Sec. 4.2).

    ``H~`` is the Hessian of the objective on the **edited** training set at the current
    parameters (reference §2: a Newton step on the new objective); ``G`` as in the module
    docstring, Eq. (*). For a pure removal without damping this is exactly the Newton removal
    step of certified removal (Guo et al., ICML 2020, Eq. 5) with ``sigma = 0``. For convex
    models the residual left is ``(H~ - H~_xi) H~^{-1} G``, second order in ``||G||``
    (reference §5).

    **Non-convex models.** A network's Hessian is indefinite, so the update needs damping
    ``mu`` (reference §4.2: ``mu >= |lambda_min(H~)|`` for an exact solve), or, restricted
    to the last layer (``TorchModel(params=[...])``), the head's Hessian is positive
    semi-definite (cross-entropy is convex in the logits' weights) and a small ``mu`` suffices.
    Matrix-free solvers rarely reach a tight tolerance there in few iterations, yet their
    iterate is still a useful *truncated Newton* step (Nocedal & Wright, *Numerical
    Optimization*, §7.1): on a positive definite ``H~ + mu I`` every conjugate-gradient
    iterate lowers the damped quadratic model of the edited objective,

        q(t) = 1/2 t^T (H~ + mu I) t - G^T t,       q(t) < 0  <=>  the model predicts a decrease,

    (``L(theta - t; D~) ~= L(theta; D~) + q(t)`` when ``theta`` minimises ``L(.; D)``). With
    ``inexact="apply"`` (default) such a step is applied and reported as truncated. A step
    along which the damped Hessian has **negative curvature** is never applied (the model is
    unbounded there and the step's length arbitrary), nor, by default on networks, one that
    increases the edited objective: the damping is raised and the system solved again
    (Levenberg-Marquardt, ``damping_increases``, ``objective_check``). What remains with
    negative curvature, ``q(t) >= 0``, an objective increase, divergence or non-finite
    values is a failure, handled by ``on_failure``. The
    conventions are the library's: sums over records, ``mu`` added to the sum Hessian (a
    per-record damping ``mu / n``).

    Parameters
    ----------
    model : Model
        Template or trained model (``LogisticRegression``, or ``TorchModel``, optionally
        restricted with ``params=...`` to e.g. the last layers: ``theta``, gradients and
        Hessians are then those of the chosen parameters only).
    solver : {"auto", "cholesky", "cg", "lissa"}
        ``"cholesky"``: dense Hessian and Cholesky solve (a few thousand parameters at most;
        an indefinite or ill-conditioned ``H~ + mu I`` raises
        :class:`~oblivio.linalg.SolverError`). ``"cg"``: matrix-free (truncated) conjugate
        gradients on Hessian-vector products of the whole edited set, stopping at relative
        residual ``rtol``, at ``max_iter`` or at negative curvature
        (:func:`~oblivio.linalg.cg_solve`). ``"lissa"``: the stochastic Neumann series of
        the reference (§4.3) on mini-batch Hessians. ``"auto"``: Cholesky up to 3000
        parameters, CG above.
    damping : float
        ``mu >= 0`` added to the **sum** Hessian for every solver (needed for non-convex
        models: ``mu > |lambda_min(H~)|`` for an exact solve, see
        :func:`oblivio.linalg.smallest_eigenvalue`). For LiSSA this is the reference's
        ``d = mu / (n s)`` (its effective damping ``d s`` applies to the mean Hessian
        ``H~ / n``).
    steps : int or "auto"
        As in :class:`FirstOrder`; ``H~`` is recomputed at every step (on the partially
        edited set for ``"chunks"``, on ``D~`` for ``"misclassified"``). ``"auto"``: one
        step, then further Newton steps on the edited objective while the residual ratio
        exceeds 0.1 and keeps improving, 8 steps at most (a training
        run polishes with as many Newton steps after L-BFGS; on a large feature edit of
        breast-cancer, 1 step left 0.23x the residual of doing nothing, 3 steps 0.07x).
        Damped (backtracking) steps; see ``_more_newton_steps``. Diagnostic
        ``newton_steps``.
    schedule, step_records
        As in :class:`FirstOrder`.
    rtol : float or None
        CG tolerance on ``||(H~ + mu I) t - G|| / ||G||``; ``None``: 1e-8 for float64
        parameters, 1e-4 for float32 (the precision of float32 Hessian-vector products).
    max_iter : int or None
        CG iteration cap (``None``: ``min(10 p, 1000)``) or LiSSA iterations per round
        (``None``: one pass over the data, ``ceil(n / lissa_batch_size)``, as the reference's
        generic implementation).
    inexact : {"apply", "fail"}
        A solve that stopped short of its tolerance (CG at ``max_iter``; LiSSA whose
        relative residual exceeds 1) but decreases the damped quadratic model
        (``q(t) < 0``) without negative curvature along it: ``"apply"`` it as a truncated
        Newton step (diagnostic ``solver_truncated``), or treat it as a failure
        (``"fail"``).
    damping_increases : int
        Levenberg-Marquardt safeguard, at most this many re-solves per step (0: none; the
        step then fails): negative curvature ``c <= 0`` (CG direction or LiSSA solution)
        raises the damping to ``2 (mu + |c|)``; a step that increases the edited objective
        (with ``objective_check``) to ``max(4 mu, t^T (H~ + mu I) t / t^T t)``. The largest
        damping used is the diagnostic ``damping``.
    objective_check : {"auto", "always", "never"}
        Evaluate the edited objective ``L(theta - t; D~)`` (a loss pass over ``D~`` at
        ``theta`` and one per step tried, and a gradient pass at ``theta`` that a single-step
        request shares with the landing check when that runs on all of ``D~``) and reject a
        step that does not decrease it (beyond the first-order effect of any gradient
        ``theta`` leaves on the unedited data; see ``_direction``): the quadratic model can
        be far off on a network (on a small MLP a converged damped Newton step, predicted
        to lower the objective by 44, raised it from 186 to 955).
        ``"auto"``: for every model but ``LogisticRegression`` (whose steps are exact Newton
        steps on a convex objective). Refinement steps of ``schedule="misclassified"`` are
        not checked: they deliberately trade objective for correct predictions on the
        replacement records (the reference's heuristic).
    lissa_scale : "auto" or float
        LiSSA's ``s`` for the mean Hessian; must exceed the mini-batch Hessians' largest
        eigenvalue. ``"auto"``: twice ``lambda_max`` of the mean Hessian (Lanczos, on a
        sample of ``curvature_records`` records, estimated at ``fit``/``attach``).
    lissa_batch_size, lissa_rounds, lissa_patience : int
        LiSSA's ``B``, ``R`` and ``P`` (reference §4.3).
    curvature_records : int or None
        Sample size for ``lissa_scale="auto"`` (None: all training records).
    on_failure : {"warn", "raise", "ignore", "skip"}
        What to do when the update did not land (as in :class:`FirstOrder`) and when the
        solver gives no usable step (Cholesky on an indefinite or ill-conditioned matrix;
        LiSSA diverging; any result that is non-finite or does not decrease ``q``; a
        non-converged solve under ``inexact="fail"``). ``"raise"``: the error
        (:class:`~oblivio.linalg.SolverError` or ``UnlearningError``), nothing changes.
        Otherwise an unusable step is not applied (never apply a diverged LiSSA step,
        reference §4.3), the training set is still edited, ``diagnostics`` say so
        (``solver_failed``, ``steps_skipped``, ``lissa_diverged``, ``landed``) and
        ``"warn"`` (default) also emits ``UnlearningWarning``. ``"skip"`` is the former
        name of ``"ignore"``.
    land_ratio : float
        As in :class:`FirstOrder`, default 0.1: a Newton step promises a residual second
        order in ``||G||``; more left means the quadratic model did not hold (the target of
        ``steps="auto"``).
    epsilon, delta, residual_records, seed
        As in :class:`FirstOrder` (``seed`` also drives LiSSA's batch order).

    Notes
    -----
    Diagnostics: ``grad_diff_norm``, ``steps`` (updates applied), ``steps_skipped``,
    ``solver_iterations``, ``cg_iterations`` (CG), ``hvp_calls``, ``solver_residual`` (the
    largest relative residual of ``(H~ + mu I) t = G`` over the steps; LiSSA's is computed
    with one full Hessian-vector product), ``solver_converged`` (1 if every step met its
    tolerance), ``solver_truncated`` (steps applied without meeting it),
    ``negative_curvature`` (steps that ended on it, after any damping increases),
    ``damping_increases`` (re-solves), ``objective_rejections`` (steps rejected because the
    edited objective rose), ``model_change`` (sum of ``q(t)`` over the applied steps: the
    decrease of the edited objective the quadratic model predicts), ``objective_change``
    (the actual change of the edited objective, when checked),
    ``lissa_diverged`` (LiSSA), ``condition`` (Cholesky), ``damping`` (the largest damping
    used), ``solver_failed``,
    ``gradient_records``, ``gradient_residual`` (or ``gradient_residual_estimate``),
    ``sigma_certified``, ``residual_ratio`` and ``landed`` (module docstring),
    ``newton_steps`` (``steps="auto"``).
    """

    name = "second-order"
    needs = frozenset({"forget", "retain"})
    _AUTO_STEPS = True

    _SOLVERS = ("auto", "cholesky", "cg", "lissa")

    def __init__(
        self,
        model: Model,
        *,
        solver: str = "auto",
        damping: float = 0.0,
        steps: int = 1,
        schedule: str = "chunks",
        step_records: int | None = None,
        rtol: float | None = None,
        max_iter: int | None = None,
        inexact: str = "apply",
        damping_increases: int = 8,
        objective_check: str = "auto",
        lissa_scale: float | str = "auto",
        lissa_batch_size: int = 256,
        lissa_rounds: int = 1,
        lissa_patience: int = 5,
        curvature_records: int | None = 20_000,
        on_failure: str = "warn",
        epsilon: float | None = None,
        delta: float | None = None,
        residual_records: int = 20_000,
        land_ratio: float = 0.1,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model)
        self.land_ratio = land_ratio
        self.solver = solver
        self.damping = damping
        self.steps = steps
        self.schedule = schedule
        self.step_records = step_records
        self.rtol = rtol
        self.max_iter = max_iter
        self.inexact = inexact
        self.damping_increases = damping_increases
        self.objective_check = objective_check
        self.lissa_scale = lissa_scale
        self.lissa_batch_size = lissa_batch_size
        self.lissa_rounds = lissa_rounds
        self.lissa_patience = lissa_patience
        self.curvature_records = curvature_records
        self.on_failure = on_failure
        self.epsilon = epsilon
        self.delta = delta
        self.residual_records = residual_records
        self.seed = seed

    def _check_params(self) -> None:
        self._check_common()
        if self.solver not in self._SOLVERS:
            raise ValueError(
                f"solver must be one of {', '.join(map(repr, self._SOLVERS))}, got {self.solver!r}"
            )
        if not (
            isinstance(self.damping, (int, float))
            and math.isfinite(self.damping)
            and self.damping >= 0
        ):
            raise ValueError(f"damping must be a finite number >= 0, got {self.damping!r}")
        if self.rtol is not None and not (isinstance(self.rtol, float) and self.rtol > 0):
            raise ValueError(f"rtol must be None or a positive float, got {self.rtol!r}")
        if self.max_iter is not None and not (
            isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1
        ):
            raise ValueError(f"max_iter must be None or a positive integer, got {self.max_iter!r}")
        if isinstance(self.lissa_scale, str):
            if self.lissa_scale != "auto":
                raise ValueError(
                    f"lissa_scale must be 'auto' or a positive number, got {self.lissa_scale!r}"
                )
        elif not (isinstance(self.lissa_scale, (int, float)) and self.lissa_scale > 0):
            raise ValueError(
                f"lissa_scale must be 'auto' or a positive number, got {self.lissa_scale!r}"
            )
        for option in ("lissa_batch_size", "lissa_rounds", "lissa_patience"):
            value = getattr(self, option)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{option} must be a positive integer, got {value!r}")
        if self.inexact not in ("apply", "fail"):
            raise ValueError(f"inexact must be 'apply' or 'fail', got {self.inexact!r}")
        if self.objective_check not in ("auto", "always", "never"):
            raise ValueError(
                f"objective_check must be 'auto', 'always' or 'never', got {self.objective_check!r}"
            )
        if not (
            isinstance(self.damping_increases, (int, np.integer))
            and not isinstance(self.damping_increases, bool)
            and self.damping_increases >= 0
        ):
            raise ValueError(
                f"damping_increases must be a non-negative integer, got {self.damping_increases!r}"
            )

    def _needs_curvature(self) -> bool:
        return self.solver == "lissa" and self.lissa_scale == "auto"

    def _resolved_solver(self) -> str:
        if self.solver != "auto":
            return self.solver
        has_dense = callable(getattr(self.model_, "hessian", None))
        return "cholesky" if has_dense and self._n_params() <= _DENSE_LIMIT else "cg"

    def _default_rtol(self) -> float:
        if self.rtol is not None:
            return float(self.rtol)
        return 1e-8 if self.model_.theta.dtype == torch.float64 else 1e-4

    def _checks_objective(self) -> bool:
        if self.objective_check == "auto":
            return not isinstance(self.model_, LogisticRegression)
        return self.objective_check == "always"

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

    def _direction(self, G, edited, diagnostics, *, refining=False):
        """Solve, check, and if needed re-solve with more damping (Levenberg-Marquardt).

        A solution is *usable* when it is finite, not diverged, free of negative curvature
        and decreases the damped quadratic model (``q(t) < 0``); with the objective check the
        edited objective itself must confirm the decrease the model predicts:

            L(theta - t; D~) - L(theta; D~) + t^T g0 < 0,      g0 = grad L(theta; D),

        i.e. the step lowers ``L(.; D~)`` by more than the first-order effect of the gradient
        ``g0`` that ``theta`` leaves on the unedited data (zero at an optimum, where this is
        plain descent; a network stopped early leaves one, and the quadratic model
        ``q(t)``, built from ``G`` alone, does not account for it). ``g0 = grad L(theta; D~)
        - G`` costs one gradient pass over ``D~``, none in a single-step request whose
        landing check runs on all of ``D~`` (it is that check's ``g0``; module docstring,
        "one pass per value").
        Negative curvature (``c = p^T (H~ + mu I) p / p^T p <= 0`` on a CG direction or
        along a LiSSA solution) raises the damping to ``2 (mu + |c|)``: at least doubled and
        twice past the curvature found. An objective increase means the quadratic model is
        not trusted that far: the damping becomes ``max(4 mu, t^T (H~ + mu I) t / t^T t)``,
        which at least halves the step along ``t``. Both are the Levenberg-Marquardt remedy
        for Newton steps on non-convex objectives (Nocedal & Wright, 2nd ed., §10.3; Martens,
        ICML 2010, §4.1), at most ``damping_increases`` times per step.
        """
        solver = self._resolved_solver()
        for key in (
            "solver_failed",
            "solver_truncated",
            "negative_curvature",
            "damping_increases",
            "objective_rejections",
        ):
            diagnostics.setdefault(key, 0.0)
        diagnostics.setdefault("damping", float(self.damping))
        rhs = G.detach().cpu().double().numpy()
        check = self._checks_objective() and not refining
        theta = self._theta()
        before = self._objective(edited, theta) if check else math.nan
        leftover = None
        if check:  # g0 = grad L(theta; D) = grad L(theta; D~) - G, exactly, by (*)
            # for a single-step request this is the landing check's g0: no new pass
            gradient = self._objective_gradient(edited) - G
            leftover = gradient.detach().cpu().double().numpy()
        damping = float(self.damping)
        cache: dict[str, Any] = {}
        increases = 0
        while True:
            try:
                result = self._solve(rhs, edited, solver, damping, cache)
            except SolverError as error:
                if self.on_failure == "raise":
                    raise
                diagnostics["solver_failed"] = 1.0
                diagnostics["solver_converged"] = 0.0
                self._solver_skipped(str(error))
                return None
            self._record(result, solver, diagnostics)
            change = float(result.info.get("model_change", math.nan))
            finite = not result.diverged and bool(np.all(np.isfinite(result.x)))
            negative = bool(result.info.get("negative_curvature"))
            usable = finite and not negative and change < 0.0
            converged = bool(result.converged) and usable
            retry = None
            if negative and finite:
                retry = 2.0 * (damping + abs(float(result.info.get("curvature", 0.0))))
            elif usable and (converged or self.inexact == "apply") and check:
                after = self._objective(edited, theta - self._to_theta(result.x))
                if not after - before + float(leftover @ result.x) < 0.0:
                    diagnostics["objective_rejections"] += 1.0
                    x = result.x
                    along = (2.0 * (change + float(rhs @ x))) / max(float(x @ x), 1e-300)
                    retry = max(4.0 * damping, along)
                    usable = False
            if retry is not None and increases < int(self.damping_increases):
                damping, increases = retry, increases + 1
                diagnostics["damping_increases"] += 1.0
                continue
            break
        diagnostics["damping"] = max(diagnostics["damping"], damping)
        diagnostics["negative_curvature"] += float(negative)
        diagnostics["solver_converged"] = min(
            diagnostics.get("solver_converged", 1.0), float(converged)
        )
        if usable and (converged or self.inexact == "apply"):
            diagnostics["model_change"] = diagnostics.get("model_change", 0.0) + change
            if check:
                diagnostics["objective_change"] = (
                    diagnostics.get("objective_change", 0.0) + after - before
                )
            if not converged:
                diagnostics["solver_truncated"] += 1.0
            return result.x
        diagnostics["solver_failed"] = 1.0
        message = self._failure_message(
            result, solver, finite, negative, change, damping, increases, retry is not None
        )
        if self.on_failure != "raise":
            self._solver_skipped(message)
            return None
        raise SolverError(message)

    def _solver_skipped(self, message: str) -> None:
        """A step the solver could not give is skipped; say so unless told to ignore it."""
        if self.on_failure == "warn":
            warn_missed(f"second-order: no usable step, this update was skipped: {message}")

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
