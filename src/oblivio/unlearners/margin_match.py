"""Margin matching: forget records take the margins of records the model never saw.

oblivio's own deletion method for **random** records (no paper; the idea is the 1-D optimal
transport between two margin distributions, applied to the field's definition of success).
A model retrained without the forget records treats them as unseen records, so their
margins (logit of the label minus the largest other logit) follow the distribution of
margins on a held-out reference set, while a memorising original gives them the large
margins of training records. The forget records' margins are therefore pulled, each to
its own target, to that distribution:

1. **Targets.** At the model before the request, rank the forget records by margin
   ``m_0``; the record of rank ``r`` (of ``n``) takes the reference margin at quantile
   ``(r + 1/2) / n`` (the monotone transport map: ranks are kept, the model's own notion of
   which records are hard decides which become wrong). On Fashion-MNIST the original's
   ranking agrees with the retrained model's (Spearman 0.84 on 400 forget records of a 4k
   CNN) and the reference quantiles match the retrained margins (10th percentile -1.3
   against -1.3). Records of a class with no training record left take ``-m_0``: retraining
   never predicts their class. A request that deletes a whole class runs the two phases of
   the other deletion methods instead of step 3's one (this push until the class is gone,
   then cross-entropy repair on retained records): pushed in one phase, a T-shirt class
   was gone in 3 steps but the retained records lost 3-8 points that the retained term
   never won back (4k CNN, seed 1). With the repair phase's hold on deleted classes
   (:meth:`._landing._DeletionLoop._absent_class_guard`) it lands with the other methods
   on whole classes: avg gap 0.25 and 0.38 on two seeds' 4k CNNs (0.72 and 3.32 before).
2. **Steps.** Adam on ``CE(retained batch) + weight * mean_f smoothL1(m_f - t_f)`` (batch
   means), the forget batch drawn only from the records that start *above* their target:
   a forget record is never trained toward a margin above the one it had, and one that
   overshoots is pulled back to where a record of its rank sits when unseen (a one-sided
   push overshot on the 4k CNN: forget accuracy 0.85 for a target of 0.87, 5 points of
   retained accuracy lost, no checkpoint kept). When the budget cannot draw every such
   record ``draws_per_record`` times (8 by default), the forget term pushes only the ones
   with the lowest targets, as many as it can draw that often and at least 400: a record
   whose unseen margin is large stays right and confident after retraining, so moving it
   changes neither forget accuracy nor MIA-efficacy, while the records a retrained model
   gets wrong or unsure need repeated steps to get there. A random 10 % leaves about 3
   draws per record in 5 % of the training's work. On the 60,000-image CNN (CPU, seeds
   0, 1, 2, avg gap against 4.13, 4.51 and 4.32 for no update; these with the learning
   rate decaying over the whole run, before step 3's held half) pushing every record
   landed at 2.95 and 2.94 (seeds 0, 1); 8 draws per record at 1.37, 2.02 and 1.42; 10 at
   1.16 and nowhere on seed 2; 12 at 0.99 and 1.38 and nowhere on seed 2; 16 nowhere on
   seeds 0 and 1. "Nowhere": the concentrated push cost 2-3 retained points at every
   check, over the 1.5 a kept checkpoint may lose. 8 is the most concentration that
   landed on every seed. On the 10k CNN, 12 draws with the floor of 400 records gave
   1.60, against 3.47 pushing every record and 5.10 for no update; the 4k CNNs (about
   350 records to push) are unchanged (3.93, 3.17). Smaller requests
   (random 1 %: 31 draws per record) push every record, as before. Most of each retained
   batch
   (``hard_share``) comes from the 10 % of retained records with the smallest margins (in
   a pool of at most 20,000): those are the records a push on hard forget records drags
   along, and holding them is what keeps the retained accuracy while the forget records
   move (avg gap 3.4 with 90 % of the batch from them, 4.3 with half, 5.2 with none, on
   the 4k CNN in 60 steps).
3. **Landing.** The shared loop (:mod:`._landing`): one phase (no repair: the retained term
   is in every step, and the learning rate, held for the first half of the budget, decays
   linearly to 0 so that the run settles; decaying from the first step, the 60,000-image
   runs were still improving at their last check: 1.37, 2.02, 1.42 against 1.04, 1.68,
   1.26 with the held half),
   checks along the run, the best checkpoint by the avg-gap proxy with at most 1.5 points
   lost (up to 2 on larger check samples). The run neither stops when the forget accuracy
   reaches its target (the loss carries its own per-record target, and the confidence of the records
   that stay right, what MIA-efficacy reads, keeps moving) nor backtracks on the transient
   loss of a few retained points that the retained term then wins back (only a 50-point
   wreck backtracks).

It needs a reference set (``attach(train, holdout=...)``) for records of classes that keep
training records; without one it leaves the model as it is and warns. Whole-class requests
need none.

Measured (Fashion-MNIST, nets trained until they memorise, 5 % of the original training's
work, ``benchmarks/neural_deletion.py``), avg gap to retraining in points:

* The benchmark's own originals (``benchmarks/neural_deletion.py``, one CPU thread; the
  runs above trained theirs on two threads): random 10 %, seeds 0 and 1: 1.38 and 1.27
  against 4.13 and 4.45 (seed 0: 2.36 before the landing rule allowed up to 2 points of
  damage on samples of 1,000 records); random 1 %: 1.16 and 0.85 against 4.70 and 5.06.
* SmallCNN, all 60,000 images, random 10 %, CPU, seeds 0, 1, 2 (the defaults: focused
  forget draws, learning rate held for half the run): 1.04, 1.68 and 1.26 against 4.13,
  4.51 and 4.32 for no update (mean 1.33, 0.31x; ``scrub`` 2.93, 3.84 and 2.66;
  ``salun`` left the model as it was), 12-16x faster than retraining on one thread, test
  accuracy within 1.6 points of retraining's; on two more seeds, not used to choose the
  schedule, 1.03 and 1.36 against 4.20 and 4.65 (1.09 and 1.56 before the held half).
  Random 1 %, seed 0: 0.58 against 5.10 for no update (0.11x). Before the held half:
  1.37, 2.02 and 1.42 (mean 1.60).
* SmallCNN, all 60,000 images, 3 seeds, one H200, before the focused draws: random 1 %
  (which they leave as it was): 1.30 against 5.24 for no update (0.25x; ``salun`` 4.80,
  ``scrub`` 4.03), 16x faster than retraining; random 10 %: 2.63 against 4.17 (0.63x;
  ``salun`` 3.88, ``scrub`` 3.49), 17x. Class 0 (before repair held deleted classes
  down): 6.87, forget accuracy 16 %; with that hold, on a CPU, seed 0: 0.18, forget
  accuracy 0.0 %.
* SmallCNN, 10,000 images, 3 seeds, CPU, before the focused draws (seed 0 with them: 1.60
  against 3.47, and 1.38 with the held half): random 10 %: 3.09 against 5.53 for no update (0.56x;
  ``salun`` 5.25, ``scrub`` 5.15, ``neggrad-plus`` 5.30), 5.9x faster than retraining;
  random 1 %: 2.16 against 4.38 (0.49x), 8.1x; class 0: 1.48 (forget accuracy 3.5 %;
  ``neggrad-plus`` 0.58).
* MLP(256), 8,000 images, random 10 %, one seed: 4.34 against 8.74 (``salun`` 8.51,
  ``scrub`` 7.88), 12.5x.
* More work lands closer: 10,000 images, random 10 %, seed 0: 3.2-3.5 at ``budget=0.05``,
  2.6 at 0.1, 1.5 (0.30x no update) at 0.2, which is 2.4x faster than retraining.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from oblivio.data import Change
from oblivio.models.base import Model
from oblivio.unlearners._deletion_base import _adam_lr, _check_fraction, _Deletion
from oblivio.unlearners._neural import (
    _Stream,
    label_margin,
    logit_margins,
    of_kept_classes,
)
from oblivio.unlearners.base import Outcome, register

__all__ = ["MarginMatch", "logit_margins", "matched_targets"]

#: The forget term pushes at least this many records (all when there are fewer): a push
#: concentrated on fewer drags their retained neighbours (on the 4k and 10k CNNs, 170-260
#: pushed records cost more than 1.5 retained points at every check and nothing landed).
_MIN_PUSHED = 400


def matched_targets(
    margins: torch.Tensor, reference: torch.Tensor, absent: torch.Tensor
) -> torch.Tensor:
    """Target margin per forget record (module docstring, step 1).

    ``margins``: the forget records' margins before the request; ``reference``: margins on
    the reference set (may be empty when every record is ``absent``); ``absent``: records
    whose class has no training record left (target ``-margin``).
    """
    targets = -margins.clone()
    present = ~absent
    n = int(present.sum())
    if n:
        quantiles = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        ref = torch.quantile(reference.double().cpu(), quantiles).to(margins)
        ranked = torch.nonzero(present).squeeze(1)[margins[present].argsort()]
        targets[ranked] = ref
    return targets


@register
class MarginMatch(_Deletion):
    """Margin matching: random deletion that lands on the unseen records' margins.

    See the module docstring for the method; it is oblivio's own, not a paper's.

    Parameters
    ----------
    model : TorchModel
        A trained classifier (``attach``) or a template (``fit``).
    weight : float
        Weight of the forget term against the retained cross-entropy (default 2).
    draws_per_record : float
        Times the budget should draw each pushed forget record (default 8, >= 1): with
        fewer draws per record, only the records with the lowest target margins are pushed,
        at least 400 (module docstring, step 2). 1 pushes every record that starts above
        its target.
    hard_share : float
        Share of each retained batch drawn from the hardest 10 % of retained records, in
        [0, 1] (default 0.9; 0 draws uniformly).
    budget : float
        Records processed per request as a fraction of the original training (default
        0.05), as for :class:`~oblivio.unlearners.SalUn`.
    lr : float or None
        Adam's learning rate. None (default): 0.75 x the original training's (a
        :class:`~oblivio.models.TorchModel` trained with Adam; 1e-3 otherwise), the scale
        at which that network learnt its records: on the 4k CNN trained at 2e-3, 1e-3 gave
        avg gap 4.1, 1.5e-3 3.9 and 2e-3 did not land (7.2).
    batch_size, forget_batch_size, weight_decay, bn_mode, seed
        Adam (no weight decay) on 96 retained and 32 forget records per step. Adam, not
        SGD: on the 4k CNN, SGD (lr 1e-3 to 3e-3, momentum 0.9) moved the forget records
        no faster and cost twice the retained accuracy.
    """

    name = "margin-match"

    def __init__(
        self,
        model: Model,
        *,
        weight: float = 2.0,
        draws_per_record: float = 8.0,
        hard_share: float = 0.9,
        budget: float = 0.05,
        lr: float | None = None,
        batch_size: int = 96,
        forget_batch_size: int = 32,
        weight_decay: float = 0.0,
        bn_mode: str = "train",
        seed: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            budget=budget,
            lr=lr,
            batch_size=batch_size,
            forget_batch_size=forget_batch_size,
            momentum=0.0,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.weight = weight
        self.draws_per_record = draws_per_record
        self.hard_share = hard_share

    def _check_params(self) -> None:
        super()._check_params()
        if not (isinstance(self.weight, (int, float)) and self.weight > 0):
            raise ValueError(f"weight must be > 0, got {self.weight!r}")
        draws = self.draws_per_record
        number = isinstance(draws, (int, float)) and not isinstance(draws, bool)
        if not (number and math.isfinite(draws) and draws >= 1):
            raise ValueError(f"draws_per_record must be a number >= 1, got {draws!r}")
        _check_fraction("hard_share", self.hard_share, closed=True)

    def _lr(self) -> float:
        return self.lr if self.lr is not None else _adam_lr(self)

    def _optimizer(self) -> torch.optim.Optimizer:
        return self._adam(self.weight_decay)

    def _forget(self, change: Change) -> Outcome:
        return self._left_without_reference(change) or super()._forget(change)

    def _losses(self, change, forget, retain, generator, diagnostics):
        module = self._module
        absent = torch.as_tensor(~of_kept_classes(change.before.y, change), device=forget.y.device)
        margins = logit_margins(module, forget.X, forget.y)
        holdout = self._present_holdout(change)
        reference = torch.zeros(0)
        if holdout is not None:
            reference = logit_margins(module, self._inputs(holdout), self._labels(holdout.y))
        targets = matched_targets(margins, reference, absent)
        # self-balancing per request: a whole class takes the two phases of the other
        # methods (module docstring, step 1)
        self._self_balancing = not bool(absent.any())
        active = torch.nonzero(margins > targets).squeeze(1)
        if active.numel() == 0:  # every record already at or below its target
            active = torch.arange(len(forget), device=forget.X.device)
        if self._self_balancing:
            # the budget's forget draws go to the records with the lowest targets, each
            # drawn about draws_per_record times (module docstring, step 2); a deleted
            # class is pushed whole
            per_step = self._records_per_step(len(forget), len(retain))
            draws = self._budget_steps(self.budget, per_step) * self.forget_batch_size
            n_pushed = max(_MIN_PUSHED, int(draws // self.draws_per_record))
            if n_pushed < active.numel():
                active = active[targets[active].argsort()[:n_pushed]].sort().values
        diagnostics["pushed_forget_records"] = float(active.numel())
        pushed = _Stream(forget.X[active], forget.y[active], self.forget_batch_size, generator)
        pushed_targets = targets[active]

        retained_batch = self._hard_retained(retain, generator, self.hard_share)
        weight = float(self.weight)

        def loss_of_step(step: int) -> torch.Tensor:
            X_f, y_f, at = pushed.next()
            X_r, y_r = retained_batch()
            X = torch.cat([X_f, X_r])
            self._train_mode(X.shape[0])
            logits = module(X)
            b = X_f.shape[0]
            forget_term = nn.functional.smooth_l1_loss(
                label_margin(logits[:b], y_f), pushed_targets[at]
            )
            return nn.functional.cross_entropy(logits[b:], y_r) + weight * forget_term

        return loss_of_step, None, (False if self._self_balancing else None)
