"""Did an influence update land: the residual ratio, ``steps="auto"`` and the diagnostics.

:class:`_LandingMixin` judges an update of :class:`~oblivio.unlearners.influence.FirstOrder`
or :class:`~oblivio.unlearners.influence.SecondOrder` against doing nothing (the residual
ratio and ``landed``), takes the further damped Newton steps of ``steps="auto"`` and reports
the gradient residual and ``sigma_certified``; with the small helpers ``_norm`` and
``_noise_constant`` it is the lowest layer of the influence methods
(:mod:`oblivio.unlearners._influence_base` mixes it in). "The module docstring" in the
docstrings below is that of :mod:`oblivio.unlearners.influence`, which derives ``G``,
``g0`` and the ratio.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from oblivio.data import Dataset
from oblivio.models.logistic import LogisticRegression

__all__: list[str] = []

_AUTO_TARGET = 0.1  # steps="auto": stop once the residual ratio is at most this
_AUTO_MAX_STEPS = 8  # steps="auto": Newton steps at most (training polishes with more)


def _noise_constant(delta: float) -> float:
    """``c = sqrt(2 ln(1.5 / delta))`` (Guo et al., ICML 2020, Thm 3)."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def _norm(vector: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(vector.detach().double()))


class _LandingMixin:
    """The landing check, ``steps="auto"`` and the residual diagnostics of ``_Influence``."""

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
