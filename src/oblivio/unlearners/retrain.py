"""Exact unlearning by retraining on the edited training set."""

from __future__ import annotations

from oblivio.data import Change
from oblivio.models.base import Model
from oblivio.unlearners.base import Outcome, Unlearner, register


@register
class Retrain(Unlearner):
    """Retrain from scratch on the edited training set: the exact oracle.

    Every approximate method is judged against this (Bourtoule et al., IEEE S&P 2021;
    Chen et al., CCS 2021 use it as the exact baseline). The new model is a clone of the
    template with the same hyper-parameters and seed, so for deterministic models the
    result equals ``model.clone().fit(change.result)``.

    Parameters
    ----------
    model : Model
        Model template.
    warm_start : bool
        Start the solver from the current parameters instead of the template's
        initialisation. For strictly convex models (logistic regression) the optimum, hence
        the result, is the same and usually reached faster; for neural networks the result
        is no longer the model retraining gives, and the result is marked ``exact=False``.
        This is the strongest honest baseline for timing comparisons.
    """

    name = "retrain"
    exact = True
    needs = frozenset({"retain"})

    def __init__(self, model: Model, *, warm_start: bool = False) -> None:
        super().__init__(model)
        self.warm_start = warm_start

    def _forget(self, change: Change) -> Outcome:
        fresh = self.model_.clone()
        init = self.model_.theta if self.warm_start else None
        fresh.fit(change.result, init=init)
        self.model_ = fresh
        convex = type(fresh).__name__ == "LogisticRegression"
        return Outcome(retrained=True, exact=convex or not self.warm_start)
