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

    **Defaults are for small networks on CPU, not the paper's.** The paper's settings
    (CIFAR-10 / ResNet-18, reference §7) are available as ``L2UL(model, **L2UL.PAPER)``:
    ``-CE``, ``lam = 1``, ``eps = 4``, 20 examples x 100 PGD steps of 0.1, lr 1e-3, batches
    32 / 256, 1000 epochs. Measured on small nets (an MLP with 32 hidden units on
    scikit-learn's digits in [0, 1], 12 forget records, 6 forget sets; a two-layer CNN on
    2,000 Fashion-MNIST images, 16 records, 2-3 sets), they do not reach the goal reliably:

    * ``-CE`` has gradient ``1 - p_y`` on the logit of a confidently correct record
      (vanishing) and is unbounded below on records already misclassified, so the update
      keeps pushing the forgotten records and the model collapses into one class; a forget
      record of that class is then never misclassified and the loss runs off to infinity.
      Gradient ascent on ``-CE`` reached the goal for 3 of 6 digit sets (the others
      diverged); the paper's settings for 1 of 2 CNN sets (the other hit the cap at 56 %
      forget accuracy). The complementary loss ``-log(1 - p_y)``
      (:func:`~oblivio.unlearners._neural.complement_loss`) pushes hardest on the records
      still correct and fades on forgotten ones: gradient ascent with it reached every set
      in 9-14 steps;
    * with it, ``lam = 1`` anchors nearly every weight (after the inversion most ``Omega~``
      are close to 1) and the goal was not reached in 2,000 steps; ``lam = 0.1`` reached
      every CNN set but 1 of 6 digit sets; ``lam = 0.01`` reached all of them;
    * lr 1e-3 needed 6-9x more steps than 1e-2 for the same test accuracy, and 10 examples
      x 10 PGD steps of 0.5 in a ball of 2.0 lost about as much test accuracy as 20 x 20
      steps (27 vs 26 points on the CNN) for a quarter of the attack's cost.

    The price of the goal is real on small nets: misclassifying typical training records
    costs test accuracy. In ``benchmarks/instance_unlearning.py`` (a CNN on 10,000
    Fashion-MNIST images, 3 seeds) the adversarial term cut gradient ascent's loss of test
    accuracy to 0.5-0.77x (k = 8..128 forget records), but it stayed 26-67 points, and
    the importance penalty at ``lam = 0.01`` changed it by under a point; random labels
    with retained data lost 7-14 points.

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
        Weight of the importance penalty (default 0.01; 1.0 in every released script).
    eps, pgd_step, pgd_steps, n_adv : float, float, int, int
        L2 radius (in input units, over all values of a record: scale it with the size and
        range of your inputs; 2.0 suits 28x28 images in [0, 1]), step length and number of
        steps of the attack, and adversarial examples per forget record (paper: 4.0, 0.1,
        100, 20).
    input_range : (float, float), optional
        Valid input range for the attack's clipping. Default: ``(X.min(), X.max())`` of the
        training data given to ``fit``/``attach`` (the released code assumed [0, 1]; pitfall 5).
    target_sampling : {"uniform", "original"}
        Adversarial targets uniform over the other classes, or the released code's rule
        (uniform over all classes, collisions replaced by ``C // 2``) for faithfulness.
    lr, max_epochs, batch_size, adv_batch_size, momentum, weight_decay : see above
        Optimiser settings (default lr 1e-2, batches 32 / 128, cap 1000 epochs; reference
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
    forgotten_ : object or None
        The records of all requests so far with their goals (continual mode).
    """

    name = "l2ul"
    needs = frozenset({"forget"})
    _supports_relabel = True
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
        lam: float = 0.01,
        eps: float = 2.0,
        pgd_step: float = 0.5,
        pgd_steps: int = 10,
        n_adv: int = 10,
        input_range: tuple[float, float] | None = None,
        target_sampling: str = "uniform",
        lr: float = 1e-2,
        max_epochs: int = 1000,
        batch_size: int = 32,
        adv_batch_size: int = 128,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        bn_mode: str = "train",
        keep_forgotten: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model,
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
        self.lam = lam
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
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if self.adversarial:
            if not (self.eps > 0 and self.pgd_step > 0):
                raise ValueError(f"eps and pgd_step must be > 0, got {self.eps}, {self.pgd_step}")
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

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        meta["input_range"] = list(self.input_range_)
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(meta, arrays)
        lo, hi = meta["input_range"]
        self.input_range_ = (float(lo), float(hi))

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
                eps=self.eps,
                step=self.pgd_step,
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
                adv_term = nn.functional.cross_entropy(logits[b_f:], ta)
                loss = (b_f * forget_term + b_a * adv_term) / (b_f + b_a)
            else:
                set_train_mode(module, self.bn_mode, b_f)
                loss = _forget_term(module(batch.X), batch, self.forget_loss)
            if omega is not None:
                penalty = sum((omega[n] * (named[n] - anchor[n]) ** 2).sum() for n in omega)
                loss = loss + self.lam * 0.5 * penalty
            return loss

        diagnostics.update(self._run(change, steps_per_epoch, loss_of_step, self._optimizer()))
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
    #: test points on random deletion where 3e-3 kept within 3).
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
        diagnostics = self._run_deletion(
            change, loss_of_step, budget=self.budget, records_per_step=per_step
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
    ) -> None:
        super().__init__(
            model,
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
    ) -> None:
        super().__init__(
            model,
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

    Continues training the current model on the edited training set ``D~`` for ``epochs``
    epochs of seeded, shuffled mini-batch SGD, relying on catastrophic forgetting of the
    removed records (Unlearn-Sparse / SalUn use about 10 epochs). It never reads the forget
    records to update the model (``needs = {"retain"}``); their accuracy after the update is
    measured and reported in ``diagnostics["forget_accuracy"]``. The stopping criterion is
    the epoch count. Any request works (removals, relabels, feature edits), since it simply
    trains on ``D~``.

    Parameters
    ----------
    model : TorchModel
        A trained classifier (``attach``) or a template (``fit``).
    epochs : int
        Passes over the retained records.
    lr, batch_size, momentum, weight_decay, bn_mode, seed
        SGD settings (defaults lr 0.01, batch 128, momentum 0.9, weight decay 5e-4).
    """

    name = "finetune"
    needs = frozenset({"retain"})

    def __init__(
        self,
        model: Model,
        *,
        epochs: int = 10,
        lr: float = 1e-2,
        batch_size: int = 128,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        bn_mode: str = "train",
        seed: int = 0,
    ) -> None:
        super().__init__(
            model,
            lr=lr,
            max_epochs=epochs,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.epochs = epochs

    def _check_params(self) -> None:
        self.max_epochs = self.epochs
        super()._check_params()

    def _forget(self, change: Change) -> Outcome:
        module = self._module
        _, generator = _seed_generators(self.seed, self._request_index())
        retain = change.result
        X, y = self._inputs(retain), self._labels(retain.y)
        optimizer = self._optimizer()
        steps = epochs = 0
        diverged = False
        while epochs < self.epochs and not diverged:
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
        return Outcome(diagnostics=diagnostics)
