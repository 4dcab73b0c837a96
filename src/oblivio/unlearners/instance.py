"""Instance-wise unlearning of pre-trained neural classifiers: L2UL and the common baselines.

All methods update an already trained :class:`~oblivio.models.TorchModel` in place of
retraining (use them through ``attach(train)`` on a model you trained, or ``fit``):

* ``"l2ul"`` — Cha et al., *Learning to Unlearn: Instance-wise Unlearning for Pre-trained
  Classifiers*, AAAI 2024 (``reference/instance-unlearning.md``): negative cross-entropy on
  the forget records, regularised by adversarial examples of the pre-trained model labelled
  with their target classes and by an inverted MAS weight-importance penalty;
* ``"gradient-ascent"`` — NegGrad: ascent on the forget records' cross-entropy;
* ``"random-labels"`` — fine-tuning on the forget records with random wrong labels (and on
  the retained records with their true labels when ``use_retain=True``);
* ``"finetune"`` — a few epochs of fine-tuning on the retained records only.

Goals (``goals`` / ``goal``): ``l2ul`` serves **correction** (every forget record
misclassified, or, for relabel requests, predicted as its new label); ``finetune`` serves
**deletion** (be where retraining would be); ``gradient-ascent`` and ``random-labels``
serve both, deletion by default (``goal="correction"`` gives their L2UL-style behaviour).
In correction the forget-driven methods stop as soon as the goal is reached, or at an epoch
cap; in deletion they run the shared loop of :mod:`oblivio.unlearners._loop`. The stopping
reason, the number of optimiser steps and the final forget accuracy are reported in
``UnlearnResult.diagnostics``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from oblivio.data import Change, RequestError
from oblivio.models.base import Model
from oblivio.unlearners._loop import (
    _NeuralUnlearner,
    _seed_generators,
    _Stream,
    check_budget,
    random_other_labels,
)
from oblivio.unlearners._neural import (
    as_inputs,
    complement_loss,
    draw_targets,
    evaluating,
    invert_importance,
    mas_importance,
    predict_labels,
    set_train_mode,
    targeted_l2_pgd,
)
from oblivio.unlearners.base import Outcome, register

__all__ = ["L2UL", "FineTune", "GradientAscent", "RandomLabels"]

_FORGET_LOSSES = ("complement", "neg-ce")


@dataclass
class _Goals:
    """Records with a goal: ``sign = -1`` misclassify ``label``; ``sign = +1`` predict it."""

    X: torch.Tensor
    label: torch.Tensor
    sign: torch.Tensor
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def reached(self, predictions: torch.Tensor) -> torch.Tensor:
        hit = predictions == self.label
        return torch.where(self.sign < 0, ~hit, hit)

    def take(self, index: torch.Tensor | slice) -> _Goals:
        ids = self.ids[index.cpu().numpy()] if isinstance(index, torch.Tensor) else self.ids[index]
        return _Goals(self.X[index], self.label[index], self.sign[index], ids)

    @staticmethod
    def cat(parts: list[_Goals]) -> _Goals:
        return _Goals(
            torch.cat([p.X for p in parts]),
            torch.cat([p.label for p in parts]),
            torch.cat([p.sign for p in parts]),
            np.concatenate([p.ids for p in parts]),
        )


def _forget_term(logits: torch.Tensor, goals: _Goals, kind: str) -> torch.Tensor:
    """Batch mean of the per-record forget loss (reference §2).

    Records to misclassify (``sign = -1``) contribute ``-log(1 - p_y)`` (``kind =
    "complement"``) or ``-CE = log p_y`` (``kind = "neg-ce"``, the paper's); records to
    relabel (``sign = +1``) contribute ``+CE`` towards their new label.
    """
    ce = nn.functional.cross_entropy(logits, goals.label, reduction="none")
    away = -ce if kind == "neg-ce" else complement_loss(logits, goals.label)
    return torch.where(goals.sign < 0, away, ce).mean()


def _check_forget_loss(value: Any) -> None:
    if value not in _FORGET_LOSSES:
        raise ValueError(f"forget_loss must be one of {_FORGET_LOSSES}, got {value!r}")


class _ForgetDriven(_NeuralUnlearner):
    """Methods driven by the forget records, stopping once every goal is reached.

    Continual mode (``keep_forgotten=True``): the records of earlier requests stay goals.
    The stopping rule covers them too, and whichever of them is off its goal at the latest
    check joins the next forget batch (reference §10 leaves the protocol open [check]; the
    adversarial set and the importance are recomputed for the current request only, and
    the anchor of the importance penalty is the model before the current request).
    """

    goals: ClassVar[tuple[str, ...]] = ("correction",)
    #: check the goal after every optimiser step ("step") or after every epoch ("epoch")
    _check_every = "step"

    def __init__(self, model: Model, *, keep_forgotten: bool, **options: Any) -> None:
        super().__init__(model, **options)
        self.keep_forgotten = keep_forgotten

    def _prepare(self) -> None:
        super()._prepare()
        self.forgotten_ = None  # earlier requests' goals (continual mode), a _Goals or None

    # -- requests --------------------------------------------------------------------------
    _supports_relabel = False

    def _validate_change(self, change: Change) -> None:
        if change.is_removal or change.is_empty:
            return
        same_X = (
            (change.before.X != change.after.X).nnz == 0
            if sp.issparse(change.before.X)
            else np.array_equal(change.before.X, change.after.X)
        )
        kind = type(change.request).__name__
        if not same_X:
            raise RequestError(
                f"{self.name} forgets whole records: it supports Remove"
                f"{' and Relabel' if self._supports_relabel else ''} requests, not {kind} "
                "(which changes features); use 'finetune' or 'retrain'"
            )
        if not self._supports_relabel:
            raise RequestError(
                f"{self.name} supports Remove requests only, not {kind}; use 'l2ul' to relabel"
            )

    def _current_goals(self, change: Change) -> _Goals:
        X = self._inputs(change.before)
        if change.is_removal:
            label, sign = change.before.y, -np.ones(len(change), dtype=np.int64)
        else:
            label, sign = change.after.y, np.ones(len(change), dtype=np.int64)
        return _Goals(X, self._labels(label), self._labels(sign), np.asarray(change.ids))

    def _earlier_goals(self, change: Change) -> _Goals | None:
        earlier = self.forgotten_ if self.keep_forgotten else None
        if earlier is None or len(earlier) == 0:
            return None
        keep = ~np.isin(earlier.ids, change.ids)  # a new request on a record overrides
        if not keep.any():
            return None
        return earlier.take(torch.as_tensor(np.flatnonzero(keep), device=earlier.X.device))

    def _remember(self, current: _Goals, earlier: _Goals | None) -> None:
        parts = [p for p in (earlier, current) if p is not None]
        self.forgotten_ = _Goals.cat(parts)

    def _snapshot(self) -> Any:
        return self.forgotten_, super()._snapshot()

    def _restore(self, state: Any) -> None:
        self.forgotten_, module_state = state
        super()._restore(module_state)

    # -- persistence -----------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"n_classes": self.n_classes_}
        arrays = self._holdout_state()
        if self.forgotten_ is not None:
            arrays |= {
                "forgotten_X": self.forgotten_.X.detach().cpu().numpy(),
                "forgotten_label": self.forgotten_.label.cpu().numpy(),
                "forgotten_sign": self.forgotten_.sign.cpu().numpy(),
                "forgotten_ids": self.forgotten_.ids,
            }
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._set_holdout_state(arrays)
        self.n_classes_ = int(meta.get("n_classes", len(self.train_.classes)))
        self.forgotten_ = None
        if "forgotten_X" in arrays:
            self.forgotten_ = _Goals(
                as_inputs(arrays["forgotten_X"], self._module),
                self._labels(arrays["forgotten_label"]),
                self._labels(arrays["forgotten_sign"]),
                np.asarray(arrays["forgotten_ids"], dtype=np.int64),
            )

    # -- the loop --------------------------------------------------------------------------
    def _run(
        self,
        change: Change,
        steps_per_epoch: int,
        loss_of_step: Any,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, float]:
        """SGD until every goal (current and earlier records) is reached, or ``max_epochs``.

        ``loss_of_step(step, extra)`` returns the loss of optimiser step ``step`` (counted
        from 0), where ``extra`` holds the earlier records that are off their goal (or None).
        """
        current: _Goals = self._current
        earlier = self._earlier
        union = current if earlier is None else _Goals.cat([earlier, current])

        def check() -> tuple[bool, _Goals | None, bool]:
            """(every goal reached, earlier records off their goal, outputs finite)."""
            labels, finite = predict_labels(self._module, union.X, with_finite=True)
            reached = union.reached(labels)
            extra = None
            if earlier is not None:
                off = ~reached[: len(earlier)]
                if off.any():
                    extra = earlier.take(torch.nonzero(off).ravel())
            return finite and bool(reached.all()), extra, finite

        done, extra, _ = check()
        steps = epochs = 0
        diverged = False
        while not (done or diverged) and epochs < self.max_epochs:
            steps_before = steps
            for i in range(steps_per_epoch):
                if not self._step(optimizer, loss_of_step(steps, extra)):
                    diverged = True
                    break
                steps += 1
                if self._check_every == "step" or i == steps_per_epoch - 1:
                    done, extra, finite = check()
                    if not finite:  # overflowed outputs "misclassify" nothing: diverged
                        self._roll_back()
                        diverged = True
                        break
                    if done:
                        break
            epochs += int(steps > steps_before)  # epochs in which a step was taken
        self._finish()
        self._remember(current, earlier)
        predictions = predict_labels(self._module, current.X)
        original = self._labels(change.before.y)
        diagnostics = {
            "steps": float(steps),
            "epochs": float(epochs),
            "goal_reached": float(done),
            "stopped_by_cap": float(not (done or diverged)),
            "diverged": float(diverged),
            "forget_accuracy": float((predictions == original).float().mean()),
        }
        if not change.is_removal:
            diagnostics["relabel_accuracy"] = float((predictions == current.label).float().mean())
        if earlier is not None:
            reached = earlier.reached(predict_labels(self._module, earlier.X))
            diagnostics["earlier_at_goal"] = float(reached.float().mean())
            diagnostics["n_earlier"] = float(len(earlier))
        # this method's own check: every forget record at its goal (base: on_failure)
        self._judge(
            diagnostics,
            bool(done),
            f"the update did not land: not every forget record reached its goal after "
            f"{epochs} epochs ({'diverged' if diverged else 'stopped by max_epochs'}); raise "
            "max_epochs or lr, or retrain.",
        )
        return diagnostics

    def _begin(self, change: Change) -> None:
        self._current = self._current_goals(change)
        self._earlier = self._earlier_goals(change)

    def _forget_batch(self, step: int, extra: _Goals | None) -> _Goals:
        """Consecutive, unshuffled forget batches, cycled (reference §5)."""
        current: _Goals = self._current
        n_batches = math.ceil(len(current) / self.batch_size)
        start = (step % n_batches) * self.batch_size
        batch = current.take(slice(start, start + self.batch_size))
        return batch if extra is None else _Goals.cat([batch, extra])


class _Continuation:
    """Halve the importance weight when the forget records stop making progress.

    ``update(batch, off)`` is called once per optimiser step with the number of records of
    forget batch ``batch`` still off their goal (from the step's own forward pass). When no
    batch has improved on its best count for ``patience`` steps, ``lam`` halves and the
    clock restarts. The quadratic anchor has an equilibrium where the forget term's pull
    balances it; when that equilibrium leaves a record on its label, only a weaker anchor
    lets the run reach the goal (an oblivio addition: the released code runs to its epoch
    cap). ``patience=None`` keeps ``lam`` fixed.
    """

    def __init__(self, lam: float, patience: int | None) -> None:
        self.lam = float(lam)
        self.patience = patience
        self.halvings = 0
        self._best: dict[int, int] = {}
        self._since = 0

    def update(self, batch: int, off: int) -> None:
        if self.patience is None:
            return
        best = self._best.get(batch)
        if best is None or off < best:
            self._best[batch] = off
            self._since = 0
            return
        self._since += 1
        if self._since >= self.patience:
            self.lam /= 2
            self.halvings += 1
            self._since = 0


@register
class L2UL(_ForgetDriven):
    """L2UL: instance-wise unlearning with adversarial examples and weight importance.

    Cha et al., AAAI 2024 (``reference/instance-unlearning.md`` §2–§5, pseudo-code §13).
    Only the pre-trained model and the forget records are used (``needs = {"forget"}``).

    1. **Adversarial examples** (§3), once per request with the model before unlearning in
       eval mode: ``n_adv`` targeted L2 PGD examples per forget record, each target drawn
       uniformly from the other classes, labelled with its target: ``D_adv``.
    2. **Weight importance** (§4): MAS importance ``Omega`` on the forget records, inverted
       per tensor ``Omega~ = 1 - minmax(Omega)``; penalty ``R = 1/2 sum Omega~ (theta -
       theta0)^2``.
    3. **SGD** (momentum 0.9, weight decay 1e-4) on

       ``L = (b_f * F(x_f, y_f) + b_a * CE(x_adv, t)) / (b_f + b_a) + lam * R``

       (each term a batch mean, ``b_f, b_a`` the batch sizes; §3), where the forget term
       ``F`` is ``-log(1 - p_y)`` (default, ``forget_loss="complement"``) or the paper's
       ``-CE`` (``forget_loss="neg-ce"``). One epoch is one pass over the adversarial
       batches in generation order, each paired with the next forget batch (cycled; without
       ``D_adv`` one pass over the forget batches). After every step the forget records are
       checked in eval mode; training stops as soon as none is predicted as its label, or
       after ``max_epochs`` (then ``diagnostics["stopped_by_cap"] = 1``).

    A :class:`~oblivio.Relabel` request switches the forget term to ``+CE(x_f, y*)`` towards
    the new labels and the goal to predicting them (§2; the form is marked [check] in the
    reference). Other requests that change features are rejected.

    **Goal: correction**, not deletion (``goals = ("correction",)``): the target is forget
    accuracy 0, not the retrained model (which still classifies most forget records
    correctly). Judge it by forget accuracy and the test-accuracy drop.

    **Defaults.** The paper's optimiser and penalty (lr 1e-3, momentum 0.9, ``lam = 1``, 20
    adversarial examples per record; reference §7), with three changes, each measured on
    scikit-learn's digits (raw pixels 0..16, an MLP with 64 hidden units, 8 random forget
    records, 3 seeds; ``tests/unlearners/test_l2ul.py``):

    * the forget term ``-log(1 - p_y)`` instead of ``-CE``: ``-CE`` has gradient ``1 - p_y``
      on the logit of a confidently correct record (vanishing) and is unbounded below on
      records already misclassified, so the update keeps pushing the forgotten records and
      the model collapses into one class; gradient ascent on ``-CE`` reached the goal for 3
      of 6 digit sets, with ``-log(1 - p_y)``
      (:func:`~oblivio.unlearners._neural.complement_loss`) for all 6;
    * ``eps`` in the units of the data: by default ``EPS_SCALE = 0.25`` times the median L2
      norm of the training records (the paper's 4.0 is 0.14 of a CIFAR image's norm, 2.0 is
      0.17 of a Fashion-MNIST image's), step ``eps / 4``, 20 steps. A fixed ``eps = 2`` on
      raw digits (norm ~62) gave examples that reached their target 0 % of the time,
      i.e. no adversarial regulariser at all; 0.16x the norm 21-29 %, 0.25x 68-84 %
      (test drop without the penalty 25-28 points at 0.16x, 15-19 at 0.25x; with it
      13-14 at 0.25x, 17-19 at 0.4x);
    * ``lam`` continuation (``lam_patience``): the quadratic anchor has an equilibrium where
      the forget term's pull balances it; with ``lam >= 3`` that equilibrium left records
      on their labels (goal not reached in 2,000 steps) even though it kept test accuracy
      (drops 1-12 points). When no forget batch has improved for ``lam_patience`` steps,
      ``lam`` halves (diagnostics ``lam_final``, ``lam_halvings``); where the goal is
      reachable at ``lam`` nothing changes.

    The importance penalty's effect depends on ``lr * lam * steps`` (it damps displacement
    in anchored weights by about ``lr * lam / (1 - momentum)`` per step): the previous
    default ``lam = 0.01`` with lr 1e-2 changed nothing measurable (4-14 steps); with the
    paper's pair the penalty lowers the test drop on every seed (13.8 vs 16.9, 13.3 vs
    18.7, 13.6 vs 14.7 points). Gradient ascent alone loses 50-59 points, the old defaults
    39-45. On the CNN of ``benchmarks/instance_unlearning.py --quick`` (3,000 Fashion-MNIST
    images, 2 seeds) the penalty's effect stays small: 18.1 vs 18.9 points lost with and
    without it for 8 records, 36.8 vs 36.7 for 32 (the adversarial term: 47.6 -> 18.9 and
    71.5 -> 36.7). **Target not met:** losing at most 10 points there; misclassifying typical,
    memorised records moves their class boundary on a small net, and the method (which
    sees only the forget records) cannot measure what it costs elsewhere. Where the goal is
    not reached a ``RuntimeWarning`` is raised and ``diagnostics["goal_reached"] = 0``.

    The default lr suits inputs of order 1-10 per value; inputs scaled to unit-norm rows
    give tiny gradients and need a larger lr (0.1 for digits with ``normalize="l2"``), or
    the run hits its cap. The paper's settings are ``L2UL(model, **L2UL.PAPER)``.

    Parameters
    ----------
    model : TorchModel
        A trained classifier (``attach``) or a template (``fit``).
    adversarial, importance : bool
        Use the adversarial regulariser / the importance penalty (the paper's ablations:
        both False is gradient ascent checked after every step).
    forget_loss : {"complement", "neg-ce"}
        The forget term for removals: ``-log(1 - p_y)`` (default) or the paper's ``-CE``.
    lam : float
        Weight of the importance penalty (1.0, as in every released script).
    lam_patience : int or None
        Steps without progress on any forget batch after which ``lam`` halves (None: fixed).
    eps, pgd_step, pgd_steps, n_adv : float or None, float or None, int, int
        L2 radius (in input units, over all values of a record; None: ``EPS_SCALE`` times
        the median record norm), step length (None: ``eps / 4``) and number of steps of the
        attack, and adversarial examples per forget record (paper: 4.0, 0.1, 100, 20).
    input_range : (float, float), optional
        Valid input range for the attack's clipping. Default: ``(X.min(), X.max())`` of the
        training data given to ``fit``/``attach`` (the released code assumed [0, 1]; pitfall 5).
    target_sampling : {"uniform", "original"}
        Adversarial targets uniform over the other classes, or the released code's rule
        (uniform over all classes, collisions replaced by ``C // 2``) for faithfulness.
    lr, max_epochs, batch_size, adv_batch_size, momentum, weight_decay : see above
        Optimiser settings (default lr 1e-3, batches 32 / 128, cap 1000 epochs; reference
        §7: lr 1e-3, batches 32 / 256, cap 1000 epochs).
    bn_mode : {"train", "eval"}
        Batch-norm layers in train mode during updates (released behaviour: running
        statistics drift) or frozen in eval mode.
    keep_forgotten : bool
        Continual mode: records of earlier requests stay goals (see ``_ForgetDriven``).
    seed : int
        Seeds the target draws and the attack's random start (per request).

    Attributes
    ----------
    input_range_ : (float, float)
        The clipping range used by the attack.
    eps_, pgd_step_ : float
        The attack's radius and step length in use.
    goal : str
        ``"correction"``.
    forgotten_ : object or None
        The records of all requests so far with their goals (continual mode).
    """

    name = "l2ul"
    needs = frozenset({"forget"})
    goals: ClassVar[tuple[str, ...]] = ("correction",)
    _supports_relabel = True
    #: ``eps=None`` picks this fraction of the median L2 norm of the training records.
    EPS_SCALE: ClassVar[float] = 0.25
    #: The released CIFAR-10 settings (reference §7): ``L2UL(model, **L2UL.PAPER)``.
    PAPER: ClassVar[MappingProxyType] = MappingProxyType(
        {
            "forget_loss": "neg-ce",
            "lam": 1.0,
            "eps": 4.0,
            "pgd_step": 0.1,
            "pgd_steps": 100,
            "n_adv": 20,
            "lr": 1e-3,
            "batch_size": 32,
            "adv_batch_size": 256,
            "max_epochs": 1000,
        }
    )

    def __init__(
        self,
        model: Model,
        *,
        adversarial: bool = True,
        importance: bool = True,
        forget_loss: str = "complement",
        lam: float = 1.0,
        lam_patience: int | None = 50,
        eps: float | None = None,
        pgd_step: float | None = None,
        pgd_steps: int = 20,
        n_adv: int = 20,
        input_range: tuple[float, float] | None = None,
        target_sampling: str = "uniform",
        lr: float = 1e-3,
        max_epochs: int = 1000,
        batch_size: int = 32,
        adv_batch_size: int = 128,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        bn_mode: str = "train",
        keep_forgotten: bool = True,
        seed: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            keep_forgotten=keep_forgotten,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.adversarial = adversarial
        self.importance = importance
        self.forget_loss = forget_loss
        self.goal = "correction"
        self.lam = lam
        self.lam_patience = lam_patience
        self.eps = eps
        self.pgd_step = pgd_step
        self.pgd_steps = pgd_steps
        self.n_adv = n_adv
        self.input_range = input_range
        self.target_sampling = target_sampling
        self.adv_batch_size = adv_batch_size

    def _check_params(self) -> None:
        super()._check_params()
        _check_forget_loss(self.forget_loss)
        if not (isinstance(self.lam, (int, float)) and self.lam >= 0):
            raise ValueError(f"lam must be a number >= 0, got {self.lam!r}")
        patience = self.lam_patience
        if patience is not None and not (
            isinstance(patience, (int, np.integer))
            and not isinstance(patience, bool)
            and patience >= 1
        ):
            raise ValueError(f"lam_patience must be None or an integer >= 1, got {patience!r}")
        if self.adversarial:
            for key in ("eps", "pgd_step"):
                value = getattr(self, key)
                if value is not None and not (isinstance(value, (int, float)) and value > 0):
                    raise ValueError(f"{key} must be None (automatic) or > 0, got {value!r}")
            if not (isinstance(self.pgd_steps, (int, np.integer)) and self.pgd_steps >= 0):
                raise ValueError(f"pgd_steps must be an integer >= 0, got {self.pgd_steps!r}")
            if not (isinstance(self.n_adv, (int, np.integer)) and self.n_adv >= 1):
                raise ValueError(f"n_adv must be an integer >= 1, got {self.n_adv!r}")
            if not (
                isinstance(self.adv_batch_size, (int, np.integer)) and self.adv_batch_size >= 1
            ):
                raise ValueError(f"adv_batch_size must be >= 1, got {self.adv_batch_size!r}")
        if self.target_sampling not in ("uniform", "original"):
            raise ValueError(
                f"target_sampling must be 'uniform' or 'original', got {self.target_sampling!r}"
            )
        if self.input_range is not None:
            lo, hi = self.input_range
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"input_range must be (lo, hi) with lo < hi, got {self.input_range!r}"
                )

    def _prepare(self) -> None:
        super()._prepare()
        if self.input_range is not None:
            lo, hi = self.input_range
        else:
            X = self.train_.X
            values = X.data if sp.issparse(X) else np.asarray(X)
            lo, hi = float(values.min()), float(values.max())
            if sp.issparse(X) and X.nnz < X.shape[0] * X.shape[1]:
                lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.adversarial and not lo < hi:
            raise ValueError(f"the training inputs are constant ({lo}); pass input_range=(lo, hi)")
        self.input_range_ = (float(lo), float(hi))
        self.eps_ = float(self.eps) if self.eps is not None else self._automatic_eps()
        self.pgd_step_ = float(self.pgd_step) if self.pgd_step is not None else self.eps_ / 4

    def _automatic_eps(self) -> float:
        """``EPS_SCALE`` times the median L2 norm of the training records (all values)."""
        X = self.train_.X
        n = X.shape[0]
        rows = np.random.default_rng(0).choice(n, size=min(n, 2000), replace=False)
        sample = X[np.sort(rows)]
        if sp.issparse(sample):
            norms = np.sqrt(np.asarray(sample.multiply(sample).sum(axis=1)).ravel())
        else:
            norms = np.linalg.norm(
                np.asarray(sample, dtype=np.float64).reshape(len(rows), -1), axis=1
            )
        eps = self.EPS_SCALE * float(np.median(norms))
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(
                f"cannot choose eps from the training records (median norm {np.median(norms)}); "
                "pass eps="
            )
        return eps

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        meta["input_range"] = list(self.input_range_)
        meta["eps"] = self.eps_
        meta["pgd_step"] = self.pgd_step_
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(meta, arrays)
        lo, hi = meta["input_range"]
        self.input_range_ = (float(lo), float(hi))
        if "eps" in meta:
            self.eps_, self.pgd_step_ = float(meta["eps"]), float(meta["pgd_step"])
        else:  # saved before eps followed the data
            self.eps_ = float(self.eps) if self.eps is not None else self._automatic_eps()
            self.pgd_step_ = float(self.pgd_step) if self.pgd_step is not None else self.eps_ / 4

    def _forget(self, change: Change) -> Outcome:
        module = self._module
        rng, generator = _seed_generators(self.seed, self._request_index())
        self._begin(change)
        current: _Goals = self._current
        diagnostics: dict[str, float] = {}

        x_adv = t_adv = None
        if self.adversarial:
            start = time.perf_counter()
            targets = draw_targets(
                change.before.y, self.n_classes_, self.n_adv, rng, sampling=self.target_sampling
            )
            t_adv = self._labels(targets)
            x_rep = current.X.float() if not current.X.is_floating_point() else current.X
            x_rep = x_rep.repeat_interleave(self.n_adv, dim=0)
            x_adv = targeted_l2_pgd(
                module,
                x_rep,
                t_adv,
                eps=self.eps_,
                step=self.pgd_step_,
                steps=self.pgd_steps,
                clip=self.input_range_,
                generator=generator,
            )
            hit = predict_labels(module, x_adv) == t_adv
            diagnostics["n_adversarial"] = float(x_adv.shape[0])
            diagnostics["adversarial_target_rate"] = float(hit.float().mean())
            diagnostics["adversarial_seconds"] = time.perf_counter() - start

        anchor = omega = None
        if self.importance and self.lam > 0:
            start = time.perf_counter()
            omega = invert_importance(mas_importance(module, current.X, batch_size=self.batch_size))
            anchor = {n: p.detach().clone() for n, p in module.named_parameters() if n in omega}
            diagnostics["importance_seconds"] = time.perf_counter() - start
        named = dict(module.named_parameters())
        schedule = _Continuation(self.lam, self.lam_patience)
        n_forget_batches = math.ceil(len(current) / self.batch_size)

        if x_adv is not None:
            steps_per_epoch = math.ceil(x_adv.shape[0] / self.adv_batch_size)
        else:
            steps_per_epoch = math.ceil(len(current) / self.batch_size)

        def loss_of_step(step: int, extra: _Goals | None) -> torch.Tensor:
            batch = self._forget_batch(step, extra)
            b_f = len(batch)
            if x_adv is not None:
                i = step % steps_per_epoch
                xa = x_adv[i * self.adv_batch_size : (i + 1) * self.adv_batch_size]
                ta = t_adv[i * self.adv_batch_size : (i + 1) * self.adv_batch_size]
                b_a = xa.shape[0]
                # one forward pass over the union batch (batch norm sees both parts)
                set_train_mode(module, self.bn_mode, b_f + b_a)
                logits = module(torch.cat([batch.X, xa.to(batch.X.dtype)]))
                forget_term = _forget_term(logits[:b_f], batch, self.forget_loss)
                forget_logits = logits[:b_f]
                adv_term = nn.functional.cross_entropy(logits[b_f:], ta)
                loss = (b_f * forget_term + b_a * adv_term) / (b_f + b_a)
            else:
                set_train_mode(module, self.bn_mode, b_f)
                forget_logits = module(batch.X)
                loss = _forget_term(forget_logits, batch, self.forget_loss)
            if omega is not None:
                off = int((~batch.reached(forget_logits.detach().argmax(dim=1))).sum())
                schedule.update(step % n_forget_batches, off)
                penalty = sum((omega[n] * (named[n] - anchor[n]) ** 2).sum() for n in omega)
                loss = loss + schedule.lam * 0.5 * penalty
            return loss

        diagnostics.update(self._run(change, steps_per_epoch, loss_of_step, self._optimizer()))
        if omega is not None:
            diagnostics["lam_final"] = schedule.lam
            diagnostics["lam_halvings"] = float(schedule.halvings)
        diagnostics["eps"] = self.eps_
        return Outcome(diagnostics=diagnostics)


class _TwoGoals(_ForgetDriven):
    """A forget-driven method that also serves deletion (``goal="deletion"``, default).

    ``goal="correction"``: the instance-wise goal of L2UL (every forget record
    misclassified), with the stopping rule of :class:`_ForgetDriven`. ``goal="deletion"``:
    the shared deletion loop of :mod:`oblivio.unlearners._loop` (target forget accuracy
    from a held-out reference set or a deleted class, a budget of ``budget`` x the original
    training's work, landing on the best checkpoint); ``keep_forgotten`` and ``max_epochs``
    apply to correction only.
    """

    goals: ClassVar[tuple[str, ...]] = ("deletion", "correction")

    #: Learning rate when ``lr=None``: per goal (deletion moves a model that must stay
    #: close to the retrained one; on a memorising MLP on digits, lr 1e-2 cost up to 5
    #: test points on random deletion where 3e-3 kept within 3), except that deleting a
    #: whole class takes the correction rate: its records must all go, and with 3e-3 a
    #: deleted digit class was still 15 % accurate when the budget ran out.
    _DEFAULT_LR: ClassVar[dict[str, float]] = {"correction": 1e-2, "deletion": 3e-3}

    def _lr(self) -> float:
        return self._DEFAULT_LR.get(self.goal, 1e-2) if self.lr is None else self.lr

    def _check_params(self) -> None:
        super()._check_params()
        check_budget(self.budget)

    def _forget(self, change: Change) -> Outcome:
        if self.goal == "correction":
            return self._correct(change)
        _, generator = _seed_generators(self.seed, self._request_index())
        forget = _Stream(
            self._inputs(change.before), self._labels(change.before.y), self.batch_size, generator
        )
        loss_of_step, per_step = self._deletion_step(change, forget, generator)
        whole_class = not np.isin(change.before.y, np.unique(change.result.y)).any()
        lr = self._DEFAULT_LR["correction"] if self.lr is None and whole_class else None
        diagnostics = self._run_deletion(
            change, loss_of_step, budget=self.budget, records_per_step=per_step, lr=lr
        )
        return Outcome(diagnostics=diagnostics)


@register
class GradientAscent(_TwoGoals):
    """Gradient ascent (NegGrad) on the forget records' loss.

    The naive baseline of Cha et al., AAAI 2024 (``reference/instance-unlearning.md`` §6,
    case 1; §12): SGD on the forget term alone (batch mean). Reads the forget records (and,
    for deletion, samples of the retained and held-out records to check where it stands).
    Supports :class:`~oblivio.Remove` requests. Two goals:

    * ``goal="deletion"`` (default): shuffled forget batches for at most ``budget`` x the
      original training's work, landing where the forget accuracy meets the deletion target
      (see :mod:`oblivio.unlearners._loop`): ascent alone cannot repair what it damages, so
      the landing rule keeps it from overshooting.
    * ``goal="correction"``: consecutive forget batches; the goal (every forget record
      misclassified) is checked after each epoch, as in the released code, and training
      stops there or at ``max_epochs``.

    The forget term is the same as L2UL's, so that L2UL's ablations (this, ``+adv``,
    ``+adv+importance``) differ only in their regularisers: by default ``-log(1 - p_y)``,
    i.e. ascent on ``log(1 - p_y)``; ``forget_loss="neg-ce"`` is ascent on the
    cross-entropy itself (the paper's NegGrad; ``GradientAscent(model,
    **GradientAscent.PAPER)`` for its settings). On small nets ``-CE`` ascent collapses the
    model into one class and then never misclassifies a forget record of that class (see
    :class:`L2UL`), which is why it is not the default.

    Parameters
    ----------
    model : TorchModel
        A trained classifier (``attach``) or a template (``fit``).
    goal : {"deletion", "correction"}
        What to aim for (above).
    forget_loss : {"complement", "neg-ce"}
        As for :class:`L2UL`.
    budget : float
        Deletion: records processed as a fraction of the original training (default 0.05).
    lr, max_epochs, batch_size, momentum, weight_decay, bn_mode, keep_forgotten, seed
        As for :class:`L2UL` (same defaults: cap 1000 epochs, batch 32); ``lr=None``
        means 1e-2 for correction (L2UL's) and 3e-3 for deletion; ``max_epochs`` and
        ``keep_forgotten`` for correction only.
    """

    name = "gradient-ascent"
    needs = frozenset({"forget"})
    _check_every = "epoch"
    #: The released settings of the NegGrad baseline (reference §5, §7).
    PAPER: ClassVar[MappingProxyType] = MappingProxyType(
        {
            "goal": "correction",
            "forget_loss": "neg-ce",
            "lr": 1e-3,
            "batch_size": 32,
            "max_epochs": 1000,
        }
    )

    def __init__(
        self,
        model: Model,
        *,
        goal: str = "deletion",
        forget_loss: str = "complement",
        budget: float = 0.05,
        lr: float | None = None,
        max_epochs: int = 1000,
        batch_size: int = 32,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        bn_mode: str = "train",
        keep_forgotten: bool = True,
        seed: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            keep_forgotten=keep_forgotten,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.goal = goal
        self.forget_loss = forget_loss
        self.budget = budget
        if goal == "deletion":
            self.needs = frozenset({"forget", "retain"})

    def _check_params(self) -> None:
        super()._check_params()
        _check_forget_loss(self.forget_loss)

    def _deletion_step(self, change: Change, forget: _Stream, generator: torch.Generator):
        module = self._module

        def loss_of_step(step: int) -> torch.Tensor:
            X, y, _ = forget.next()
            set_train_mode(module, self.bn_mode, X.shape[0])
            logits = module(X)
            if self.forget_loss == "neg-ce":
                return -nn.functional.cross_entropy(logits, y)
            return complement_loss(logits, y).mean()

        return loss_of_step, self.batch_size

    def _correct(self, change: Change) -> Outcome:
        module = self._module
        self._begin(change)
        steps_per_epoch = math.ceil(len(self._current) / self.batch_size)

        def loss_of_step(step: int, extra: _Goals | None) -> torch.Tensor:
            batch = self._forget_batch(step, extra)
            set_train_mode(module, self.bn_mode, len(batch))
            return _forget_term(module(batch.X), batch, self.forget_loss)

        diagnostics = self._run(change, steps_per_epoch, loss_of_step, self._optimizer())
        return Outcome(diagnostics=diagnostics)


@register
class RandomLabels(_TwoGoals):
    """Random labels: fine-tune on the forget records relabelled with random wrong classes.

    The "RL" baseline (Golatkar et al., CVPR 2020; as used by Fan et al., SalUn, ICLR 2024;
    ``reference/instance-unlearning.md`` §12). Each forget record gets a label drawn
    uniformly from the classes other than its own (the SalUn code draws from all classes, so
    a label can stay correct; we exclude it); SGD descends the mean cross-entropy towards
    those labels, over a union batch with retained records and their true labels when
    ``use_retain`` is on (the SalUn setting; without retained data accuracy can collapse,
    SalUn issue #14). Supports :class:`~oblivio.Remove` requests. Two goals:

    * ``goal="deletion"`` (default): retained records are always used (``use_retain`` is
      ignored), labels are redrawn at every step (as the SalUn loader does), the run takes
      at most ``budget`` x the original training's work and lands where the forget
      accuracy meets the deletion target (:mod:`oblivio.unlearners._loop`). This is
      :class:`~oblivio.unlearners.SalUn` without its saliency mask.
    * ``goal="correction"``: labels fixed for the request; the goal (every forget record
      misclassified) is checked after every step; training stops there or at
      ``max_epochs`` (one epoch = one pass over the forget batches).

    Parameters
    ----------
    goal : {"deletion", "correction"}
        What to aim for (above).
    use_retain : bool
        Correction: also train on the retained records (then ``needs`` includes
        ``"retain"``). Deletion always does.
    retain_batch_size : int, optional
        Retained records per step (default: 64 for deletion; 32 for correction, as many as
        forget records per step). With
        128 at lr 1e-2 the demo's 10 forget records (~7 % of each step) all stayed
        correctly classified after 300 steps (correction).
    budget : float
        Deletion: records processed as a fraction of the original training (default 0.05).
    lr, max_epochs, batch_size, momentum, weight_decay, bn_mode, keep_forgotten, seed
        As for :class:`L2UL` (cap 1000 epochs, batch 32; ``lr=None`` means 1e-2 for
        correction and 3e-3 for deletion). Correction: one epoch is one pass over the
        forget batches, so with a few forget records an epoch is one step.
    """

    name = "random-labels"
    needs = frozenset({"forget"})

    def __init__(
        self,
        model: Model,
        *,
        goal: str = "deletion",
        use_retain: bool = False,
        retain_batch_size: int | None = None,
        budget: float = 0.05,
        lr: float | None = None,
        max_epochs: int = 1000,
        batch_size: int = 32,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        bn_mode: str = "train",
        keep_forgotten: bool = True,
        seed: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            keep_forgotten=keep_forgotten,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.goal = goal
        self.use_retain = use_retain
        self.retain_batch_size = retain_batch_size
        self.budget = budget
        if use_retain or goal == "deletion":
            self.needs = frozenset({"forget", "retain"})

    def _retain_batch(self) -> int:
        if self.retain_batch_size is not None:
            return self.retain_batch_size
        return 64 if self.goal == "deletion" else 32

    def _check_params(self) -> None:
        super()._check_params()
        size = self._retain_batch()
        if not (isinstance(size, (int, np.integer)) and size >= 1):
            raise ValueError(f"retain_batch_size must be >= 1, got {self.retain_batch_size!r}")

    def _deletion_step(self, change: Change, forget: _Stream, generator: torch.Generator):
        module = self._module
        n_classes = self.n_classes_
        if n_classes < 2:
            raise RequestError("random labels need at least 2 classes")
        retain = _Stream(
            self._inputs(change.result),
            self._labels(change.result.y),
            self._retain_batch(),
            generator,
        )

        def loss_of_step(step: int) -> torch.Tensor:
            X_f, y_f, _ = forget.next()
            X_r, y_r, _ = retain.next()
            y_random = random_other_labels(y_f, n_classes, generator)
            X, y = torch.cat([X_f, X_r]), torch.cat([y_random, y_r])
            set_train_mode(module, self.bn_mode, X.shape[0])
            return nn.functional.cross_entropy(module(X), y)

        return loss_of_step, self.batch_size + self._retain_batch()

    def _correct(self, change: Change) -> Outcome:
        module = self._module
        rng, generator = _seed_generators(self.seed, self._request_index())
        self._begin(change)
        current: _Goals = self._current
        n_classes = self.n_classes_
        if n_classes < 2:
            raise RequestError("random labels need at least 2 classes")

        def wrong_labels(labels: torch.Tensor) -> torch.Tensor:
            shift = torch.randint(1, n_classes, labels.shape, generator=generator)
            return (labels + shift.to(labels.device)) % n_classes

        random_y = wrong_labels(current.label)
        steps_per_epoch = math.ceil(len(current) / self.batch_size)
        retain = change.result if self.use_retain else None
        if retain is not None and len(retain) == 0:
            retain = None
        X_r = self._inputs(retain) if retain is not None else None
        y_r = self._labels(retain.y) if retain is not None else None
        order: list[torch.Tensor] = []

        def retain_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            n = X_r.shape[0]
            size = self._retain_batch()
            per_pass = max(1, math.ceil(n / size))
            while len(order) <= step // per_pass:
                order.append(torch.randperm(n, generator=generator).to(X_r.device))
            perm = order[step // per_pass]
            i = step % per_pass
            index = perm[i * size : (i + 1) * size]
            return X_r[index], y_r[index]

        def loss_of_step(step: int, extra: _Goals | None) -> torch.Tensor:
            n_batches = math.ceil(len(current) / self.batch_size)
            start = (step % n_batches) * self.batch_size
            X_f = current.X[start : start + self.batch_size]
            y_f = random_y[start : start + self.batch_size]
            if extra is not None:
                X_f = torch.cat([X_f, extra.X])
                y_f = torch.cat([y_f, wrong_labels(extra.label)])
            if X_r is not None:
                X_b, y_b = retain_batch(step)
                X_f, y_f = torch.cat([X_f, X_b]), torch.cat([y_f, y_b])
            set_train_mode(module, self.bn_mode, X_f.shape[0])
            return nn.functional.cross_entropy(module(X_f), y_f)

        diagnostics = self._run(change, steps_per_epoch, loss_of_step, self._optimizer())
        return Outcome(diagnostics=diagnostics)


@register
class FineTune(_NeuralUnlearner):
    """Fine-tuning on the retained records only ("FT"; reference §12).

    Continues training the current model on the edited training set ``D~`` with seeded,
    shuffled mini-batch SGD, relying on catastrophic forgetting of the removed records
    (Unlearn-Sparse / SalUn fine-tune for about 10 epochs). It never reads the forget
    records to update the model (``needs = {"retain"}``). Any request works (removals,
    relabels, feature edits), since it simply trains on ``D~``.

    How long it trains:

    * by default (``epochs=None``) ``budget`` x the original training's work (records
      through forward/backward passes, as the deletion methods count it). A removal runs
      on the shared deletion loop of :mod:`oblivio.unlearners._loop`: checks along the run,
      the target forget accuracy from a held-out reference set
      (``attach(train, holdout=...)``) or a deleted class, and the best checkpoint kept
      (the start counts), so that fine-tuning, which can entrench a memorising network's
      fit of records close to the forgotten ones, never ends further from its target than
      doing nothing. Other requests run the budget's steps;
    * with ``epochs`` given, exactly that many passes over ``D~`` for any request (the
      fixed recipe of the papers' "FT" baseline), no landing; the forget accuracy after
      the update is reported in ``diagnostics["forget_accuracy"]``.

    Own check (feature edits): rows whose replaced columns are now constant give the weights
    that read those columns no data gradient, so fine-tuning barely changes how the model
    uses them (zeroing all 64 digits columns left test accuracy at 0.91; retraining gives
    0.10). The check compares the mean total-variation distance between the predictions on
    the affected rows as they were and as edited, after and before the update
    (``feature_sensitivity_ratio``); above 0.5 it did not land and an
    ``UnlearningWarning`` says so (``diagnostics["landed"] = 0``). A heuristic: a retrained
    network still reads those columns through its untrained initial weights.

    Parameters
    ----------
    model : TorchModel
        A trained classifier (``attach``) or a template (``fit``).
    epochs : int or None
        Passes over the retained records (a fixed recipe), or None for ``budget``.
    budget : float
        Work per request as a fraction of the original training (default 0.05), when
        ``epochs`` is None.
    lr, batch_size, momentum, weight_decay, bn_mode, seed
        SGD settings (defaults lr 0.01, batch 128, momentum 0.9, weight decay 5e-4).
    """

    name = "finetune"
    needs = frozenset({"retain"})

    def __init__(
        self,
        model: Model,
        *,
        epochs: int | None = None,
        budget: float = 0.05,
        lr: float = 1e-2,
        batch_size: int = 128,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        bn_mode: str = "train",
        seed: int = 0,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            lr=lr,
            max_epochs=epochs,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.epochs = epochs
        self.budget = budget

    def _check_params(self) -> None:
        self.max_epochs = self.epochs
        super()._check_params()
        check_budget(self.budget)

    def _feature_sensitivity(self, change: Change) -> float:
        """Mean total-variation distance of the predictions on the rows as they were and
        as edited: how much the model still reads the replaced feature values."""
        before, after = self._inputs(change.before), self._inputs(change.after)
        with evaluating(self._module), torch.no_grad():
            p = torch.softmax(self._module(before), dim=1)
            q = torch.softmax(self._module(after), dim=1)
        return float(0.5 * (p - q).abs().sum(dim=1).mean())

    def _forget(self, change: Change) -> Outcome:
        module = self._module
        features = type(change.request).__name__ == "ReplaceFeatures" and len(change) > 0
        sensitivity = self._feature_sensitivity(change) if features else 0.0
        _, generator = _seed_generators(self.seed, self._request_index())
        retain = change.result
        X, y = self._inputs(retain), self._labels(retain.y)
        if self.epochs is None and change.is_removal:
            stream = _Stream(X, y, self.batch_size, generator)

            def loss_of_step(step: int) -> torch.Tensor:
                X_r, y_r, _ = stream.next()
                set_train_mode(module, self.bn_mode, X_r.shape[0])
                return nn.functional.cross_entropy(module(X_r), y_r)

            diagnostics = self._run_deletion(
                change,
                loss_of_step,
                budget=self.budget,
                records_per_step=self.batch_size,
                repair=False,
            )
            return Outcome(diagnostics=diagnostics)
        optimizer = self._optimizer()
        max_steps = math.inf
        max_epochs = self.epochs
        if max_epochs is None:
            max_steps = self._budget_steps(self.budget, self.batch_size)
            max_epochs = math.ceil(max_steps * self.batch_size / max(1, X.shape[0]))
        steps = epochs = 0
        diverged = False
        while epochs < max_epochs and steps < max_steps and not diverged:
            steps_before = steps
            perm = torch.randperm(X.shape[0], generator=generator).to(X.device)
            for start in range(0, X.shape[0], self.batch_size):
                index = perm[start : start + self.batch_size]
                set_train_mode(module, self.bn_mode, index.shape[0])
                loss = nn.functional.cross_entropy(module(X[index]), y[index])
                if not self._step(optimizer, loss):
                    diverged = True
                    break
                steps += 1
                if steps >= max_steps:
                    break
            epochs += int(steps > steps_before)  # epochs in which a step was taken
        self._finish()
        diagnostics = {
            "steps": float(steps),
            "epochs": float(epochs),
            "diverged": float(diverged),
        }
        if len(change.before):
            X_f = self._inputs(change.before)
            diagnostics["forget_accuracy"] = self._accuracy(X_f, self._labels(change.before.y))
        if features and sensitivity > 0.0:
            # own check for feature edits: fine-tuning on rows whose features are constant
            # hardly moves the weights that read them; the model must at least halve how
            # much its predictions still depend on the old values
            ratio = self._feature_sensitivity(change) / sensitivity
            diagnostics["feature_sensitivity_ratio"] = ratio
            self._judge(
                diagnostics,
                ratio <= 0.5,
                f"the update did not land: the predictions still depend on the replaced "
                f"feature values {ratio:.2g}x as much as before fine-tuning (retraining would "
                "not have learned them); use second-order or retrain.",
            )
        return Outcome(diagnostics=diagnostics)
