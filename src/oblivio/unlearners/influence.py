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

from oblivio.models.base import Model
from oblivio.unlearners._influence_base import _Influence
from oblivio.unlearners._second_order import SecondOrder
from oblivio.unlearners.base import register

__all__ = ["FirstOrder", "SecondOrder"]


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
