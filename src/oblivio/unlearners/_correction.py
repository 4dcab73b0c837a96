"""The correction loop shared by the forget-driven neural methods.

*Correction* (Cha et al., *Learning to Unlearn*, AAAI 2024; ``reference/instance-unlearning.md``
§1, §5): make the model stop predicting each forget record's original label (or, for a
relabel request, predict its new label). :class:`_ForgetDriven` runs SGD on a method's loss
until every record is at its goal, checked after every step (or epoch), or until
``max_epochs``; it also keeps the goals of earlier requests (continual mode) and reports the
stopping reason. Used by :mod:`oblivio.unlearners.l2ul` and by the correction modes of
``gradient-ascent`` and ``random-labels`` (:mod:`oblivio.unlearners.instance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from oblivio.data import Change, RequestError
from oblivio.models.base import Model
from oblivio.unlearners._loop import _NeuralUnlearner
from oblivio.unlearners._neural import (
    as_inputs,
    complement_loss,
    label_margin,
    predict_labels,
    runner_up_loss,
)

__all__: list[str] = []

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


def _forget_term(
    logits: torch.Tensor, goals: _Goals, kind: str, *, stop_margin: float | None = None
) -> torch.Tensor:
    """Batch mean of the per-record forget loss (reference §2).

    Records to misclassify (``sign = -1``) contribute ``-log(1 - p_y)`` (``kind =
    "complement"``), ``-CE = log p_y`` (``kind = "neg-ce"``, the paper's) or the
    cross-entropy towards their runner-up class (``kind = "runner-up"``); records to
    relabel (``sign = +1``) contribute ``+CE`` towards their new label.

    ``stop_margin`` (None: never stop): a record that is past its goal by at least this
    logit margin contributes 0 (the mean is still over the whole batch), so no record is
    pushed further than just across its boundary. The margin is ``max_{j != y} z_j - z_y``
    for records to misclassify, ``z_y - max_{j != y} z_j`` for records to relabel.
    """
    ce = nn.functional.cross_entropy(logits, goals.label, reduction="none")
    if kind == "neg-ce":
        away = -ce
    elif kind == "runner-up":
        away = runner_up_loss(logits, goals.label)
    else:
        away = complement_loss(logits, goals.label)
    per_record = torch.where(goals.sign < 0, away, ce)
    if stop_margin is not None:
        per_record = per_record.masked_fill(_past_goal(logits, goals) >= stop_margin, 0.0)
    return per_record.mean()


def _past_goal(logits: torch.Tensor, goals: _Goals) -> torch.Tensor:
    """Per record, how far (in logits, not differentiated) it is past its goal's boundary:
    ``max_{j != y} z_j - z_y`` for records to misclassify, ``z_y - max_{j != y} z_j`` for
    records to relabel to ``y`` (negative: short of it)."""
    margin = label_margin(logits.detach(), goals.label)
    return torch.where(goals.sign < 0, -margin, margin)


def _check_forget_loss(value: Any, allowed: tuple[str, ...] = _FORGET_LOSSES) -> None:
    if value not in allowed:
        raise ValueError(f"forget_loss must be one of {allowed}, got {value!r}")


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
