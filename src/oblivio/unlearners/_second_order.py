"""The second-order influence method, ``SecondOrder`` (registered as "second-order").

``theta - (H~ + mu I)^{-1} G`` with the Levenberg-Marquardt safeguards for non-convex models;
the solves themselves are in :mod:`oblivio.unlearners._influence_solve`, the shared update
loop in :mod:`oblivio.unlearners._influence_base`. Import it from
:mod:`oblivio.unlearners.influence` (or :mod:`oblivio.unlearners`), whose module docstring
(the one "the module docstring" below refers to) derives the update.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oblivio.linalg.solvers import SolverError
from oblivio.models.base import Model
from oblivio.models.logistic import LogisticRegression
from oblivio.unlearners._influence_base import _Influence
from oblivio.unlearners._influence_solve import _SolverMixin
from oblivio.unlearners.base import register, warn_missed

__all__ = ["SecondOrder"]


@register
class SecondOrder(_SolverMixin, _Influence):
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

    def _checks_objective(self) -> bool:
        if self.objective_check == "auto":
            return not isinstance(self.model_, LogisticRegression)
        return self.objective_check == "always"

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
